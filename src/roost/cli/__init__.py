"""The ``roost`` command line: a flyctl-like client of the Machines API, plus ``roost server``."""
