"""Shared test configuration.

Tests marked ``root`` need root and the system packages (runc, skopeo, umoci,
docker-registry); they are skipped elsewhere so unit tests still run anywhere.
Reusable fixtures live in ``tests/fixtures/`` and are registered here.
"""

from __future__ import annotations

import os
import shutil

import pytest

pytest_plugins = [
    "tests.fixtures.registry",
    "tests.fixtures.rootfs",
    "tests.fixtures.platform",
    "tests.fixtures.fleet",
]

HAVE_ROOT_TOOLS = os.geteuid() == 0 and all(
    shutil.which(tool) for tool in ("runc", "skopeo", "umoci", "docker-registry", "ip")
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAVE_ROOT_TOOLS:
        return
    skip = pytest.mark.skip(reason="needs root, runc, skopeo, umoci, docker-registry and ip")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
