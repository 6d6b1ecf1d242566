"""Every bad setting stops start-up with one line naming it, exit status ≠ 0 (DESIGN §3)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def serve(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PROXY_", "OPENROUTER_"))}
    return subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", "1", *args],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"PROXY_CONNECT_TIMEOUT": "inf"}, "PROXY_CONNECT_TIMEOUT"),
        ({"PROXY_CONNECT_TIMEOUT": "nan"}, "PROXY_CONNECT_TIMEOUT"),
        ({"PROXY_MAX_BODY_MB": "inf"}, "PROXY_MAX_BODY_MB"),
        ({"PROXY_MAX_WAIT": "-inf"}, "PROXY_MAX_WAIT"),
        ({"OPENROUTER_API_KEY": "sk-or-v1-abc\ndef"}, "OPENROUTER_API_KEY"),
        ({"PROXY_ADMIN_KEY": "admin\r\nsecret"}, "PROXY_ADMIN_KEY"),
        ({"OPENROUTER_APP_TITLE": "My app\nX-Evil: 1"}, "OPENROUTER_APP_TITLE"),
        ({"OPENROUTER_APP_URL": "http://a\rb"}, "OPENROUTER_APP_URL"),
        ({"OPENROUTER_BASE_URL": "http://[::1"}, "OPENROUTER_BASE_URL"),
        ({"OPENROUTER_BASE_URL": "http://localhost:99999/api"}, "OPENROUTER_BASE_URL"),
        ({"OPENROUTER_BASE_URL": "http:///api/v1"}, "OPENROUTER_BASE_URL"),
        ({"PROXY_HOST": "not a host"}, "PROXY_HOST"),
        ({"PROXY_HOST": "-bad-.example"}, "PROXY_HOST"),
    ],
)
def test_a_bad_setting_is_one_line_and_a_failure(
    tmp_path: Path, env: dict[str, str], setting: str
) -> None:
    result = serve(tmp_path, env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"openrouter-proxy: invalid setting {setting}: ")
    assert "secret" not in lines[0] and "sk-or" not in lines[0]


@pytest.mark.parametrize(
    ("toml", "setting"),
    [
        ("connect_timeout = inf", "PROXY_CONNECT_TIMEOUT"),
        ("max_body_mb = inf", "PROXY_MAX_BODY_MB"),
        ("total_timeout = nan", "PROXY_TOTAL_TIMEOUT"),
        ('openrouter_app_title = "a\\nb"', "OPENROUTER_APP_TITLE"),
    ],
)
def test_a_bad_toml_setting_is_one_line_and_a_failure(
    tmp_path: Path, toml: str, setting: str
) -> None:
    (tmp_path / "proxy.toml").write_text(toml + "\n")
    result = serve(tmp_path, {}, "--config", "proxy.toml")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"openrouter-proxy: invalid setting {setting}")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "proxy.internal"])
def test_good_bind_hosts_are_accepted(
    host: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.config import load_settings

    monkeypatch.chdir(tmp_path)  # no .env
    assert load_settings(host=host).host == host
