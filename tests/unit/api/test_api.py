"""The Machines API contract: status codes, bodies, leases, wait, bad input."""

from __future__ import annotations

import asyncio

import pytest

from roost.api import settle
from roost.spec.config import SHARED_CPUS_PER_CORE
from roost.store.records import (
    Allocation,
    HostRecord,
    alive_key,
    host_key,
    hostalloc_key,
    machine_key,
)
from tests.unit.api.conftest import Api, add_host

IMAGE = "registry.example:5000/demo/app:v1"


async def make_app(api: Api, name: str = "web") -> str:
    r = await api.client.post("/v1/apps", json={"name": name, "org_slug": "personal"})
    assert r.status_code == 201, r.text
    return name


async def make_machine(api: Api, app: str = "web", **extra: object) -> dict:
    r = await api.client.post(
        f"/v1/apps/{app}/machines", json={"config": {"image": IMAGE}, **extra}
    )
    assert r.status_code == 200, r.text
    return r.json()


# -- auth -------------------------------------------------------------------------------------


async def test_every_api_call_needs_a_token(api: Api) -> None:
    for headers in (
        {"Authorization": ""},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic x"},
    ):
        r = await api.client.get("/v1/apps", headers=headers)
        assert r.status_code == 401
        assert r.json()["error"].startswith("Authenticate:")
    r = await api.client.get("/v1/apps", headers={"Authorization": f"FlyV1 other,{api.token}"})
    assert r.status_code == 200
    r = await api.client.post("/v1/apps", content=b"{not json", headers={"Authorization": ""})
    assert r.status_code == 401, "authentication comes before parsing"
    assert (await api.client.get("/healthz", headers={"Authorization": ""})).status_code == 200


async def test_responses_carry_a_request_id(api: Api) -> None:
    r = await api.client.get("/v1/apps")
    assert len(r.headers["fly-request-id"]) == 26


# -- apps -------------------------------------------------------------------------------------


async def test_app_lifecycle(api: Api) -> None:
    r = await api.client.post("/v1/apps", json={"app_name": "web", "org_slug": "personal"})
    assert r.status_code == 201
    assert set(r.json()) == {"id", "created_at"}
    r = await api.client.post("/v1/apps", json={"name": "web"})
    assert r.status_code == 422
    assert r.json()["status"] == "name_taken"
    assert (await api.client.get("/v1/apps/web")).json()["name"] == "web"
    listed = (await api.client.get("/v1/apps", params={"org_slug": "personal"})).json()
    assert listed["total_apps"] == 1 and listed["apps"][0]["name"] == "web"
    r = await api.client.delete("/v1/apps/web")
    assert r.status_code == 202
    r = await api.client.get("/v1/apps/web")
    assert r.status_code == 404 and r.json() == {"error": "app not found"}


async def test_app_name_rules(api: Api) -> None:
    for bad in ("UPPER", "-dash", "a_b", "x" * 64, ""):
        r = await api.client.post("/v1/apps", json={"name": bad})
        assert r.status_code == 400, bad
        assert "error" in r.json()


async def test_app_create_idempotency_key(api: Api) -> None:
    body = {"name": "web", "idempotency_key": "k1"}
    first = (await api.client.post("/v1/apps", json=body)).json()
    again = await api.client.post("/v1/apps", json=body)
    assert again.status_code == 201 and again.json()["id"] == first["id"]


async def test_deleting_an_app_with_running_machines_needs_force(api: Api) -> None:
    await make_app(api)
    m = await make_machine(api)
    await api.set_state("web", m["id"], "started")
    r = await api.client.delete("/v1/apps/web")
    assert r.status_code == 412 and "force" in r.json()["error"]
    assert (await api.client.delete("/v1/apps/web", params={"force": "true"})).status_code == 202
    record = await api.store.get(machine_key("web", m["id"]))
    assert record is not None and '"desired":"destroyed"' in record.value


# -- machines: create and read ----------------------------------------------------------------


