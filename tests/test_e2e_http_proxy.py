"""Behind a corporate proxy: HTTP(S)_PROXY and NO_PROXY are honoured, read once at start."""

from __future__ import annotations

import httpx
import pytest

from app.main import create_app
from app.upstream.transport import proxy_for
from tests.conftest import make_settings
from tests.fake_openrouter import SCOUT, FakeOpenRouter, Reply
from tests.live_server import LiveServer


@pytest.fixture
def no_proxy_env(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def test_upstream_requests_go_through_the_configured_proxy(
    no_proxy_env, fake: FakeOpenRouter, fake_server: LiveServer
):
    # The fake plays the forward proxy (uvicorn accepts the absolute-form request line):
    # the upstream host does not resolve, so only a request sent via the proxy can answer.
    no_proxy_env.setenv("HTTP_PROXY", fake_server.url)
    fake.script(SCOUT, Reply(content="via the proxy"))
    app = create_app(make_settings("http://openrouter.invalid"))
    with LiveServer(app) as proxy, httpx.Client(trust_env=False) as client:
        response = client.post(
            f"{proxy.url}/v1/chat/completions",
            json={"model": SCOUT, "messages": [{"role": "user", "content": "hi"}]},
        )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "via the proxy"
    (sent,) = fake.chat_requests()
    assert sent.headers["host"] == "openrouter.invalid"


def test_no_proxy_exempts_the_upstream_host(no_proxy_env):
    no_proxy_env.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert proxy_for("https://openrouter.ai/api/v1") == "http://proxy.example:3128"
    assert proxy_for("http://127.0.0.1:8090/api/v1") is None  # a local fake: never proxied
    no_proxy_env.setenv("NO_PROXY", "openrouter.ai")
    assert proxy_for("https://openrouter.ai/api/v1") is None
