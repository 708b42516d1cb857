"""The console in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
driven by selenium): log in, filter, open an event and see its highlights, export, verify,
and a tenant-bound key that cannot reach another tenant's event by URL. One browser session
for the module; each page's screenshot goes to ``docs/console/`` (linked from the README).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from guardrails.console import ConsoleSettings, create_console_app
from guardrails.proxy.keys import KeyRing

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="no headless browser: install Debian's chromium and chromium-driver to run these",
)
# The README's screenshots are refreshed by a run with GUARDRAILS_SCREENSHOTS=1; other runs
# still take every screenshot (so a page that cannot render fails) but keep them out of the
# tree, which stays clean.
SHOTS = (
    Path(__file__).resolve().parents[3] / "docs" / "console"
    if os.environ.get("GUARDRAILS_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / f"guardrails-console-shots-{os.getpid()}"
)
WAIT_S = 60


@pytest.fixture(scope="module")
def server(console_log) -> Iterator[str]:
    """The stand-alone console on a free local port, in a thread of this process."""
    import uvicorn

    ring = KeyRing(console_log.keys_file)
    app = create_console_app(
        ConsoleSettings(audit_url=console_log.url, keys=lambda: ring, secret=b"browser-test")
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    started = threading.Event()
    for _ in range(10_000):
        if uv.started or not thread.is_alive():
            started.set()
            break
        started.wait(0.01)
    assert uv.started, "the console server did not start"
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(30)
    sock.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """One headless Chromium for the module."""
    options = Options()
    options.binary_location = CHROMIUM or ""
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver, name: str) -> None:
    """A full-page PNG of what the browser shows now (Chrome DevTools, beyond the viewport)."""
    import base64

    SHOTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    clip = {"x": 0, "y": 0, "width": 1280, "height": min(int(height), 3000), "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    (SHOTS / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))


def _wait(driver, condition, message: str):
    """Poll ``condition`` (a page being replaced mid-check is retried, not an error)."""
    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, WAIT_S, ignored_exceptions=ignored).until(condition, message)


def _element(driver, element_id: str):
    return _wait(driver, lambda d: d.find_element(By.ID, element_id), f"no #{element_id}")


def _login(driver, base: str, key: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{base}/console/login")
    field = _element(driver, "key")
    field.send_keys(key)
    driver.find_element(By.ID, "login-submit").click()
    _wait(driver, lambda d: d.find_elements(By.ID, "events"), "the event list did not open")


def test_reviewer_walks_the_console(browser, server, console_log):
    """Log in, filter to blocks, open one, see both findings marked, export the filter as
    CSV, verify the chains and look at charts and the policy diff."""
    browser.get(f"{server}/console/login")
    browser.delete_all_cookies()  # the module's browser may hold another test's session
    browser.get(f"{server}/console/")
    _wait(browser, lambda d: d.find_elements(By.ID, "key"), "no login form")
    _shot(browser, "login")
    _login(browser, server, console_log.admin_key)
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.event-row")
    assert len(rows) == console_log.total
    _shot(browser, "events")

    Select(browser.find_element(By.ID, "f-action")).select_by_value("block")
    browser.find_element(By.ID, "apply").click()
    _wait(browser, lambda d: "action=block" in d.current_url, "the filter was not applied")
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.event-row")
    assert len(rows) == 3
    csv_text = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(document.getElementById('export-csv').href, {credentials: 'same-origin'})"
        ".then(r => r.text()).then(done);"
    )
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("event_id,")
    assert len(lines) == 4
    assert all(",block," in line for line in lines[1:])

    browser.find_element(By.CSS_SELECTOR, f'tr[data-event="{console_log.blocked_id}"] a').click()
    _wait(browser, lambda d: d.find_elements(By.ID, "prompt"), "the event page did not open")
    marks = browser.find_elements(By.CSS_SELECTOR, "#prompt mark.finding")
    marked = {(m.get_attribute("data-rules"), m.text) for m in marks}
    assert ("pii.email", "ann@example.org") in marked
    assert any(r == "injection.ignore" for r, _ in marked)
    color = marks[0].value_of_css_property("background-color")
    assert color not in ("rgba(0, 0, 0, 0)", "transparent")  # the highlight is visible
    assert browser.find_element(By.ID, "final-action").text == "block"
    _shot(browser, "event")

    browser.find_element(By.ID, "nav-chains").click()
    _element(browser, "verify-start").click()
    _wait(browser, lambda d: "/chains" in d.current_url, "verify did not start")
    _wait(
        browser,
        lambda d: d.find_element(By.ID, "verify-status").get_attribute("data-state") == "intact",
        "verify did not finish intact",
    )
    assert f"{console_log.total} events" in browser.find_element(By.ID, "verify-text").text
    _shot(browser, "chains")

    browser.get(f"{server}/console/charts?since=2026-01-01")
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart")) == 4
    _shot(browser, "charts")

    browser.find_element(By.ID, "nav-policies").click()
    _element(browser, "diff-submit")
    _shot(browser, "policies")
    browser.find_element(By.ID, "diff-submit").click()
    _wait(browser, lambda d: d.find_elements(By.ID, "diff"), "the diff did not open")
    assert "injection.ignore" in browser.find_element(By.ID, "diff").text
    _shot(browser, "policy-diff")


def test_tenant_key_cannot_open_another_tenants_event(browser, server, console_log):
    """Logged in as acme's admin, a globex event's URL is 'No such event'."""
    _login(browser, server, console_log.acme_key)
    tenants = {
        row.find_elements(By.TAG_NAME, "td")[2].text
        for row in browser.find_elements(By.CSS_SELECTOR, "tr.event-row")
    }
    assert tenants == {"acme"}
    browser.get(f"{server}/console/events/{console_log.globex_id}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "No such event"
    assert not browser.find_elements(By.ID, "prompt")
