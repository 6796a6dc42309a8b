"""Restart policy decisions after a machine's process exits on its own."""

from __future__ import annotations

from roost.agent.policy import DEFAULT_MAX_RETRIES, STABLE_AFTER, after_exit, backoff
from roost.spec.config import MachineConfig


def config(**fields: object) -> MachineConfig:
    return MachineConfig.model_validate({"image": "a/b", **fields})


def test_default_is_on_failure_with_ten_retries() -> None:
    c = config()
    assert after_exit(c, 0, 0, 1.0).action == "stop"
    assert after_exit(c, 1, 0, 1.0).action == "restart"
    assert after_exit(c, 1, DEFAULT_MAX_RETRIES, 1.0).action == "stop"


def test_always_and_no() -> None:
    assert after_exit(config(restart={"policy": "always"}), 0, 50, 1.0).action == "restart"
    assert after_exit(config(restart={"policy": "no"}), 1, 0, 1.0).action == "stop"


def test_max_retries_counts_restarts_in_a_row() -> None:
    c = config(restart={"policy": "on-failure", "max_retries": 2})
    first = after_exit(c, 3, 0, 1.0)
    second = after_exit(c, 3, first.restart_count, 1.0)
    third = after_exit(c, 3, second.restart_count, 1.0)
    assert [first.action, second.action, third.action] == ["restart", "restart", "stop"]
    assert (first.delay, second.delay) == (0.0, backoff(1))


def test_a_stable_run_resets_the_count() -> None:
    c = config(restart={"policy": "on-failure", "max_retries": 1})
    assert after_exit(c, 1, 1, 1.0).action == "stop"
    assert after_exit(c, 1, 1, STABLE_AFTER).action == "restart"


def test_auto_destroy_when_not_restarting() -> None:
    c = config(auto_destroy=True, restart={"policy": "no"})
    assert after_exit(c, 0, 0, 1.0).action == "destroy"
    assert (
        after_exit(config(auto_destroy=True, restart={"policy": "always"}), 0, 0, 1.0).action
        == "restart"
    )


def test_backoff_grows_and_caps() -> None:
    delays = [backoff(n) for n in range(12)]
    assert delays[0] == 0.0 and delays == sorted(delays) and delays[-1] == 30.0
