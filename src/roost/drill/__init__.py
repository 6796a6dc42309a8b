"""Drills: rehearsed failures, measured — because a resilience plan only works if it has
been tried."""
