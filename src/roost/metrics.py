"""Prometheus text exposition without a client library: counters, gauges, histograms,
and collectors that compute samples when scraped (machines by state, cgroup usage)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

Labels = tuple[str, ...]
Sample = tuple[dict[str, str], float]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass
class Metric:
    name: str
    help: str
    label_names: tuple[str, ...] = ()

    def render(self) -> list[str]:
        raise NotImplementedError


@dataclass
class Counter(Metric):
    values: dict[Labels, float] = field(default_factory=dict)

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for labels, value in sorted(self.values.items()):
            lines.append(f"{self.name}{_labels(self.label_names, labels)} {_number(value)}")
        return lines


@dataclass
class Histogram(Metric):
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    series: dict[Labels, list[float]] = field(default_factory=dict)
    """Per label set: bucket counts, then the sum, then the count."""

    def observe(self, value: float, *labels: str) -> None:
        series = self.series.setdefault(labels, [0.0] * (len(self.buckets) + 2))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                series[i] += 1
        series[-2] += value
        series[-1] += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for labels, series in sorted(self.series.items()):
            for bound, count in zip(self.buckets, series, strict=False):
                le = f'le="{bound:g}"'
                lines.append(
                    f"{self.name}_bucket{_labels(self.label_names, labels, le)} {_number(count)}"
                )
            inf = _labels(self.label_names, labels, 'le="+Inf"')
            lines.append(f"{self.name}_bucket{inf} {_number(series[-1])}")
            plain = _labels(self.label_names, labels)
            lines.append(f"{self.name}_sum{plain} {series[-2]:.6f}")
            lines.append(f"{self.name}_count{plain} {_number(series[-1])}")
        return lines


@dataclass
class Collected(Metric):
    """A gauge whose samples are computed at scrape time."""

    collect: Callable[[], Awaitable[Iterable[Sample]]] | None = None

    async def render_async(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge"]
        assert self.collect is not None
        for labels, value in await self.collect():
            pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(
                f"{self.name}{{{pairs}}} {_number(value)}"
                if pairs
                else f"{self.name} {_number(value)}"
            )
        return lines


M = TypeVar("M", bound=Metric)


@dataclass
class Registry:
    metrics: list[Metric] = field(default_factory=list)

    def counter(self, name: str, help_text: str, *labels: str) -> Counter:
        return self._add(Counter(name, help_text, labels))

    def histogram(self, name: str, help_text: str, *labels: str) -> Histogram:
        return self._add(Histogram(name, help_text, labels))

    def collected(
        self, name: str, help_text: str, collect: Callable[[], Awaitable[Iterable[Sample]]]
    ) -> Collected:
        return self._add(Collected(name, help_text, (), collect))

    def _add(self, metric: M) -> M:
        self.metrics.append(metric)
        return metric

    async def render(self) -> str:
        lines: list[str] = []
        for metric in self.metrics:
            if isinstance(metric, Collected):
                lines += await metric.render_async()
            else:
                lines += metric.render()
        return "\n".join(lines) + "\n"
