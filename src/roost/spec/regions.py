"""Fly.io's regions: their codes, where they are, and the names that stand for several.

Clients send Fly's codes (``iad``, ``lhr``) and, in placement expressions, Fly's
groups (``"lhr,eu"``, ``"us,eu"``, ``any``). A roost host's region is any name its
operator picks (``local`` by default, or a Fly code), and a host may also answer to
aliases. :func:`region_names` says which tokens of an expression a set of hosts can
serve; ``api.placement`` applies the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Geo = Literal["na", "sa", "eu", "apac", "af", ""]


@dataclass(frozen=True, slots=True)
class Region:
    code: str
    city: str
    location: tuple[float, float] | None
    """(latitude, longitude) in degrees; None for a region with no place."""
    geo: Geo = ""
    us: bool = False


REGIONS: dict[str, Region] = {
    r.code: r
    for r in (
        Region("ams", "Amsterdam, Netherlands", (52.37, 4.90), "eu"),
        Region("arn", "Stockholm, Sweden", (59.33, 18.07), "eu"),
        Region("atl", "Atlanta, Georgia (US)", (33.75, -84.39), "na", us=True),
        Region("bog", "Bogotá, Colombia", (4.71, -74.07), "sa"),
        Region("bom", "Mumbai, India", (19.08, 72.88), "apac"),
        Region("bos", "Boston, Massachusetts (US)", (42.36, -71.06), "na", us=True),
        Region("cdg", "Paris, France", (48.86, 2.35), "eu"),
        Region("den", "Denver, Colorado (US)", (39.74, -104.99), "na", us=True),
        Region("dfw", "Dallas, Texas (US)", (32.78, -96.80), "na", us=True),
        Region("ewr", "Secaucus, NJ (US)", (40.79, -74.06), "na", us=True),
        Region("eze", "Ezeiza, Argentina", (-34.82, -58.53), "sa"),
        Region("fra", "Frankfurt, Germany", (50.11, 8.68), "eu"),
        Region("gdl", "Guadalajara, Mexico", (20.67, -103.35), "na"),
        Region("gig", "Rio de Janeiro, Brazil", (-22.91, -43.17), "sa"),
        Region("gru", "São Paulo, Brazil", (-23.55, -46.63), "sa"),
        Region("hkg", "Hong Kong, Hong Kong", (22.32, 114.17), "apac"),
        Region("iad", "Ashburn, Virginia (US)", (39.04, -77.49), "na", us=True),
        Region("jnb", "Johannesburg, South Africa", (-26.20, 28.05), "af"),
        Region("lax", "Los Angeles, California (US)", (34.05, -118.24), "na", us=True),
        Region("lhr", "London, United Kingdom", (51.51, -0.13), "eu"),
        Region("mad", "Madrid, Spain", (40.42, -3.70), "eu"),
        Region("mia", "Miami, Florida (US)", (25.76, -80.19), "na", us=True),
        Region("nrt", "Tokyo, Japan", (35.68, 139.69), "apac"),
        Region("ord", "Chicago, Illinois (US)", (41.88, -87.63), "na", us=True),
        Region("otp", "Bucharest, Romania", (44.43, 26.10), "eu"),
        Region("phx", "Phoenix, Arizona (US)", (33.45, -112.07), "na", us=True),
        Region("qro", "Querétaro, Mexico", (20.59, -100.39), "na"),
        Region("scl", "Santiago, Chile", (-33.45, -70.67), "sa"),
        Region("sea", "Seattle, Washington (US)", (47.61, -122.33), "na", us=True),
        Region("sin", "Singapore, Singapore", (1.35, 103.82), "apac"),
        Region("sjc", "San Jose, California (US)", (37.34, -121.89), "na", us=True),
        Region("syd", "Sydney, Australia", (-33.87, 151.21), "apac"),
        Region("waw", "Warsaw, Poland", (52.23, 21.01), "eu"),
        Region("yul", "Montreal, Canada", (45.50, -73.57), "na"),
        Region("yyz", "Toronto, Canada", (43.65, -79.38), "na"),
        Region("local", "this host (roost's single-host default)", None),
    )
}

ANY = "any"
GROUPS: dict[str, frozenset[str]] = {
    "us": frozenset(r.code for r in REGIONS.values() if r.us),
    "usa": frozenset(r.code for r in REGIONS.values() if r.us),
    **{
        geo: frozenset(r.code for r in REGIONS.values() if r.geo == geo)
        for geo in ("na", "sa", "eu", "apac")
    },
}
"""Fly's names for several regions, as placement expressions and fly-replay take them."""


def is_fly_region(code: str) -> bool:
    """A code Fly accepts for one region (``local`` is roost's own, not Fly's)."""
    region = REGIONS.get(code)
    return region is not None and region.location is not None


def region_names(token: str) -> frozenset[str] | None:
    """The region codes an expression token stands for: itself for one region, the
    members of a group, or None for ``any``."""
    if token == ANY:
        return None
    return GROUPS.get(token, frozenset({token}))


def is_fly_name(token: str) -> bool:
    """Whether Fly itself would accept ``token`` in a placement expression."""
    return token == ANY or token in GROUPS or is_fly_region(token)
