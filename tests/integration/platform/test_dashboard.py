"""The web dashboard in real headless Chromium, against a real server and machine.

Chromium and its driver come from Debian (``chromium``, ``chromium-driver``): nothing
is downloaded. Every wait is on the page's DOM with a deadline, never a sleep.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.fixtures.platform import RoostServer
from tests.integration.platform.helpers import create, new_app, run, wait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
HAVE_BROWSER = all(os.access(path, os.X_OK) for path in (CHROMIUM, CHROMEDRIVER))

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        not HAVE_BROWSER,
        reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, "
        "/usr/bin/chromedriver)",
    ),
]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Everything the page shows follows within two polls of the API; a stop or start of
# the demo machine takes well under a second. The margin is for a loaded CI host.
TIMEOUT = 20.0
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    # The host has no network beyond loopback: keep Chromium from trying.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1680,1050",
)
# Holds the page's POSTs until the test releases them, so the in-flight state of the
# buttons can be seen deterministically.
HOLD_POSTS = """
const realFetch = window.fetch;
let release;
const held = new Promise((resolve) => { release = resolve; });
window.releasePosts = () => { window.fetch = realFetch; release(); };
window.fetch = (url, init) =>
  init && init.method === "POST" ? held.then(() => realFetch(url, init)) : realFetch(url, init);
"""

T = TypeVar("T")


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="roost-chromium-")
    try:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        # An explicit driver path keeps Selenium Manager (which downloads) out of it.
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(profile)


def until(driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], T], what: str) -> T:
    return WebDriverWait(driver, TIMEOUT, poll_frequency=0.05).until(
        condition, message=f"page did not show {what} within {TIMEOUT}s"
    )


def by_testid(scope: webdriver.Chrome | WebElement, testid: str) -> WebElement:
    return scope.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def row(driver: webdriver.Chrome, mid: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="machine"][data-machine-id="{mid}"]')


def shows_state(mid: str, state: str) -> Callable[[webdriver.Chrome], bool]:
    return lambda d: by_testid(row(d, mid), "machine-state").text == state


def sign_in(driver: webdriver.Chrome, server: RoostServer, token: str) -> None:
    driver.get(f"{server.url}/dashboard")
    field = until(driver, lambda d: by_testid(d, "token-input"), "the login form")
    assert field.is_displayed()
    field.send_keys(token)
    by_testid(driver, "login-submit").click()


def screenshot(driver: webdriver.Chrome, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path))
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000, path


def test_wrong_token_shows_the_login_error(browser: webdriver.Chrome, roost: RoostServer) -> None:
    sign_in(browser, roost, "roost_not-the-token")
    error = until(
        browser,
        lambda d: (e := by_testid(d, "login-error")).is_displayed() and e,
        "the login error",
    )
    assert "not accepted" in error.text
    assert by_testid(browser, "token-input").is_displayed()
    assert not by_testid(browser, "logout").is_displayed()
    assert browser.execute_script("return sessionStorage.length") == 0


def test_stop_and_start_a_machine_from_the_dashboard(
    browser: webdriver.Chrome, roost: RoostServer, demo_images: dict[str, str]
) -> None:
    with roost.client() as c:
        app = new_app(c, "dash")
        config = {
            "image": demo_images["roost/hello"],
            "checks": {"web": {"type": "http", "port": 8080, "path": "/", "interval": "1s"}},
        }
        machine = run(c, app, config)
        mid = machine["id"]
        # A second machine, never launched, so the page has two state groups to show.
        spare = create(c, app, {"image": demo_images["roost/hello"]}, skip_launch=True)

        sign_in(browser, roost, roost.token)
        # A reload would lose this: proves every later change arrived in place.
        browser.execute_script("window.sameDocument = true")
        app_button = until(
            browser,
            lambda d: d.find_element(By.CSS_SELECTOR, f'[data-testid="app"][data-app="{app}"]'),
            f"app {app} in the list",
        )
        app_button.click()
        until(browser, shows_state(mid, "started"), "the machine as started")
        until(browser, shows_state(spare["id"], "created"), "the spare machine as created")
        cells = row(browser, mid)
        assert machine["private_ip"] in cells.text
        assert "roost/hello:latest" in cells.text
        until(
            browser,
            lambda d: "1 passing" in by_testid(row(d, mid), "machine-health").text,
            "the passing health check",
        )

        by_testid(row(browser, mid), "machine-select").click()
        detail = until(browser, lambda d: by_testid(d, "detail"), "the machine details")
        until(
            browser,
            lambda d: detail.find_elements(By.CSS_SELECTOR, '[data-event-type="start"]'),
            "the start event",
        )

        browser.execute_script(HOLD_POSTS)
        stop = by_testid(row(browser, mid), "machine-stop")
        stop.click()
        assert not stop.is_enabled(), "stop stays disabled while its request is in flight"
        assert not by_testid(row(browser, mid), "machine-start").is_enabled()
        assert stop.get_attribute("aria-busy") == "true"
        browser.execute_script("window.releasePosts()")
        until(browser, shows_state(mid, "stopped"), "the machine as stopped")
        exit_event = until(
            browser,
            lambda d: detail.find_element(By.CSS_SELECTOR, '[data-event-type="exit"]'),
            "the exit event",
        )
        assert "exit " in by_testid(exit_event, "event-details").text

        by_testid(row(browser, mid), "machine-start").click()
        until(browser, shows_state(mid, "started"), "the machine as started again")

        # Someone else holds a lease: the API refuses the stop and the page says why.
        lease = c.post(f"/v1/apps/{app}/machines/{mid}/lease", json={"ttl": 60})
        assert lease.status_code == 201, lease.text
        until(browser, lambda d: by_testid(row(d, mid), "machine-stop").is_enabled(), "stop")
        by_testid(row(browser, mid), "machine-stop").click()
        banner = until(
            browser,
            lambda d: (e := by_testid(d, "error")).is_displayed() and e,
            "the lease conflict",
        )
        assert "lease" in banner.text
        released = c.delete(
            f"/v1/apps/{app}/machines/{mid}/lease",
            headers={"fly-machine-lease-nonce": lease.json()["data"]["nonce"]},
        )
        assert released.status_code == 200, released.text
        wait(c, app, mid, "started")
        assert by_testid(row(browser, mid), "machine-state").text == "started"
        banner.find_element(By.TAG_NAME, "button").click()
        assert not banner.is_displayed()

        assert browser.execute_script("return window.sameDocument") is True
        screenshot(browser, "dashboard.png")
        browser.set_window_size(420, 900)
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"
        ), "the narrow layout must not scroll sideways"
        screenshot(browser, "dashboard-narrow.png")

        # The token and the selection survive a reload (session storage, URL fragment).
        browser.refresh()
        until(
            browser,
            lambda d: (
                "selected" in (row(d, mid).get_attribute("class") or "")
                and by_testid(d, "detail").is_displayed()
            ),
            "the selected machine after a reload",
        )

        by_testid(browser, "logout").click()
        until(browser, lambda d: by_testid(d, "token-input").is_displayed(), "the login form")
        assert browser.execute_script("return sessionStorage.length") == 0
