"""roost: a self-hosted Machines platform speaking the Fly.io Machines API v1."""

__version__ = "0.1.0"
