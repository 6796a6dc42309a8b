from __future__ import annotations

from collections.abc import Iterator

import pytest

from roost.runtime import set_child_subreaper


@pytest.fixture(scope="session", autouse=True)
def _subreaper() -> Iterator[None]:
    """Like the agent: orphans of the machines we start come to us, not to PID 1."""
    set_child_subreaper(True)
    yield
    set_child_subreaper(False)
