"""The status page's routes without a browser (DESIGN §4, §5, §13): headers, the numbers in
the server-rendered HTML, access in each mode, the session cookie, the login limit, CSRF,
the event stream and the browser guard's rules for the page."""

from __future__ import annotations

import re
from html import escape

import httpx
import pytest

from tests.conftest import ProxyFactory
from tests.fake_openrouter import SCOUT
from tests.polling import wait_until

ADMIN = "admin-key-for-the-status-page"
pytestmark = pytest.mark.e2e


def chat(url: str, model: str = SCOUT, key: str = "sk-any") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(
        f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    )


def login(url: str, key: str = ADMIN, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/status/login", data={"admin_key": key}, headers=headers)


def keyed(start_proxy: ProxyFactory, **settings: object):
    return start_proxy(admin_key=ADMIN, **settings)


def make_key(url: str, name: str) -> str:
    made = httpx.post(
        f"{url}/admin/keys", json={"name": name}, headers={"Authorization": f"Bearer {ADMIN}"}
    )
    return str(made.json()["key"])


def test_the_page_carries_its_numbers_without_javascript_and_safe_headers(
    start_proxy: ProxyFactory,
) -> None:
    with start_proxy() as proxy:
        assert chat(proxy.url).status_code == 200
        wait_until(
            lambda: (
                httpx.get(f"{proxy.url}/status/snapshot").json()["keys"] == []
                and (
                    [
                        m["requests_today"]
                        for m in httpx.get(f"{proxy.url}/status/snapshot").json()["models"]
                    ]
                    == [1]
                )
            )
        )
        root = httpx.get(f"{proxy.url}/")
        assert root.status_code in (302, 307) and root.headers["location"] == "/status"
        page = httpx.get(f"{proxy.url}/status")
        snapshot = httpx.get(f"{proxy.url}/status/snapshot").json()
    remaining = snapshot["free_budget"]["remaining_today"]
    assert f"<b id=free-remaining>{remaining}</b>" in page.text
    assert re.search(rf"<td>{re.escape(escape(SCOUT))}</td><td>1</td>", page.text)
    for response in (page,):
        assert response.headers["content-security-policy"].startswith("default-src 'self'")
        assert "unsafe-inline" not in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["cache-control"] == "no-store"
    assert "<script>" not in page.text and " style=" not in page.text
    assert "http://" not in page.text.replace(proxy.url, "") and "https://" not in page.text
    with start_proxy() as proxy:
        sizes = [
            len(httpx.get(f"{proxy.url}{path}").content)
            for path in ("/status", "/status/static/status.js", "/status/static/status.css")
        ]
    assert sum(sizes) <= 200 * 1024


def test_the_event_stream_sends_the_snapshot_again_and_again(start_proxy: ProxyFactory) -> None:
    with (
        start_proxy() as proxy,
        httpx.stream("GET", f"{proxy.url}/status/events", timeout=10) as events,
    ):
        assert events.headers["content-type"].startswith("text/event-stream")
        assert events.headers["cache-control"] == "no-store"
        seen = 0
        for line in events.iter_lines():
            if line.startswith("data: "):
                seen += 1
                if seen == 2:
                    break
    assert seen == 2


def test_key_mode_without_a_session_shows_a_login_form_and_no_data(
    start_proxy: ProxyFactory,
) -> None:
    with keyed(start_proxy) as proxy:
        client_key = make_key(proxy.url, "alice")
        page = httpx.get(f"{proxy.url}/status")
        assert "type=password" in page.text and "alice" not in page.text
        assert "id=keys" not in page.text
        for path in ("/status/snapshot", "/status/events"):
            assert httpx.get(f"{proxy.url}{path}").status_code == 401
            as_client = {"Authorization": f"Bearer {client_key}"}
            assert httpx.get(f"{proxy.url}{path}", headers=as_client).status_code == 401
        assert login(proxy.url, client_key).status_code == 401  # a client key never opens it


def test_key_mode_without_an_admin_key_says_what_to_set(start_proxy: ProxyFactory) -> None:
    with keyed(start_proxy) as proxy:
        make_key(proxy.url, "alice")
        db = proxy.app.state.services.settings.db_path
    with start_proxy(db_path=db) as proxy:
        page = httpx.get(f"{proxy.url}/status")
        assert "PROXY_ADMIN_KEY" in page.text and "alice" not in page.text
        assert httpx.get(f"{proxy.url}/status/snapshot").status_code == 401


def test_the_session_cookie_is_opaque_http_only_strict_and_secure_over_https(
    start_proxy: ProxyFactory,
) -> None:
    with keyed(start_proxy) as proxy:
        make_key(proxy.url, "alice")
        plain = login(proxy.url)
        over_https = login(proxy.url, **{"X-Forwarded-Proto": "https"})
    cookie = plain.headers["set-cookie"]
    assert plain.status_code == 303
    session_id = cookie.split(";")[0].split("=", 1)[1]
    assert ADMIN not in cookie and len(session_id) >= 32
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/status", "Max-Age=43200"):
        assert attribute.lower() in cookie.lower()
    assert "secure" not in cookie.lower()
    assert "secure" in over_https.headers["set-cookie"].lower()


def test_failed_logins_are_limited_to_five_a_minute(
    start_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with keyed(start_proxy) as proxy:
        make_key(proxy.url, "alice")
        statuses = [login(proxy.url, f"guess-{i}").status_code for i in range(5)]
        refused = login(proxy.url)  # even the right key, now
    assert statuses == [401] * 5
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "failed admin login" in caplog.text and "guess-" not in caplog.text


def test_creating_a_key_needs_the_session_and_its_csrf_token(start_proxy: ProxyFactory) -> None:
    with keyed(start_proxy) as proxy:
        make_key(proxy.url, "alice")
        session = login(proxy.url).cookies
        page = httpx.get(f"{proxy.url}/status", cookies=session).text
        csrf = re.search(r'name=csrf value="([^"]+)"', page).group(1)
        form = {"name": "bob", "rpm": "5"}
        without = httpx.post(f"{proxy.url}/status/keys", data=form, cookies=session)
        wrong = httpx.post(
            f"{proxy.url}/status/keys", data={**form, "csrf": "x" * 43}, cookies=session
        )
        no_session = httpx.post(f"{proxy.url}/status/keys", data={**form, "csrf": csrf})
        revoke = httpx.post(f"{proxy.url}/status/keys/alice/revoke", cookies=session)
        admin = {"Authorization": f"Bearer {ADMIN}"}
        names = [
            k["name"] for k in httpx.get(f"{proxy.url}/admin/keys", headers=admin).json()["data"]
        ]
        revoked = httpx.get(f"{proxy.url}/admin/keys", headers=admin).json()["data"][0]["revoked"]
        made = httpx.post(f"{proxy.url}/status/keys", data={**form, "csrf": csrf}, cookies=session)
        bad = httpx.post(
            f"{proxy.url}/status/keys",
            data={"name": "carol", "rpm": "0", "csrf": csrf},
            cookies=session,
        )
    assert [without.status_code, wrong.status_code, no_session.status_code] == [403] * 3
    assert revoke.status_code == 403 and revoked is None
    assert names == ["alice"]
    assert made.status_code == 201 and "id=new-secret" in made.text
    assert bad.status_code == 400 and "rpm" in bad.text


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        # A link in a wiki: a top-level navigation shows the page.
        ("GET", "/status", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}, 200),
        # A cross-site fetch of the data, or a cross-site form post: refused.
        (
            "GET",
            "/status/snapshot",
            {
                "Sec-Fetch-Site": "cross-site",
                "Sec-Fetch-Mode": "cors",
                "Origin": "https://evil.example",
            },
            403,
        ),
        (
            "GET",
            "/status/snapshot",
            {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"},
            403,
        ),
        (
            "POST",
            "/status/login",
            {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"},
            403,
        ),
        (
            "POST",
            "/status/login",
            {
                "Sec-Fetch-Site": "cross-site",
                "Sec-Fetch-Mode": "navigate",
                "Origin": "https://evil.example",
            },
            403,
        ),
        # The page's own requests: same origin.
        ("POST", "/status/login", {"Sec-Fetch-Site": "same-origin", "Origin": "null"}, 303),
        (
            "GET",
            "/status/snapshot",
            {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"},
            200,
        ),
    ],
)
def test_the_browser_guard_lets_only_the_pages_own_requests_and_navigation_through(
    start_proxy: ProxyFactory, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    with start_proxy(admin_key=ADMIN) as proxy:
        data = {"admin_key": ADMIN} if method == "POST" else None
        response = httpx.request(method, f"{proxy.url}{path}", data=data, headers=headers)
        own = httpx.post(
            f"{proxy.url}/status/login",
            data={"admin_key": ADMIN},
            headers={"Origin": proxy.url, "Sec-Fetch-Site": "same-origin"},
        )
    assert response.status_code == status, response.text
    assert own.status_code == 303