async def test_create_machine_shape(api: Api) -> None:
    await make_app(api)
    m = await make_machine(api, name="first")
    assert m["state"] == "created"
    assert len(m["id"]) == 14 and int(m["id"], 16) >= 0
    assert m["version"] == m["instance_id"] and len(m["version"]) == 26
    assert m["name"] == "first" and m["region"] == "test"
    assert m["private_ip"].startswith("fdaa:0:9::")
    assert m["config"]["init"] == {}
    assert m["config"]["guest"] == {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256}
    assert m["cordoned"] is False and "image_ref" in m
    again = await api.client.post(
        "/v1/apps/web/machines", json={"config": {"image": IMAGE}, "name": "first"}
    )
    assert again.status_code == 409


async def test_unknown_config_keys_are_ignored_and_wire_forms_kept(api: Api) -> None:
    await make_app(api)
    config = {
        "image": IMAGE,
        "surprise": {"x": 1},
        "stop_config": {"signal": "SIGTERM", "timeout": 10_000_000_000},
        "checks": {"h": {"type": "http", "port": 80, "interval": "15s", "timeout": 2_000_000_000}},
        "services": [{"internal_port": 80, "autostop": "suspend", "autostart": True}],
        "restart": {"policy": "on-fail"},
    }
    r = await api.client.post("/v1/apps/web/machines", json={"config": config})
    assert r.status_code == 200, r.text
    got = r.json()["config"]
    assert "surprise" not in got
    assert got["stop_config"] == {"signal": "SIGTERM", "timeout": "10s"}
    assert got["checks"]["h"]["timeout"] == "2s"
    assert got["services"][0]["autostop"] == "suspend"
    assert got["restart"]["policy"] == "on-failure"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"config": {"image": IMAGE, "guest": {"memory_mb": 16}}}, "config.guest.memory_mb"),
        ({"config": {"image": IMAGE, "guest": {"cpus": "two"}}}, "config.guest.cpus"),
        ({"config": {"image": IMAGE, "env": {"A": 1}}}, "config.env.A"),
        ({"config": {"image": IMAGE, "stop_config": {"timeout": "soon"}}}, "config.stop_config"),
        ({"config": {}}, "config.image"),
        ({}, "config"),
        ({"config": {"image": "UPPER/Case:!!"}}, "invalid image reference"),
        ({"config": {"image": IMAGE, "size": "huge"}}, "unknown size"),
    ],
)
async def test_bad_machine_config_names_the_problem(api: Api, body: dict, field: str) -> None:
    await make_app(api)
    r = await api.client.post("/v1/apps/web/machines", json=body)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]
    listed = (await api.client.get("/v1/apps/web/machines")).json()
    assert listed == [], "nothing half-created"


