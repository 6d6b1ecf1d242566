"""/admin/* behind PROXY_ADMIN_KEY, GET /v1/usage, and the usage writer in the app's lifespan."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest

from app.main import create_app
from app.team.database import open_stores
from app.team.usage import UsageRecord, utc_day_start
from tests.conftest import make_settings
from tests.live_server import LiveServer

ADMIN = "admin-secret-for-tests"


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "proxy.db"


def serve(db_path, **overrides) -> LiveServer:
    return LiveServer(create_app(make_settings(db_path=db_path, **overrides)))


@pytest.fixture
def admin(db_path):
    with serve(db_path, admin_key=ADMIN) as server:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}
        ) as client:
            yield client


def test_admin_routes_do_not_exist_without_an_admin_key(db_path):
    with serve(db_path) as server:
        unknown = httpx.get(f"{server.url}/no-such-route")
        for method, route in [
            ("GET", "/admin/keys"),
            ("POST", "/admin/keys"),
            ("DELETE", "/admin/keys/alice"),
            ("GET", "/admin/usage"),
        ]:
            answer = httpx.request(
                method, f"{server.url}{route}", headers={"Authorization": "Bearer x"}
            )
            assert answer.status_code == 404, route
            assert answer.json() == unknown.json()


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN}, {"x-api-key": ADMIN}],
)
def test_wrong_or_missing_admin_key_is_401(db_path, headers):
    with serve(db_path, admin_key=ADMIN) as server:
        answer = httpx.get(f"{server.url}/admin/keys", headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "authentication_error"


def test_create_list_and_revoke_keys(admin):
    created = admin.post(
        "/admin/keys", json={"name": "alice", "rpm": 2, "models": ["*:free"], "paid": False}
    )
    assert created.status_code == 201
    body = created.json()
    assert re.fullmatch(r"sk-proxy-[A-Za-z0-9_-]{32,}", body["key"])
    assert body["limits"] == {"rpm": 2, "rpd": None, "tpd": None, "concurrency": None}
    assert body["models"] == ["*:free"] and body["revoked"] is None

    listed = admin.get("/admin/keys").json()["data"]
    assert [k["name"] for k in listed] == ["alice"]
    assert set(listed[0]) == {"name", "prefix", "created", "revoked", "limits", "models", "paid"}
    assert body["key"] not in admin.get("/admin/keys").text

    assert admin.post("/admin/keys", json={"name": "alice"}).status_code == 409
    revoked = admin.delete("/admin/keys/alice")
    assert revoked.status_code == 200 and revoked.json()["revoked"] is not None
    assert admin.delete("/admin/keys/bob").status_code == 404


@pytest.mark.parametrize(
    "body",
    [{"name": "x", "rpm": 0}, {"name": "has space"}, {"rpm": 1}, {"name": "x", "color": "red"}],
)
def test_invalid_key_requests_are_400(admin, body):
    answer = admin.post("/admin/keys", json=body)
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"


# Each a 400 naming the field: no loose conversion (true is not 1, "5" is not 5, "yes" is
# not true) and nothing SQLite cannot store (its INTEGER is 64 bits).
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "x", "rpm": True}, "rpm"),
        ({"name": "x", "rpm": "5"}, "rpm"),
        ({"name": "x", "rpd": 2.0}, "rpd"),
        ({"name": "x", "paid": "yes"}, "paid"),
        ({"name": "x", "paid": 1}, "paid"),
        ({"name": "x", "rpm": 1180591620717411303424}, "rpm"),
        ({"name": "x", "tpd": 2**63}, "tpd"),
        ({"name": "x", "concurrency": -1}, "concurrency"),
        ({"name": "x", "models": [1]}, "models"),
        ({"name": "x", "models": {"a": "b"}}, "models"),
        ({"name": 5}, "name"),
    ],
)
def test_key_fields_are_strictly_typed_and_bounded(admin, body, param):
    answer = admin.post("/admin/keys", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["message"].startswith(f"{param}: ")
    assert admin.get("/admin/keys").json()["data"] == []


def test_models_are_a_list_or_a_comma_separated_string_and_limits_reach_int64(admin):
    """The `models` choices of `keys create --models a,b`; the largest SQLite integer."""
    largest = 2**63 - 1
    as_list = admin.post("/admin/keys", json={"name": "a", "models": ["*:free", " b/* "]})
    as_text = admin.post("/admin/keys", json={"name": "b", "models": "*:free, b/*", "rpm": largest})
    assert as_list.status_code == as_text.status_code == 201, (as_list.text, as_text.text)
    assert as_list.json()["models"] == as_text.json()["models"] == ["*:free", "b/*"]
    assert as_text.json()["limits"]["rpm"] == largest


def test_v1_usage_needs_the_key_once_keys_exist_and_refuses_it_once_revoked(admin):
    assert admin.get("/v1/usage", headers={"Authorization": ""}).json()["key"] is None
    secret = admin.post("/admin/keys", json={"name": "alice", "rpd": 10, "tpd": 100}).json()["key"]
    mine = admin.get("/v1/usage", headers={"Authorization": f"Bearer {secret}"})
    assert mine.status_code == 200
    report = mine.json()
    assert report["key"] == "alice"
    assert report["limits"] == {"rpm": None, "rpd": 10, "tpd": 100, "concurrency": None}
    assert report["used"]["rpd"] == 0 and report["remaining"]["rpd"] == 10
    assert report["remaining"]["rpm"] is None
    assert report["resets_at"]["rpd"] is None  # nothing used: nothing to wait for
    assert admin.get("/v1/usage", headers={"Authorization": ""}).status_code == 401
    admin.delete("/admin/keys/alice")
    gone = admin.get("/v1/usage", headers={"Authorization": f"Bearer {secret}"})
    assert gone.status_code == 401 and "revoked" in gone.json()["error"]["message"]


def test_usage_recorded_during_a_run_is_written_at_shutdown_and_reported(db_path):
    with serve(db_path, admin_key=ADMIN) as server:
        team = server.app.state.services.team
        for _ in range(50):
            team.usage.record(
                UsageRecord(
                    time=utc_day_start(team.clock()) + 1,
                    key="alice",
                    route="/v1/chat/completions",
                    requested_model="free",
                    served_model="a/m:free",
                    attempts=1,
                    status=200,
                    stream=True,
                    cache="miss",
                    prompt_tokens=3,
                    completion_tokens=4,
                    cost=0.0,
                    latency_ms=5.0,
                    ttft_ms=2.0,
                )
            )

    async def today() -> tuple[int, int]:
        async with open_stores(db_path) as (_, usage):
            return await usage.today("alice", time.time())

    assert asyncio.run(today()) == (50, 350)  # the lifespan's shutdown flushed everything
    with serve(db_path, admin_key=ADMIN) as server:
        rows = httpx.get(
            f"{server.url}/admin/usage",
            params={"key": "alice", "days": 1},
            headers={"Authorization": f"Bearer {ADMIN}"},
        ).json()["data"]
    assert rows == [
        {
            "day": time.strftime("%Y-%m-%d", time.gmtime()),
            "key": "alice",
            "model": "a/m:free",
            "requests": 50,
            "errors": 0,
            "cache_hits": 0,
            "prompt_tokens": 150,
            "completion_tokens": 200,
            "cost": 0.0,
        }
    ]
