"""No web page may spend the key (DESIGN §5): foreign origins, cross-site requests and
foreign `Host` names get 403 before anything reaches upstream; trusted origins get CORS."""

from __future__ import annotations

import httpx
import pytest

from app.server.browser import EXPOSED_HEADERS, HostPolicy
from tests.conftest import ProxyFactory
from tests.fake_openrouter import SCOUT, FakeOpenRouter
from tests.live_server import LiveServer

CHAT = {"model": SCOUT, "messages": [{"role": "user", "content": "hi"}]}
TRUSTED = "https://chat.example"


def post_text_plain(url: str, **headers: str) -> httpx.Response:
    """What a page can send without a CORS preflight: a `text/plain` POST."""
    return httpx.post(
        f"{url}/v1/chat/completions",
        content=httpx.Request("POST", url, json=CHAT).content,
        headers={"Content-Type": "text/plain", **headers},
    )


def assert_refused(response: httpx.Response, setting: str) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["type"] == "permission_error" and setting in error["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},  # a no-cors request, no Origin sent
        {"Origin": "null"},  # sandboxed iframes and file:// pages
    ],
)
def test_a_foreign_page_cannot_spend_the_key(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, headers: dict[str, str]
) -> None:
    with start_proxy(cors_origins=TRUSTED) as proxy:
        assert_refused(post_text_plain(proxy.url, **headers), "PROXY_CORS_ORIGINS")
        listing = httpx.get(f"{proxy.url}/v1/models", headers=headers)
        assert_refused(listing, "PROXY_CORS_ORIGINS")
    assert fake.served_requests() == []


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8080", "10.0.0.1"])
def test_a_dns_rebinding_host_is_refused(
    proxy: LiveServer, fake: FakeOpenRouter, host: str
) -> None:
    response = post_text_plain(proxy.url, Host=host)
    assert_refused(response, "PROXY_ALLOWED_HOSTS")
    assert_refused(httpx.get(f"{proxy.url}/v1/models", headers={"Host": host}), "ALLOWED_HOSTS")
    assert fake.served_requests() == []


@pytest.mark.parametrize("host", ["localhost:8080", "127.0.0.1", "[::1]:8080", "app.localhost"])
def test_loopback_hosts_are_served(proxy: LiveServer, host: str) -> None:
    assert post_text_plain(proxy.url, Host=host).status_code == 200


def test_allowed_hosts_opens_named_hosts(start_proxy: ProxyFactory) -> None:
    with start_proxy(allowed_hosts="proxy.lan, other.lan") as proxy:
        assert post_text_plain(proxy.url, Host="proxy.lan:8080").status_code == 200
        assert post_text_plain(proxy.url, Host="evil.lan").status_code == 403
    with start_proxy(allowed_hosts="*") as proxy:
        assert post_text_plain(proxy.url, Host="anything.example").status_code == 200


def test_clients_without_origin_are_unaffected(client) -> None:
    answer = client.chat.completions.create(model=SCOUT, messages=CHAT["messages"])
    assert answer.choices[0].message.content


def test_a_trusted_origin_gets_cors_for_preflight_answer_and_stream(
    start_proxy: ProxyFactory,
) -> None:
    with start_proxy(cors_origins=f"https://other.example, {TRUSTED}/") as proxy:
        preflight = httpx.options(
            f"{proxy.url}/v1/chat/completions",
            headers={
                "Origin": TRUSTED,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, x-title",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == TRUSTED
        assert "POST" in preflight.headers["access-control-allow-methods"]
        allowed = preflight.headers["access-control-allow-headers"]
        assert allowed == "authorization, content-type, x-title"

        headers = {"Origin": TRUSTED, "Sec-Fetch-Site": "cross-site"}
        answer = httpx.post(f"{proxy.url}/v1/chat/completions", json=CHAT, headers=headers)
        assert answer.status_code == 200
        assert_cors(answer)

        with httpx.stream(
            "POST",
            f"{proxy.url}/v1/chat/completions",
            json={**CHAT, "stream": True},
            headers=headers,
        ) as stream:
            body = stream.read()
        assert stream.status_code == 200 and body.endswith(b"data: [DONE]\n\n")
        assert_cors(stream)

        refused = httpx.post(
            f"{proxy.url}/v1/chat/completions", json=CHAT, headers={"Origin": "https://x.example"}
        )
        assert refused.status_code == 403


def assert_cors(response: httpx.Response) -> None:
    assert response.headers["access-control-allow-origin"] == TRUSTED
    assert "Origin" in response.headers["vary"]
    exposed = {
        h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
    }
    for name in ("x-proxy-model", "x-proxy-attempts", "x-request-id", "retry-after"):
        assert name in exposed
    assert any(h.startswith("x-ratelimit-") for h in exposed)
    assert response.headers["x-proxy-model"] == SCOUT


def test_a_star_allows_every_origin(start_proxy: ProxyFactory) -> None:
    with start_proxy(cors_origins="*") as proxy:
        answer = post_text_plain(proxy.url, Origin="https://any.example")
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "https://any.example"
    assert answer.headers["access-control-expose-headers"] == EXPOSED_HEADERS


def test_a_loopback_bind_accepts_loopback_addresses_only() -> None:
    policy = HostPolicy("127.0.0.1", "")
    assert policy.allows("127.0.0.2:80") and not policy.allows("192.168.1.5")


def test_a_wildcard_bind_accepts_ip_literals_but_no_foreign_name() -> None:
    """Docker binds 0.0.0.0: its own addresses are IP literals, which cannot be rebound."""
    policy = HostPolicy("0.0.0.0", "")
    assert policy.allows("172.17.0.2:8080") and policy.allows("[fe80::1]:8080")
    assert policy.allows("localhost:8080")
    assert not policy.allows("attacker.example")
    named = HostPolicy("proxy.internal", "")
    assert named.allows("PROXY.internal.:8080") and not named.allows("10.0.0.1")
