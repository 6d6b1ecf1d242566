"""Settings: validated once, one line per mistake, and every one documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import Settings, env_name, load_settings
from app.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def documented_names(text: str) -> set[str]:
    return set(re.findall(r"\b((?:PROXY|OPENROUTER)_[A-Z_]+)\b", text))


def setting_names() -> set[str]:
    return {env_name(name) for name in Settings.model_fields if name != "chains"}


def test_every_setting_is_in_env_example_commented_at_its_default():
    example = (ROOT / ".env.example").read_text()
    assert setting_names() <= documented_names(example)
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    for name in setting_names() - {"OPENROUTER_API_KEY"}:
        line = re.search(rf"^# {name}=(.*)$", example, re.M)
        assert line, f"{name} must be commented out at its default"
        field = name.removeprefix("PROXY_").lower()
        parsed = Settings(_env_file=None, **{field: line.group(1)})  # type: ignore[call-arg]
        assert getattr(parsed, field) == getattr(defaults, field), name
    assert re.search(r"^OPENROUTER_API_KEY=$", example, re.M)


def test_every_setting_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    table_rows = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, re.M))
    assert setting_names() <= table_rows


def test_env_example_names_nothing_the_app_does_not_read():
    example = (ROOT / ".env.example").read_text()
    assert documented_names(example) <= setting_names()


@pytest.mark.parametrize(
    ("env", "words"),
    [
        (
            {"PROXY_MAX_WAIT": "soon"},
            "invalid setting PROXY_MAX_WAIT: Input should be a valid number",
        ),
        (
            {"PROXY_TOTAL_TIMEOUT": "-5"},
            "invalid setting PROXY_TOTAL_TIMEOUT: Input should be greater than 0",
        ),
        ({"PROXY_MAX_BODY_MB": "0"}, "invalid setting PROXY_MAX_BODY_MB"),
        (
            {"PROXY_PORT": "70000"},
            "invalid setting PROXY_PORT: Input should be less than or equal to 65535",
        ),
        (
            {"PROXY_LOG_FORMAT": "xml"},
            "invalid setting PROXY_LOG_FORMAT: Input should be 'text' or 'json'",
        ),
        ({"PROXY_ALLOW_PAID": "perhaps"}, "invalid setting PROXY_ALLOW_PAID"),
        (
            {"OPENROUTER_BASE_URL": "openrouter.ai"},
            "invalid setting OPENROUTER_BASE_URL: must start with http",
        ),
    ],
)
def test_invalid_settings_are_one_line_naming_the_setting(monkeypatch, env, words):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert str(raised.value).startswith(words)
    assert "\n" not in str(raised.value)


def test_secret_values_are_never_echoed(monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-secret")
    settings = load_settings()
    assert "sk-or-v1-secret" not in repr(settings) and "sk-or-v1-secret" not in str(settings)
    assert settings.upstream_key == "sk-or-v1-secret"


def test_precedence_flags_env_dotenv_toml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "proxy.toml").write_text(
        "max_wait = 1\nconnect_timeout = 2\nfirst_byte_timeout = 3\nport = 9001\n"
        '[chains]\nfast = ["a/b:free", "free"]\n'
    )
    (tmp_path / ".env").write_text("PROXY_CONNECT_TIMEOUT=20\nPROXY_FIRST_BYTE_TIMEOUT=30\n")
    monkeypatch.setenv("PROXY_FIRST_BYTE_TIMEOUT", "300")
    settings = load_settings(tmp_path / "proxy.toml", port=9999)
    assert settings.max_wait == 1  # TOML over the default
    assert settings.connect_timeout == 20  # .env over TOML
    assert settings.first_byte_timeout == 300  # environment over .env
    assert settings.port == 9999  # flag over everything
    assert settings.chains == {"fast": ["a/b:free", "free"]}


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ("max_wait = [", "is not valid TOML"),
        ("max_waiting = 3", "unknown setting 'max_waiting'"),
        ("max_wait = -1", "invalid setting PROXY_MAX_WAIT"),
        ("[chains]\nfast = []", "chain 'fast' must be a non-empty list"),
    ],
)
def test_bad_config_files_are_one_line(tmp_path, toml, words):
    path = tmp_path / "proxy.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_settings(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_cli_prints_one_line_and_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve"],
        env={"PROXY_MAX_WAIT": "-3", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "openrouter-proxy: invalid setting PROXY_MAX_WAIT: "
        "Input should be greater than or equal to 0 (got '-3')"
    ]
    assert result.stdout == ""
