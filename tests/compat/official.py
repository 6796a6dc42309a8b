"""Fly's published OpenAPI document as a checker: does an answer match what Fly says
the operation answers?

``OfficialSpec.check(method, path, status, body)`` finds the operation by its path
template, and validates a success body against the operation's schema for that status
and an error body against ``ErrorResponse``. Where Fly's own servers answer outside
their document and clients rely on it, the document is amended here, each with why.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

SPEC_PATH = Path(__file__).parent / "spec/fly-machines-openapi.json"


def _amend(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    schemas = doc["components"]["schemas"]
    # The document's own description: "the API continues to use booleans for 'off' and
    # 'stop' in responses".
    autostop = schemas["fly.MachineService"]["properties"]["autostop"]
    schemas["fly.MachineService"]["properties"]["autostop"] = {
        "anyOf": [{"type": "boolean"}, {"type": "string", "enum": autostop["enum"]}]
    }
    # Go pointers: Fly answers null for a volume nobody has attached.
    for name in ("attached_machine_id", "attached_alloc_id"):
        schemas["Volume"]["properties"][name] = {"type": ["string", "null"]}
    return doc


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    spec: dict[str, Any]


class OfficialSpec:
    def __init__(self, doc: dict[str, Any] | None = None) -> None:
        self.doc = _amend(doc or json.loads(SPEC_PATH.read_text()))
        self._routes: list[tuple[re.Pattern[str], str]] = sorted(
            (
                (re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", t) + "$"), t)
                for t in self.doc["paths"]
            ),
            key=lambda route: route[1].count("{"),
        )

    def operation(self, method: str, path: str) -> Operation:
        # flyctl and several SDKs update machines with PUT, an alias Fly still serves.
        if method.upper() == "PUT" and re.fullmatch(r"/v1/apps/[^/]+/machines/[^/]+", path):
            method = "POST"
        for pattern, template in self._routes:
            if pattern.match(path) and method.lower() in self.doc["paths"][template]:
                return Operation(
                    method.upper(), template, self.doc["paths"][template][method.lower()]
                )
        raise AssertionError(f"{method} {path} is not an operation of Fly's Machines API")

    def check(self, method: str, path: str, status: int, body: Any) -> None:
        op = self.operation(method, path)
        answer = op.spec["responses"].get(str(status))
        if status >= 400:
            schema = {"$ref": "#/components/schemas/ErrorResponse"}
            assert isinstance(body, dict) and isinstance(body.get("error"), str), (
                f"{op.method} {op.template} {status}: an error body needs an 'error' "
                f"string, got {body!r}"
            )
        elif answer is None:
            raise AssertionError(
                f"{op.method} {op.template} answered {status}, which Fly's document does "
                f"not list (it lists {', '.join(op.spec['responses'])})"
            )
        else:
            content = answer.get("content") or {}
            schema = (content.get("application/json") or {}).get("schema")
            if schema is None:
                return  # Fly documents no body here; clients read none.
        self.validate(schema, body, f"{op.method} {op.template} {status}")

    def validate(self, schema: dict[str, Any], value: Any, where: str) -> None:
        root = {**schema, "components": self.doc["components"]}
        errors = sorted(
            jsonschema.Draft7Validator(root).iter_errors(value), key=lambda e: list(e.path)
        )
        assert not errors, f"{where}: " + "; ".join(
            f"{'/'.join(map(str, e.path)) or 'body'}: {e.message}" for e in errors[:5]
        )

    def schema(self, name: str) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{name}"}
