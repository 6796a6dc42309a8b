"""Where regions are, so the proxy can prefer the nearest machines.

Fly.io's region codes with their cities' coordinates, and great-circle distances
between them. ``local`` (roost's single-host default) and names not in the table have
no place: each is nearest only to itself, and from anywhere else they come after every
region that has one, by name. Orders are total and deterministic.

Fly measures round trips between servers instead; distance is the stand-in until
hosts measure theirs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache

from roost.spec.regions import REGIONS

EARTH_RADIUS_KM = 6371.0088


def distance_km(a: str, b: str) -> float:
    """Great-circle distance; 0 within a region, infinite when either has no place."""
    if a == b:
        return 0.0
    here, there = REGIONS.get(a), REGIONS.get(b)
    if here is None or there is None or here.location is None or there.location is None:
        return math.inf
    (lat1, lon1), (lat2, lon2) = here.location, there.location
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_dphi, half_dlambda = math.radians(lat2 - lat1) / 2, math.radians(lon2 - lon1) / 2
    h = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


@lru_cache(maxsize=4096)
def proximity(origin: str, region: str) -> tuple[int, float, str]:
    """Sort key of ``region`` seen from ``origin``: ``origin`` itself, then regions with
    a place by distance, then the others; ties by name.

    Cached: the balancer asks for it once per candidate machine on every request.
    """
    place = REGIONS.get(region)
    group = 0 if region == origin else 1 if place is not None and place.location else 2
    return group, distance_km(origin, region), region


def nearest_first(origin: str, regions: Iterable[str]) -> list[str]:
    """``regions`` (deduplicated) ordered by :func:`proximity` from ``origin``."""
    return sorted(set(regions), key=lambda region: proximity(origin, region))
