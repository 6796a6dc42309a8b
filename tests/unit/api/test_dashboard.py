"""The dashboard page: served without a token, self-contained, and no way around auth."""

from __future__ import annotations

import base64
import hashlib
import re

from tests.unit.api.conftest import Api

NO_TOKEN = {"Authorization": ""}


async def test_page_is_served_without_a_token(api: Api) -> None:
    r = await api.client.get("/dashboard", headers=NO_TOKEN)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.text.lstrip().lower().startswith("<!doctype html>")
    for testid in ("login-form", "token-input", "login-error", "logout", "apps", "machines"):
        assert f'data-testid="{testid}"' in r.text


async def test_page_loads_nothing_from_elsewhere(api: Api) -> None:
    page = (await api.client.get("/dashboard", headers=NO_TOKEN)).text
    assert not re.search(r"https?://", page, re.IGNORECASE)
    # Every reference the page makes is a same-origin path or inline data.
    refs = re.findall(r"""(?:src|href|action)\s*=\s*["']([^"']*)["']""", page)
    refs += re.findall(r"""url\(\s*["']?([^"')]*)""", page)
    for ref in refs:
        assert ref.startswith("data:") or (ref.startswith("/") and not ref.startswith("//")), ref


async def test_policy_allows_exactly_the_inline_style_and_script(api: Api) -> None:
    r = await api.client.get("/dashboard", headers=NO_TOKEN)
    policy = r.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    for tag in ("style", "script"):
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", r.text, re.DOTALL)
        assert len(blocks) == 1, tag
        digest = base64.b64encode(hashlib.sha256(blocks[0].encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in policy
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_script_only_names_elements_the_page_has(api: Api) -> None:
    page = (await api.client.get("/dashboard", headers=NO_TOKEN)).text
    script = re.search(r"<script>(.*?)</script>", page, re.DOTALL)
    facts = re.search(r"const facts = \{(.*?)\};", page, re.DOTALL)
    assert script is not None and facts is not None
    ids = set(re.findall(r'\bid="([\w-]+)"', page))
    for name in re.findall(r'\$\("([\w-]+)"\)', script.group(1)):
        assert name in ids, name
    # The facts panel is filled by key: `fact-${key}`.
    for key in re.findall(r"^\s*(\w+):", facts.group(1), re.MULTILINE):
        assert f"fact-{key}" in ids, key


async def test_the_api_still_needs_a_token(api: Api) -> None:
    for path in ("/v1/apps", "/dashboard/", "/dashboardx"):
        r = await api.client.get(path, headers=NO_TOKEN)
        assert r.status_code == 401, path
        assert r.json()["error"].startswith("Authenticate:")
    r = await api.client.get("/v1/apps")
    assert r.status_code == 200