async def test_malformed_json_is_a_400(api: Api) -> None:
    await make_app(api)
    r = await api.client.post(
        "/v1/apps/web/machines",
        content=b'{"config": ',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    r = await api.client.post("/v1/apps/web/machines/00000000000000/stop", json=[1, 2])
    assert r.status_code in (400, 404)


async def test_bodies_are_json_whatever_the_content_type(api: Api) -> None:
    await make_app(api)
    body = b'{"config": {"image": "%s"}}' % IMAGE.encode()
    for content_type in ("application/x-www-form-urlencoded", "text/plain", None):
        headers = {"content-type": content_type} if content_type else {}
        r = await api.client.post("/v1/apps/web/machines", content=body, headers=headers)
        assert r.status_code == 200, (content_type, r.text)


@pytest.mark.parametrize("name", ["job_runner_1", "Sandbox.Alpha", "a" * 255, "名前"])
async def test_machine_names_fly_accepts(api: Api, name: str) -> None:
    await make_app(api)
    machine = await make_machine(api, name=name)
    assert machine["name"] == name


@pytest.mark.parametrize("name", ["a/b", "nul\x00", "a" * 256])
async def test_machine_names_that_would_break_the_store(api: Api, name: str) -> None:
    await make_app(api)
    r = await api.client.post(
        "/v1/apps/web/machines", json={"config": {"image": IMAGE}, "name": name}
    )
    assert r.status_code == 400 and "invalid machine name" in r.json()["error"]


async def test_unknown_app_and_machine(api: Api) -> None:
    r = await api.client.post("/v1/apps/nope/machines", json={"config": {"image": IMAGE}})
    assert r.status_code == 404 and r.json() == {"error": "app not found"}
    await make_app(api)
    for mid in ("0123456789abcd", "../../etc", "x"):
        r = await api.client.get(f"/v1/apps/web/machines/{mid}")
        assert r.status_code == 404, mid
    r = await api.client.get("/v1/nothing-here")
    assert r.status_code == 404 and "error" in r.json()


@pytest.mark.parametrize(
    ("size", "guest"),
    [
        ("shared-cpu-2x", {"cpu_kind": "shared", "cpus": 2, "memory_mb": 512}),
        ("performance-1x", {"cpu_kind": "performance", "cpus": 1, "memory_mb": 2048}),
    ],
)
async def test_size_preset_sets_guest(api: Api, size: str, guest: dict[str, object]) -> None:
    await make_app(api)
    r = await api.client.post(
        "/v1/apps/web/machines", json={"config": {"image": IMAGE, "size": size}}
    )
    assert r.json()["config"]["guest"] == guest


async def test_list_filters(api: Api) -> None:
    await make_app(api)
    a = await make_machine(api, config={"image": IMAGE, "metadata": {"role": "db"}})
    b = await make_machine(api)
    await api.set_state("web", b["id"], "started")

    async def ids(**params: str) -> set[str]:
        r = await api.client.get("/v1/apps/web/machines", params=params)
        assert r.status_code == 200, r.text
        return {m["id"] for m in r.json()}

    assert await ids() == {a["id"], b["id"]}
    assert await ids(state="started") == {b["id"]}
    assert await ids(state="created,started") == {a["id"], b["id"]}
    assert await ids(**{"metadata.role": "db"}) == {a["id"]}
    assert await ids(region="elsewhere") == set()
    summary = (await api.client.get("/v1/apps/web/machines", params={"summary": "true"})).json()
    assert all("config" not in m for m in summary)
    page = await api.client.get("/v1/apps/web/machines", params={"limit": 1})
    assert len(page.json()) == 1 and page.headers["fly-next-cursor"]
    rest = await api.client.get(
        "/v1/apps/web/machines", params={"limit": 1, "cursor": page.headers["fly-next-cursor"]}
    )
    assert {page.json()[0]["id"], rest.json()[0]["id"]} == {a["id"], b["id"]}


# -- placement and capacity -------------------------------------------------------------------


async def test_a_performance_cpu_reserves_a_core_and_shared_cpus_share_one(api: Api) -> None:
    """The host has 16 slots (2 cores at SHARED_CPUS_PER_CORE = 8)."""
    await make_app(api)

    def sized(kind: str, cpus: int) -> dict[str, object]:
        guest = {"cpu_kind": kind, "cpus": cpus, "memory_mb": 256}
        return {"config": {"image": IMAGE, "guest": guest}, "skip_launch": True}

    assert SHARED_CPUS_PER_CORE == 8
    for _ in range(8):
        r = await api.client.post("/v1/apps/web/machines", json=sized("shared", 1))
        assert r.status_code == 200, r.text
    r = await api.client.post("/v1/apps/web/machines", json=sized("performance", 1))
    assert r.status_code == 200, r.text
    r = await api.client.post("/v1/apps/web/machines", json=sized("performance", 1))
    assert r.status_code == 412
    assert "1 performance cpu(s) and 256 MB" in r.json()["error"]
    alloc = Allocation.from_json((await api.store.get(hostalloc_key("h1"))).value)  # type: ignore[union-attr]
    assert alloc.cpus == 16


async def test_insufficient_capacity_names_the_regions(api: Api) -> None:
    await add_host(api.store, "h2", "fra")
    await make_app(api)
    r = await api.client.post(
        "/v1/apps/web/machines", json={"config": {"image": IMAGE}, "region": "ams,iad"}
    )
    assert r.status_code == 412
    body = r.json()
    assert body["status"] == "insufficient_capacity" and "ams, iad" in body["error"]
    assert "regions with live hosts: fra, test" in body["error"]
    big = {"config": {"image": IMAGE, "guest": {"memory_mb": 8192}}}
    r = await api.client.post("/v1/apps/web/machines", json=big)
    assert r.status_code == 412


async def test_one_region_takes_every_fly_region_code(api: Api) -> None:
    await make_app(api)
    for expression in ("iad", "lhr,ams", "eu", "any"):
        r = await api.client.post(
            "/v1/apps/web/machines", json={"config": {"image": IMAGE}, "region": expression}
        )
        assert r.status_code == 200, r.text
        assert r.json()["region"] == "test"
    # A name Fly does not know is not a region anywhere.
    r = await api.client.post(
        "/v1/apps/web/machines", json={"config": {"image": IMAGE}, "region": "xyz"}
    )
    assert r.status_code == 412 and "regions with live hosts: test" in r.json()["error"]


async def test_aliases_and_groups_in_a_fleet(api: Api) -> None:
    host = HostRecord(id="h2", region="home", region_aliases=["iad"], cpus=16, memory_mb=4096)
    await api.store.put(host_key("h2"), host.to_json())
    await api.store.put(alive_key("h2"), "1")
    await make_app(api)
    for expression, region in (("iad", "home"), ("us", "home"), ("test", "test")):
        r = await api.client.post(
            "/v1/apps/web/machines", json={"config": {"image": IMAGE}, "region": expression}
        )
        assert r.status_code == 200, r.text
        assert r.json()["region"] == region
    r = await api.client.post(
        "/v1/apps/web/machines", json={"config": {"image": IMAGE}, "region": "lhr"}
    )
    assert r.status_code == 412
    assert "regions with live hosts: home (also iad), test" in r.json()["error"]


async def test_region_expression_falls_through_in_order(api: Api) -> None:
    await add_host(api.store, "h2", "fra")
    await make_app(api)
    r = await api.client.post(
        "/v1/apps/web/machines", json={"config": {"image": IMAGE}, "region": "ams,fra,test"}
    )
    assert r.json()["region"] == "fra"


async def test_capacity_is_reserved_atomically(api: Api) -> None:
    await add_host(api.store, "small", "tiny", memory_mb=1024)
    await make_app(api)
    body = {"config": {"image": IMAGE, "guest": {"memory_mb": 256}}, "region": "tiny"}
    results = await asyncio.gather(
        *(api.client.post("/v1/apps/web/machines", json=body) for _ in range(8))
    )
    codes = sorted(r.status_code for r in results)
    assert codes == [200] * 4 + [412] * 4


# -- actions, leases, wait --------------------------------------------------------------------


async def test_actions_record_intent(api: Api) -> None:
    await make_app(api)
    m = await make_machine(api)
    mid = m["id"]
    await api.set_state("web", mid, "stopped")
    r = await api.client.post(f"/v1/apps/web/machines/{mid}/start")
    assert r.json() == {"previous_state": "stopped", "migrated": False, "new_host": ""}
    await api.set_state("web", mid, "started")
    r = await api.client.post(f"/v1/apps/web/machines/{mid}/stop", json={"signal": "SIGTERM"})
    assert r.status_code == 200
    r = await api.client.post(f"/v1/apps/web/machines/{mid}/stop", json={"signal": "SIGBUS"})
    assert r.status_code == 400
    r = await api.client.post(f"/v1/apps/web/machines/{mid}/restart", params={"timeout": "x"})
    assert r.status_code == 400
    assert (await api.client.post(f"/v1/apps/web/machines/{mid}/cordon")).status_code == 200
    assert (await api.client.get(f"/v1/apps/web/machines/{mid}")).json()["cordoned"] is True
    await api.client.post(f"/v1/apps/web/machines/{mid}/uncordon")
    assert (await api.client.get(f"/v1/apps/web/machines/{mid}")).json()["cordoned"] is False


async def test_leases_gate_mutations(api: Api) -> None:
    await make_app(api)
    mid = (await make_machine(api))["id"]
    base = f"/v1/apps/web/machines/{mid}"
    assert (await api.client.get(f"{base}/lease")).status_code == 404
    r = await api.client.post(f"{base}/lease", json={"ttl": 60, "description": "deploy"})
    assert r.status_code == 201, r.text
    lease = r.json()["data"]
    nonce = lease["nonce"]
    assert len(nonce) == 12 and lease["owner"] == "tester"
    assert lease["expires_at"] == int(api.clock.now) + 60

    held = await api.client.post(f"{base}/stop")
    assert held.status_code == 409 and "lease currently held" in held.json()["error"]
    assert (await api.client.post(f"{base}/lease", params={"ttl": 30})).status_code == 409
    ok = await api.client.post(f"{base}/stop", headers={"fly-machine-lease-nonce": nonce})
    assert ok.status_code == 200
    # Metadata writes are not lease-gated.
    r = await api.client.post(f"{base}/metadata/k", json={"value": "v"})
    assert r.status_code == 204

    refreshed = await api.client.post(
        f"{base}/lease", params={"ttl": 120}, headers={"fly-machine-lease-nonce": nonce}
    )
    assert refreshed.status_code == 201 and refreshed.json()["data"]["nonce"] == nonce
    assert (await api.client.delete(f"{base}/lease")).status_code == 400
    bad = await api.client.delete(f"{base}/lease", headers={"fly-machine-lease-nonce": "x"})
    assert bad.status_code == 409
    r = await api.client.delete(f"{base}/lease", headers={"fly-machine-lease-nonce": nonce})
    assert r.json() == {"status": "success", "data": {"ok": True}}
    assert (await api.client.post(f"{base}/stop")).status_code == 200

    await api.client.post(f"{base}/lease", params={"ttl": 5})
    api.clock.now += 6
    assert (await api.client.post(f"{base}/start")).status_code == 200, "expired leases lapse"


async def test_create_with_lease_ttl_returns_nonce(api: Api) -> None:
    await make_app(api)
    m = await make_machine(api, lease_ttl=30)
    assert len(m["nonce"]) == 12
    r = await api.client.post(f"/v1/apps/web/machines/{m['id']}/stop")
    assert r.status_code == 409


async def test_wait(api: Api) -> None:
    await make_app(api)
    mid = (await make_machine(api))["id"]
    base = f"/v1/apps/web/machines/{mid}/wait"
    for bad in ({"timeout": "0"}, {"timeout": "61"}, {"timeout": "x"}, {"state": "sleeping"}):
        r = await api.client.get(base, params=bad)
        assert r.status_code == 400 and "invalid_argument" in r.json()["error"], bad
    r = await api.client.get(base, params={"state": "created"})
    assert r.json()["state"] == "created" and r.json()["ok"] is True

    waiter = asyncio.create_task(
        api.client.get(base, params=[("state", "stopped"), ("state", "started")])
    )
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await api.set_state("web", mid, "started")
    r = await asyncio.wait_for(waiter, 5)
    assert r.status_code == 200 and r.json()["state"] == "started"

    r = await api.client.get(base, params={"state": "stopped", "timeout": "1"})
    assert r.status_code == 408
    assert r.json()["error"].startswith("deadline_exceeded:")
    assert (await api.client.get(base, params={"state": "settled"})).json()["state"] == "started"
    r = await api.client.get(base, params={"state": "started", "version": "01ZZZ", "timeout": "1"})
    assert r.status_code == 408


async def test_destroy_rules(api: Api) -> None:
    await make_app(api)
    mid = (await make_machine(api))["id"]
    await api.set_state("web", mid, "started")
    r = await api.client.delete(f"/v1/apps/web/machines/{mid}")
    assert r.status_code == 412
    r = await api.client.delete(f"/v1/apps/web/machines/{mid}", params={"kill": "true"})
    assert r.status_code == 200 and r.json() == {"ok": True}
    r = await api.client.post(f"/v1/apps/web/machines/{mid}/start")
    assert r.status_code == 404
    # The name is free again at once.
    name = (await api.client.get(f"/v1/apps/web/machines/{mid}")).json()["name"]
    r = await api.client.post(
        "/v1/apps/web/machines", json={"config": {"image": IMAGE}, "name": name}
    )
    assert r.status_code == 200


async def test_an_operation_waits_behind_one_in_progress(api: Api) -> None:
    await make_app(api)
    mid = (await make_machine(api))["id"]
    base = f"/v1/apps/web/machines/{mid}"
    await api.set_state("web", mid, "replacing")
    start = asyncio.create_task(api.client.post(f"{base}/start"))
    destroy = asyncio.create_task(api.client.delete(base))
    await asyncio.sleep(0.05)
    assert not start.done() and not destroy.done(), "both queue behind the replacement"
    await api.set_state("web", mid, "started")
    r = await start
    assert r.status_code == 200 and r.json()["previous_state"] == "started"
    # On the settled machine, destroy answers as it would have: started needs force.
    r = await destroy
    assert r.status_code == 412 and "force" in r.json()["error"]


async def test_an_operation_gives_up_waiting_with_a_clear_error(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settle, "BUSY_WAIT", 0.1)
    await make_app(api)
    mid = (await make_machine(api))["id"]
    await api.set_state("web", mid, "replacing")
    r = await api.client.post(f"/v1/apps/web/machines/{mid}/start")
    assert r.status_code == 412
    assert r.json()["error"] == "failed_precondition: machine getting replaced, refusing to start"


async def test_update_rules(api: Api) -> None:
    await make_app(api)
    m = await make_machine(api, config={"image": IMAGE, "metadata": {"keep": "me"}})
    base = f"/v1/apps/web/machines/{m['id']}"
    new = {"image": IMAGE, "env": {"A": "1"}}
    api.clock.now += 1  # versions are time-ordered ULIDs
    r = await api.client.post(base, json={"config": new, "current_version": "stale"})
    assert r.status_code == 409
    r = await api.client.post(base, json={"config": new, "current_version": m["version"]})
    assert r.status_code == 200
    updated = r.json()
    assert updated["version"] != m["version"]
    assert updated["config"]["metadata"] == {"keep": "me"}
    r = await api.client.post(base, json={"config": new, "name": "other"})
    assert r.status_code == 400
    r = await api.client.post(base, json={"config": {"image": IMAGE, "guest": {"memory_mb": 9000}}})
    assert r.status_code == 409 and "could not reserve" in r.json()["error"]
    versions = (await api.client.get(f"{base}/versions")).json()
    assert [v["version"] for v in versions] == [updated["version"], m["version"]]


async def test_metadata(api: Api) -> None:
    await make_app(api)
    m = await make_machine(api)
    base = f"/v1/apps/web/machines/{m['id']}/metadata"
    assert (await api.client.get(base)).json() == {}
    r = await api.client.patch(base, json={"metadata": {"a": "1", "b": "2"}})
    assert r.status_code == 204
    r = await api.client.patch(base, json={"metadata": {"a": None, "b": ""}})
    assert (await api.client.get(base)).json() == {}
    r = await api.client.put(base, json={"metadata": {"c": "3"}, "machine_version": "stale"})
    assert r.status_code == 412
    await api.client.post(f"{base}/c", json={"value": "3"})
    assert (await api.client.get(f"{base}/c")).json() == {"value": "3"}
    assert (await api.client.delete(f"{base}/c")).status_code == 204
    assert (await api.client.get(f"{base}/c")).status_code == 404
    r = await api.client.post(f"{base}/bad key!", json={"value": "x"})
    assert r.status_code == 400
    machine = (await api.client.get(f"/v1/apps/web/machines/{m['id']}")).json()
    assert machine["version"] == m["version"], "metadata writes keep the version"


async def test_openapi_document_is_served(api: Api) -> None:
    r = await api.client.get("/openapi.json", headers={"Authorization": ""})
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/v1/apps/{app_name}/machines/{machine_id}/wait" in paths


async def test_config_roost_does_not_act_on_is_named_on_the_machine(api: Api) -> None:
    await make_app(api)
    config = {
        "image": IMAGE,
        "schedule": "daily",
        "dns": {"nameservers": ["10.0.0.1"]},
        "init": {"swap_size_mb": 512},
        "auto_start_machines": True,
        "services": [{"internal_port": 8080, "ports": [{"port": 5432, "handlers": ["pg_tls"]}]}],
    }
    created = await make_machine(api, config=config)
    notices = [e for e in created["events"] if e["type"] == "config"]
    assert len(notices) == 1 and notices[0]["source"] == "flyd"
    for field in ("schedule", "dns", "init.swap_size_mb", "services[0].ports[0].handlers=pg_tls"):
        assert field in notices[0]["message"]
    assert "auto_start_machines are not Machines API fields (dropped)" in notices[0]["message"]
    assert "auto_start_machines" not in created["config"]
    events = (await api.client.get(f"/v1/apps/web/machines/{created['id']}/events")).json()
    assert [e["message"] for e in events if e["type"] == "config"] == [notices[0]["message"]]
    # A config roost acts on entirely says nothing.
    plain = await make_machine(api)
    assert plain["events"] == []


async def test_apps_page_by_name(api: Api) -> None:
    for name in ("c-app", "a-app", "b-app"):
        await make_app(api, name)
    first = (await api.client.get("/v1/apps", params={"org_slug": "personal", "limit": 2})).json()
    assert [a["name"] for a in first["apps"]] == ["a-app", "b-app"]
    assert first["total_apps"] == 3 and first["next_cursor"] == "b-app"
    rest = (
        await api.client.get("/v1/apps", params={"limit": 2, "cursor": first["next_cursor"]})
    ).json()
    assert [a["name"] for a in rest["apps"]] == ["c-app"] and "next_cursor" not in rest
    roles = (await api.client.get("/v1/apps", params={"app_role": "postgres_cluster"})).json()
    assert roles == {"apps": [], "total_apps": 0}, "no app here has a role"


async def test_org_machines_across_apps_page_by_update(api: Api) -> None:
    await make_app(api, "one")
    await make_app(api, "two")
    r = await api.client.post("/v1/apps", json={"name": "elsewhere", "org_slug": "other"})
    assert r.status_code == 201
    made = []
    for app in ("one", "two", "one", "elsewhere"):
        api.clock.now += 1
        made.append((app, (await make_machine(api, app))["id"]))
    page = (await api.client.get("/v1/orgs/personal/machines", params={"limit": 2})).json()
    assert [(m["app_name"], m["id"]) for m in page["machines"]] == made[:2]
    assert page["machines"][0]["config"]["image"] == IMAGE
    assert page["last_machine_id"] == made[1][1]
    rest = (
        await api.client.get(
            "/v1/orgs/personal/machines", params={"cursor": page["next_cursor"], "summary": True}
        )
    ).json()
    assert [(m["app_name"], m["id"]) for m in rest["machines"]] == made[2:3]
    assert "config" not in rest["machines"][0] and "next_cursor" not in rest


async def test_platform_regions(api: Api) -> None:
    await add_host(api.store, "h2", "fra")
    body = (await api.client.get("/v1/platform/regions")).json()
    assert body["nearest"] == "test"
    rows = {row["code"]: row for row in body["regions"]}
    assert set(rows) == {"fra", "test"}
    assert rows["fra"]["name"] == "Frankfurt, Germany" and rows["fra"]["geo_region"] == "eu"


async def test_no_waiting_behind_a_machine_whose_host_is_lost(api: Api) -> None:
    await make_app(api)
    mid = (await make_machine(api))["id"]
    await api.set_state("web", mid, "replacing")
    await api.store.delete(alive_key("h1"))
    r = await asyncio.wait_for(api.client.post(f"/v1/apps/web/machines/{mid}/start"), 5)
    assert r.status_code == 412 and "getting replaced" in r.json()["error"]
