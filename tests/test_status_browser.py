"""The status page in a real browser (DESIGN §13): headless Chromium against the real proxy
in front of the fake OpenRouter. The page shows what /v1/usage and the snapshot say, updates
itself without a reload, shows cooling models and hostile names as text, logs in and out,
creates and revokes keys, loads nothing from another origin and fits a phone's width."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.chromium import chromium
from tests.conftest import ProxyFactory
from tests.fake_openrouter import MISTRAL, SCOUT, FakeOpenRouter, HttpError, provider_429
from tests.polling import wait_until

ADMIN = "admin-key-for-the-status-page"
XSS = "acme/<img src=x onerror=alert(1)>"
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "status.png"
pytestmark = pytest.mark.e2e


def chat(url: str, model: str, key: str = "sk-any") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def row_text(driver, table: str, attribute: str, name: str) -> str:
    """The text of the row whose data attribute is `name` (found by value, not by selector,
    so a hostile name needs no quoting)."""
    script = (
        "const [t, a, n] = arguments; for (const r of document.querySelectorAll('#' + t + "
        "' tbody tr')) { if (r.getAttribute(a) === n) return Array.from(r.cells, "
        "c => c.textContent).join(' | '); } return null;"
    )
    return driver.execute_script(script, table, attribute, name) or ""


def requests_today(url: str, model: str) -> int | None:
    models = httpx.get(f"{url}/status/snapshot").json()["models"]
    return next((m["requests_today"] for m in models if m["id"] == model), None)


def other_origin_requests(driver, origin: str) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            network = url.split(":", 1)[0] in ("http", "https", "ws", "wss")
            if network and not url.startswith(origin + "/") and url != origin:
                urls.append(url)
    return urls


def test_the_page_shows_live_numbers_cooling_models_and_hostile_names_as_text(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
) -> None:
    with start_proxy(max_wait=0) as proxy, chromium() as driver:
        assert chat(proxy.url, SCOUT).status_code == 200
        wait_until(lambda: requests_today(proxy.url, SCOUT) == 1)
        driver.get(f"{proxy.url}/status")
        snapshot = httpx.get(f"{proxy.url}/status/snapshot").json()
        shown = driver.find_element("id", "free-remaining").text
        assert shown == str(snapshot["free_budget"]["remaining_today"])

        # A new request shows up without a reload (the event stream).
        before = row_text(driver, "models", "data-model", SCOUT)
        assert chat(proxy.url, SCOUT).status_code == 200
        wait_until(
            lambda: row_text(driver, "models", "data-model", SCOUT).split(" | ")[1] == "2",
            timeout=10,
            message=f"the request count on the page (was {before!r})",
        )
        assert str(int(shown) - 1) == driver.find_element("id", "free-remaining").text

        # A model answered with 429 and Retry-After: 120 shows as cooling, with a countdown.
        refused = provider_429(MISTRAL)
        fake.script(MISTRAL, HttpError(429, refused.body, {"Retry-After": "120"}))
        assert chat(proxy.url, MISTRAL).status_code == 429
        cooling = wait_until(
            lambda: (
                "cooling until" in (t := row_text(driver, "models", "data-model", MISTRAL)) and t
            ),
            timeout=10,
        )
        assert "1m 5" in cooling or "2m 0s" in cooling, cooling

        # A hostile model id is text: no element made from it, no dialog.
        chat(proxy.url, XSS)
        wait_until(lambda: XSS in driver.find_element("id", "failures").text, timeout=10)
        assert driver.find_elements("css selector", "img") == []
        assert driver.execute_script("return typeof window.alert") == "function"
        from selenium.common.exceptions import NoAlertPresentException

        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text  # noqa: B018

        if os.environ.get("STATUS_SCREENSHOT"):
            SCREENSHOT.parent.mkdir(exist_ok=True)
            driver.set_window_size(1100, 1400)
            driver.save_screenshot(str(SCREENSHOT))

        # A phone's width: no sideways scrolling (tables scroll in their own box).
        driver.set_window_size(375, 800)
        wait_until(lambda: driver.execute_script("return window.innerWidth") <= 390)
        width = driver.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert width[0] <= width[1], width

        assert other_origin_requests(driver, proxy.url) == []


def test_an_admin_logs_in_creates_and_revokes_a_key_and_logs_out(
    start_proxy: ProxyFactory,
) -> None:
    with start_proxy(admin_key=ADMIN) as proxy, chromium() as driver:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        made = httpx.post(
            f"{proxy.url}/admin/keys", json={"name": "alice", "rpd": 50, "rpm": 30}, headers=admin
        )
        alice = made.json()["key"]
        with OpenAI(base_url=f"{proxy.url}/v1", api_key=alice, max_retries=0) as sdk:
            sdk.chat.completions.create(model=SCOUT, messages=[{"role": "user", "content": "x"}])
        usage = httpx.get(f"{proxy.url}/v1/usage", headers={"Authorization": f"Bearer {alice}"})

        driver.get(f"{proxy.url}/status")
        assert driver.find_elements("id", "keys") == []  # no data before logging in
        field = driver.find_element("css selector", "input[type=password]")
        field.send_keys(ADMIN)
        driver.find_element("xpath", "//button[text()='Log in']").click()
        wait_until(lambda: row_text(driver, "keys", "data-key", "alice"))
        used = usage.json()
        rpd = f"{used['used']['rpd']} / 50 ({used['remaining']['rpd']} left)"
        assert rpd in row_text(driver, "keys", "data-key", "alice")

        # Create: the secret is shown once.
        driver.find_element("css selector", "#create-key input[name=name]").send_keys("bob")
        driver.find_element("css selector", "#create-key input[name=rpm]").send_keys("7")
        driver.find_element("xpath", "//button[text()='Create']").click()
        secret = wait_until(lambda: driver.find_elements("id", "new-secret"))[0].text
        bob = {"Authorization": f"Bearer {secret}"}
        assert httpx.get(f"{proxy.url}/v1/usage", headers=bob).json()["limits"]["rpm"] == 7
        driver.get(f"{proxy.url}/status")
        assert secret not in driver.page_source

        # Revoke: the key gets 401 within a second.
        wait_until(lambda: row_text(driver, "keys", "data-key", "bob"))
        driver.find_element("xpath", "//tr[@data-key='bob']//button[text()='Revoke']").click()
        wait_until(lambda: httpx.get(f"{proxy.url}/v1/usage", headers=bob).status_code == 401, 1)

        # Log out: the old cookie opens nothing any more.
        cookie = driver.get_cookie("proxy_status_session")
        assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        old = {"proxy_status_session": cookie["value"]}
        assert httpx.get(f"{proxy.url}/status/snapshot", cookies=old).status_code == 200
        driver.find_element("xpath", "//button[text()='Log out']").click()
        wait_until(lambda: driver.find_elements("css selector", "input[type=password]"))
        assert httpx.get(f"{proxy.url}/status/snapshot", cookies=old).status_code == 401
        assert other_origin_requests(driver, proxy.url) == []
