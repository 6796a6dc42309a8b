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
from dataclasses import dataclass
from functools import lru_cache

EARTH_RADIUS_KM = 6371.0088


@dataclass(frozen=True, slots=True)
class Region:
    code: str
    city: str
    location: tuple[float, float] | None
    """(latitude, longitude) in degrees; None for a region with no place."""


REGIONS: dict[str, Region] = {
    r.code: r
    for r in (
        Region("ams", "Amsterdam, Netherlands", (52.37, 4.90)),
        Region("arn", "Stockholm, Sweden", (59.33, 18.07)),
        Region("atl", "Atlanta, Georgia (US)", (33.75, -84.39)),
        Region("bog", "Bogotá, Colombia", (4.71, -74.07)),
        Region("bom", "Mumbai, India", (19.08, 72.88)),
        Region("bos", "Boston, Massachusetts (US)", (42.36, -71.06)),
        Region("cdg", "Paris, France", (48.86, 2.35)),
        Region("den", "Denver, Colorado (US)", (39.74, -104.99)),
        Region("dfw", "Dallas, Texas (US)", (32.78, -96.80)),
        Region("ewr", "Secaucus, NJ (US)", (40.79, -74.06)),
        Region("eze", "Ezeiza, Argentina", (-34.82, -58.53)),
        Region("fra", "Frankfurt, Germany", (50.11, 8.68)),
        Region("gdl", "Guadalajara, Mexico", (20.67, -103.35)),
        Region("gig", "Rio de Janeiro, Brazil", (-22.91, -43.17)),
        Region("gru", "São Paulo, Brazil", (-23.55, -46.63)),
        Region("hkg", "Hong Kong, Hong Kong", (22.32, 114.17)),
        Region("iad", "Ashburn, Virginia (US)", (39.04, -77.49)),
        Region("jnb", "Johannesburg, South Africa", (-26.20, 28.05)),
        Region("lax", "Los Angeles, California (US)", (34.05, -118.24)),
        Region("lhr", "London, United Kingdom", (51.51, -0.13)),
        Region("mad", "Madrid, Spain", (40.42, -3.70)),
        Region("mia", "Miami, Florida (US)", (25.76, -80.19)),
        Region("nrt", "Tokyo, Japan", (35.68, 139.69)),
        Region("ord", "Chicago, Illinois (US)", (41.88, -87.63)),
        Region("otp", "Bucharest, Romania", (44.43, 26.10)),
        Region("phx", "Phoenix, Arizona (US)", (33.45, -112.07)),
        Region("qro", "Querétaro, Mexico", (20.59, -100.39)),
        Region("scl", "Santiago, Chile", (-33.45, -70.67)),
        Region("sea", "Seattle, Washington (US)", (47.61, -122.33)),
        Region("sin", "Singapore, Singapore", (1.35, 103.82)),
        Region("sjc", "San Jose, California (US)", (37.34, -121.89)),
        Region("syd", "Sydney, Australia", (-33.87, 151.21)),
        Region("waw", "Warsaw, Poland", (52.23, 21.01)),
        Region("yul", "Montreal, Canada", (45.50, -73.57)),
        Region("yyz", "Toronto, Canada", (43.65, -79.38)),
        Region("local", "this host (roost's single-host default)", None),
    )
}


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
