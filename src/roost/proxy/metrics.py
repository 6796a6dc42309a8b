"""Proxy metrics in the Prometheus text format, kept in plain dicts (no client library).

Counters and gauges are labelled by app and machine; wake-up latency is a histogram
per app. Backhaul counters say what went through other hosts' proxies: sent out by
this one (as the edge), taken in (as the machine's host), and failed deliveries; those
this host refused are counted by reason, and the times another host became suspect (a
connect to its proxy failed; see ``suspects``) by host.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

WAKE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

Labels = tuple[str, str]
"""(app, machine id)"""


@dataclass
class Histogram:
    buckets: tuple[float, ...] = WAKE_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(WAKE_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value
        self.count += 1


@dataclass
class ProxyMetrics:
    requests: defaultdict[Labels, int] = field(default_factory=lambda: defaultdict(int))
    errors: defaultdict[Labels, int] = field(default_factory=lambda: defaultdict(int))
    in_flight: defaultdict[Labels, int] = field(default_factory=lambda: defaultdict(int))
    wakeups: defaultdict[Labels, int] = field(default_factory=lambda: defaultdict(int))
    autostops: defaultdict[Labels, int] = field(default_factory=lambda: defaultdict(int))
    rejected: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    backhaul_out: defaultdict[Labels, int] = field(default_factory=lambda: defaultdict(int))
    backhaul_in: defaultdict[Labels, int] = field(default_factory=lambda: defaultdict(int))
    backhaul_failures: defaultdict[Labels, int] = field(default_factory=lambda: defaultdict(int))
    backhaul_refused: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    backhaul_suspects: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    wake_latency: defaultdict[str, Histogram] = field(
        default_factory=lambda: defaultdict(Histogram)
    )

    def render(self) -> str:
        lines: list[str] = []
        per_machine = (
            ("requests_total", "counter", "Requests and connections routed.", self.requests),
            ("errors_total", "counter", "Requests that failed upstream.", self.errors),
            ("in_flight", "gauge", "Requests and connections in flight.", self.in_flight),
            ("wakeups_total", "counter", "Machines started by the proxy.", self.wakeups),
            ("autostops_total", "counter", "Machines stopped by autostop.", self.autostops),
            (
                "backhaul_out_total",
                "counter",
                "Requests and connections sent to another host's proxy.",
                self.backhaul_out,
            ),
            (
                "backhaul_in_total",
                "counter",
                "Requests and connections delivered here by another host's proxy.",
                self.backhaul_in,
            ),
            (
                "backhaul_failures_total",
                "counter",
                "Deliveries through another host's proxy that failed or were refused.",
                self.backhaul_failures,
            ),
        )
        for short, kind, help_text, values in per_machine:
            name = f"roost_proxy_{short}"
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            for (app, machine), value in sorted(values.items()):
                lines.append(f'{name}{{app="{app}",machine="{machine}"}} {value}')
        name = "roost_proxy_rejected_total"
        lines += [f"# HELP {name} Requests answered 503 with no machine.", f"# TYPE {name} counter"]
        lines += [f'{name}{{app="{app}"}} {value}' for app, value in sorted(self.rejected.items())]
        name = "roost_proxy_backhaul_refused_total"
        lines += [
            f"# HELP {name} Deliveries from other hosts' proxies refused here.",
            f"# TYPE {name} counter",
        ]
        lines += [
            f'{name}{{reason="{reason}"}} {value}'
            for reason, value in sorted(self.backhaul_refused.items())
        ]
        name = "roost_proxy_backhaul_suspect_total"
        lines += [
            f"# HELP {name} Times another host's proxy became suspect: a connect to it failed.",
            f"# TYPE {name} counter",
        ]
        lines += [
            f'{name}{{host="{host}"}} {value}'
            for host, value in sorted(self.backhaul_suspects.items())
        ]
        name = "roost_proxy_wake_seconds"
        lines += [f"# HELP {name} Start request to port accepting.", f"# TYPE {name} histogram"]
        for app, hist in sorted(self.wake_latency.items()):
            cumulative = 0
            for bound, count in zip(hist.buckets, hist.counts, strict=False):
                cumulative += count
                lines.append(f'{name}_bucket{{app="{app}",le="{bound:g}"}} {cumulative}')
            lines.append(f'{name}_bucket{{app="{app}",le="+Inf"}} {hist.count}')
            lines.append(f'{name}_sum{{app="{app}"}} {hist.total:.6f}')
            lines.append(f'{name}_count{{app="{app}"}} {hist.count}')
        return "\n".join(lines) + "\n"
