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


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Keep each phase's report on the item, so fixtures can tell a test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
