"""Model ids a client makes up leave no per-model state behind (DESIGN §6, §11): neither
the cooldown store nor the metrics keep them, whether the upstream serves them or rejects
them as invalid. Counted, through the real proxy in front of the fake OpenRouter."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from app.deps import Services
from app.main import create_app
from app.metrics import MAX_PENDING
from tests.conftest import make_settings
from tests.fake_openrouter import SCOUT, FakeOpenRouter, Reply
from tests.live_server import LiveServer

HELLO = [{"role": "user", "content": "hi"}]
# Label sets that stay whatever the ids: one series of `other` or `none` per route,
# status, cache result or outcome these requests meet.
FIXED_SERIES = 4


@contextmanager
def proxy(fake_server: LiveServer) -> Iterator[tuple[httpx.Client, Services]]:
    app = create_app(make_settings(fake_server.url))
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=20) as client:
        yield client, app.state.services


def chat(client: httpx.Client, model: str) -> int:
    response = client.post("/v1/chat/completions", json={"model": model, "messages": HELLO})
    return response.status_code


def test_made_up_ids_the_upstream_serves_are_not_remembered(
    fake: FakeOpenRouter, fake_server: LiveServer
) -> None:
    made_up = [f"acme/made-up-{i}" for i in range(400)]
    for model in made_up:
        fake.set_default(model, Reply())  # the upstream serves ids it does not list
    with proxy(fake_server) as (client, services):
        statuses = {chat(client, model) for model in made_up}
        held_models = len(services.cooldowns)
        waiting = len(services.metrics)  # the catalogue is unknown: counts wait for labels
        text = client.get("/metrics").text  # which loads it
        held_series = len(services.metrics)
        client.get("/v1/models")  # the catalogue is known now: its models are ranked
        served = chat(client, SCOUT)
        remembered = len(services.cooldowns)

    assert statuses == {200}
    assert held_models == 0
    assert waiting <= FIXED_SERIES + 2 * MAX_PENDING, waiting  # requests and attempts
    assert held_series <= FIXED_SERIES, held_series
    assert "acme/" not in text  # every one of them counted under `other`
    assert served == 200 and remembered == 1  # a catalogue model's latency is still kept


def test_long_made_up_ids_the_upstream_rejects_are_held_nowhere(
    fake_server: LiveServer,
) -> None:
    made_up = [f"acme/{i:04d}-{'x' * 3000}" for i in range(300)]
    with proxy(fake_server) as (client, services):
        statuses = {chat(client, model) for model in made_up}
        held_models = len(services.cooldowns)
        held_series = len(services.metrics)

    assert statuses == {400}  # "… is not a valid model ID", relayed
    assert held_models == 0
    assert held_series <= FIXED_SERIES, held_series
