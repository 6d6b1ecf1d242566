"""What goes up, byte for byte (DESIGN §5): the client's body except `model` and `models`,
the client's header bytes, and OpenRouter's opt-in headers (the cache ones only when the
cache could not be shared across the team)."""

from __future__ import annotations

import httpx
import pytest

from app.team.store import Team
from tests.conftest import ProxyFactory
from tests.fake_openrouter import MISTRAL, SCOUT, FakeOpenRouter, provider_429
from tests.polling import wait_until

HELLO = [{"role": "user", "content": "hi"}]
OPT_INS = {
    "x-session-id": "session-42",
    "x-openrouter-metadata": "enabled",
    "x-openrouter-categories": "cli-agent,programming-app",
}
OPENROUTER_CACHE = {"x-openrouter-cache": "true", "x-openrouter-cache-ttl": "60"}


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param(
            b'{"model": "pair", "messages": %s, "big": 123456789012345678901234567890}', id="alias"
        ),
        pytest.param(
            b'{"model": "%s", "models": ["%s"], "messages": %s, '
            b'"big": 123456789012345678901234567890, "x": 0.10000000000000000555}',
            id="models",
        ),
    ],
)
def test_the_body_goes_up_as_sent_but_for_model_and_models(
    start_proxy: ProxyFactory, fake: FakeOpenRouter, shape: bytes
):
    fake.script(SCOUT, provider_429(SCOUT))
    hello = b'[{"role": "user", "content": "hi"}]'
    if b'"models"' in shape:
        body = shape % (SCOUT.encode(), MISTRAL.encode(), hello)
    else:
        body = shape % hello

    with start_proxy(chains={"pair": [SCOUT, MISTRAL]}, max_wait=0) as proxy:
        response = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            content=body,
            headers={"content-type": "application/json"},
            timeout=20,
        )

    assert response.status_code == 200, response.text
    first, second = fake.chat_requests()
    for sent, model in ((first, SCOUT), (second, MISTRAL)):
        assert b"123456789012345678901234567890" in sent.body  # not 1.2345678901234568e+29
        assert f'"model":"{model}"'.encode() in sent.body
        assert b'"models"' not in sent.body
    if b"0.10000000000000000555" in body:
        assert b"0.10000000000000000555" in second.body  # more digits than a double holds


def test_header_bytes_go_up_as_the_clients_bytes(start_proxy: ProxyFactory, fake: FakeOpenRouter):
    title, referer = "Café ☕ app", "https://exämple.org/ü"
    with start_proxy() as proxy:
        response = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            json={"model": SCOUT, "messages": HELLO},
            headers={"X-Title": title.encode(), "HTTP-Referer": referer.encode()},
            timeout=20,
        )
        not_utf8 = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            json={"model": SCOUT, "messages": HELLO},
            headers={"X-Title": b"caf\xe9"},  # latin-1, not UTF-8: dropped, not mangled
            timeout=20,
        )

    assert response.status_code == 200 and not_utf8.status_code == 200
    sent, fallback = fake.chat_requests()
    # Starlette hands the fake latin-1 text: encoding it back gives the bytes on the wire.
    assert sent.headers["x-title"].encode("latin-1") == title.encode()
    assert sent.headers["x-openrouter-title"].encode("latin-1") == title.encode()
    assert sent.headers["http-referer"].encode("latin-1") == referer.encode()
    assert fallback.headers["x-title"] == "openrouter-proxy"  # the configured title instead


def test_openrouter_opt_in_headers_go_up_and_its_cache_only_when_not_shared(
    start_proxy: ProxyFactory, fake: FakeOpenRouter
):
    headers = {**OPT_INS, **OPENROUTER_CACHE}

    def ask(url: str, key: str | None = None) -> None:
        auth = {"Authorization": f"Bearer {key}"} if key else {}
        response = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": SCOUT, "messages": HELLO},
            headers={**headers, **auth},
            timeout=20,
        )
        assert response.status_code == 200, response.text

    with start_proxy() as proxy:
        ask(proxy.url)  # open mode: nothing to share the cache with
        team = Team(proxy.app.state.services.settings.db_path)
        secret = team.keys.create("alice")
        # Seen by the server within a second (DESIGN §2): anonymous callers are refused.
        wait_until(lambda: httpx.get(f"{proxy.url}/v1/usage").status_code == 401)
        ask(proxy.url, secret)  # key mode, per-key cache scope: OpenRouter's would be shared
    with start_proxy(cache_scope="global") as proxy:
        ask(proxy.url)

    open_mode, key_mode, global_scope = fake.chat_requests()
    for sent in (open_mode, key_mode, global_scope):
        for name, value in OPT_INS.items():
            assert sent.headers[name] == value
    for name, value in OPENROUTER_CACHE.items():
        assert open_mode.headers[name] == value
        assert global_scope.headers[name] == value
        assert name not in key_mode.headers
