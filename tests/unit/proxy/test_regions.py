"""Regions: distances between Fly's regions, nearest-first orders, and the balancer
preferring the nearest region."""

from __future__ import annotations

import math
import random

import pytest

from roost.proxy.balancer import pick
from roost.proxy.catalog import Machine, Port, Service
from roost.proxy.regions import REGIONS, distance_km, nearest_first

# fmt: off
FLY_REGIONS = (
    "ams", "arn", "atl", "bog", "bom", "bos", "cdg", "den", "dfw", "ewr", "eze", "fra",
    "gdl", "gig", "gru", "hkg", "iad", "jnb", "lax", "lhr", "mad", "mia", "nrt", "ord",
    "otp", "phx", "qro", "scl", "sea", "sin", "sjc", "syd", "waw", "yul", "yyz",
)
# fmt: on


def test_every_fly_region_has_a_place() -> None:
    assert set(REGIONS) == {*FLY_REGIONS, "local"}
    for code in FLY_REGIONS:
        location = REGIONS[code].location
        assert location is not None
        assert -90 <= location[0] <= 90 and -180 <= location[1] <= 180
    assert REGIONS["local"].location is None


@pytest.mark.parametrize(
    ("a", "b", "km"),
    [("ams", "fra", 365), ("lhr", "cdg", 344), ("iad", "ewr", 350), ("sin", "syd", 6300)],
)
def test_great_circle_distances(a: str, b: str, km: float) -> None:
    assert distance_km(a, b) == pytest.approx(km, rel=0.05)
    assert distance_km(a, b) == distance_km(b, a)


def test_distance_within_a_region_and_without_a_place() -> None:
    assert distance_km("ams", "ams") == 0.0
    assert distance_km("mars", "mars") == 0.0
    assert distance_km("ams", "mars") == math.inf
    assert distance_km("local", "ams") == math.inf


def test_nearest_first_from_a_known_region() -> None:
    regions = ["syd", "iad", "zzz", "fra", "local", "ams", "aaa", "lhr", "fra"]
    assert nearest_first("ams", regions) == [
        "ams",
        "lhr",
        "fra",
        "iad",
        "syd",
        "aaa",
        "local",
        "zzz",
    ]


def test_nearest_first_from_a_region_without_a_place() -> None:
    # Nothing is near "here" but itself; regions with a place still come first.
    assert nearest_first("here", ["zzz", "fra", "here", "ams", "aaa"]) == [
        "here",
        "ams",
        "fra",
        "aaa",
        "zzz",
    ]
    assert nearest_first("local", ["there", "local", "ord"]) == ["local", "ord", "there"]


# -- the balancer ----------------------------------------------------------------------


def machine(
    mid: str,
    region: str,
    *,
    state: str = "started",
    soft: int = 2,
    hard: int | None = None,
    reachable: bool = True,
) -> Machine:
    service = Service(
        internal_port=8080,
        protocol="tcp",
        ports=(Port(80, ("http",)),),
        soft_limit=soft,
        hard_limit=hard,
    )
    return Machine(
        id=mid,
        app="web",
        region=region,
        state=state,
        address="10.0.0.1",
        cordoned=False,
        services=(service,),
        healthy=True,
        http=service,
        reachable=reachable,
    )


def http(m: Machine) -> Service | None:
    return m.http_service()


def chosen(machines: list[Machine], load: dict[str, int], region: str = "ams") -> str | None:
    verdict = pick(machines, http, load, region=region, rng=random.Random(7))
    return verdict.choice.machine.id if verdict.choice else None


def test_nearer_regions_first_then_least_loaded() -> None:
    machines = [machine("syd", "syd"), machine("fra", "fra"), machine("iad", "iad")]
    assert chosen(machines, {}) == "fra"
    # Region comes before load, within the same band.
    assert chosen(machines, {"fra": 1}) == "fra"
    # A nearer machine over its soft limit loses to a farther one below it.
    assert chosen(machines, {"fra": 2}) == "iad"
    assert chosen(machines, {"fra": 2, "iad": 2}) == "syd"
    # Everything over soft: the nearest again.
    assert chosen(machines, {"fra": 5, "iad": 2, "syd": 2}) == "fra"
    # Our own region beats every other; regions without a place come last.
    machines += [machine("mars", "mars"), machine("ams", "ams")]
    assert chosen(machines, {}) == "ams"
    assert chosen([machine("mars", "mars"), machine("syd", "syd")], {}) == "syd"


def test_same_region_spreads_by_load() -> None:
    machines = [machine("a", "fra"), machine("b", "fra")]
    assert chosen(machines, {"a": 1}) == "b"
    picks = {
        pick(machines, http, {}, region="ams", rng=random.Random(seed)).choice.machine.id  # type: ignore[union-attr]
        for seed in range(20)
    }
    assert picks == {"a", "b"}


def test_startable_machines_nearest_first() -> None:
    machines = [
        machine("syd", "syd", state="stopped"),
        machine("mars", "mars", state="suspended"),
        machine("lhr", "lhr", state="stopped"),
        machine("ams2", "ams", state="stopped"),
        machine("ams1", "ams", state="stopped"),
        machine("gone", "ams", state="stopped", reachable=False),
    ]
    verdict = pick(machines, http, {}, region="ams")
    assert verdict.choice is None
    assert [m.id for m in verdict.startable] == ["ams1", "ams2", "lhr", "syd", "mars"]


def test_unreachable_machines_are_never_chosen() -> None:
    machines = [machine("near", "ams", reachable=False), machine("far", "syd")]
    assert chosen(machines, {}) == "far"
    verdict = pick([machines[0]], http, {}, region="ams")
    assert verdict.choice is None and not verdict.startable and not verdict.saturated
