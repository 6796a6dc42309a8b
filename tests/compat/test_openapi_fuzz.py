"""Schemathesis against roost's own ``/openapi.json``: whatever a client sends, roost
answers without a 5xx, with a status code the document lists for the operation, with
the content type it names and a body matching the document's schema.

Every operation gets requests the document allows (with made-up names, and with the
path naming a real app, machine and volume, so answers about existing things are
checked too) and requests it forbids. The run is bounded and derandomized: a fixed
number of examples per operation, the same requests on every run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.compat.conftest import ApiAlone

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 10


@pytest.fixture(scope="module")
def known(api_alone: ApiAlone) -> Iterator[dict[str, str]]:
    """A real app with a machine (never launched: no agent serves its host), a volume
    and a metadata key."""
    with api_alone.client() as client:
        assert client.post("/v1/apps", json={"name": "fuzzed", "org_slug": "personal"}).is_success
        machine = client.post(
            "/v1/apps/fuzzed/machines",
            json={"config": {"image": "registry.invalid/app:1"}, "skip_launch": True},
        ).json()
        client.post(f"/v1/apps/fuzzed/machines/{machine['id']}/metadata/role", json={"value": "a"})
        volume = client.post("/v1/apps/fuzzed/volumes", json={"name": "data", "size_gb": 1}).json()
    yield {
        "app_name": "fuzzed",
        "machine_id": machine["id"],
        "volume_id": volume["id"],
        "key": "role",
        "host_id": "compat-host",
    }


def test_every_answer_is_documented(api_alone: ApiAlone, known: dict[str, str]) -> None:
    schema = schemathesis.openapi.from_url(f"{api_alone.url}/openapi.json")
    headers = {"Authorization": f"Bearer {api_alone.token}"}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 40, "the document lists the whole API"
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        ours = {k: v for k, v in known.items() if k in names}
        # A wait for a state that never comes lasts its timeout: one second, not sixty.
        query = {"timeout": 1} if operation.path.endswith("/wait") else None
        strategies = [
            operation.as_strategy(GenerationMode.POSITIVE, query=query),
            operation.as_strategy(GenerationMode.NEGATIVE, query=query),
        ]
        if ours:
            strategies.append(
                operation.as_strategy(GenerationMode.POSITIVE, path_parameters=ours, query=query)
            )
        for strategy in strategies:

            @given(case=strategy)
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def call(case: schemathesis.Case) -> None:
                case.call_and_validate(base_url=api_alone.url, headers=headers, checks=CHECKS)

            try:
                call()
            except Unsatisfiable:
                pass  # nothing to break: say, a path of plain strings has no invalid value
            except (Exception, BaseExceptionGroup) as exc:  # every failure, not the first only
                failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
