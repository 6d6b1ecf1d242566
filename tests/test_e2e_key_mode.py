"""Key mode on the routes outside the pipeline: once a client key exists, /v1/models needs
one too (DESIGN §7), and the `models` command reads it with the admin key."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from app.team.store import Team
from tests.conftest import ProxyFactory
from tests.fake_openrouter import SCOUT
from tests.polling import wait_until

ADMIN = "admin-secret-for-the-models-command"


def test_models_need_a_client_key_or_the_admin_key_once_keys_exist(start_proxy: ProxyFactory):
    with start_proxy(admin_key=ADMIN) as proxy:
        settings = proxy.app.state.services.settings
        team = Team(settings.db_path)
        secret = team.keys.create("alice")
        team.keys.close()
        team.keyring.close()
        # A running server sees a new key within one second (DESIGN §2).
        wait_until(lambda: httpx.get(f"{proxy.url}/v1/usage").status_code == 401)
        anonymous = httpx.get(f"{proxy.url}/v1/models/{SCOUT}", timeout=10)
        with_key = httpx.get(
            f"{proxy.url}/v1/models", headers={"Authorization": f"Bearer {secret}"}, timeout=10
        )
        env = {
            **os.environ,
            "PROXY_PORT": str(proxy.port),
            "PROXY_ADMIN_KEY": ADMIN,
            "PROXY_DB_PATH": str(settings.db_path),
            "OPENROUTER_BASE_URL": "http://127.0.0.1:9/api/v1",  # not reachable: server only
        }
        listed = subprocess.run(
            [sys.executable, "-m", "app", "models", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error"
    assert with_key.status_code == 200 and SCOUT in {m["id"] for m in with_key.json()["data"]}
    assert listed.returncode == 0, listed.stderr
    assert '"cooldown_until"' in listed.stdout and SCOUT in listed.stdout


def test_a_request_refused_for_its_model_counts_toward_no_limit(start_proxy: ProxyFactory):
    """DESIGN §7: rejected requests do not count; a 403 must not use up the key's rpm."""
    with start_proxy() as proxy:
        team = Team(proxy.app.state.services.settings.db_path)
        secret = team.keys.create("bob", rpm=1, models=["*:free"])
        team.keys.close()
        team.keyring.close()
        # A running server sees a new key within one second (DESIGN §2).
        wait_until(lambda: httpx.get(f"{proxy.url}/v1/usage").status_code == 401)
        auth = {"Authorization": f"Bearer {secret}"}

        def ask(model: str) -> httpx.Response:
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
            return httpx.post(f"{proxy.url}/v1/chat/completions", json=body, headers=auth)

        refused = ask("openai/gpt-4o-mini")
        allowed = ask(SCOUT)
        over = ask(SCOUT)

    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "model_not_allowed"
    assert refused.headers["x-ratelimit-remaining-requests"] == "1"
    assert allowed.status_code == 200, allowed.text
    assert over.status_code == 429 and "rpm limit of 1" in over.json()["error"]["message"]
