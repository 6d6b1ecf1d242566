"""Settings: environment, `.env`, or a `--config` TOML file, validated once at start-up.

Precedence (DESIGN §3): command-line flags, then the environment, then `.env`, then the
TOML file, then the defaults. Field names are the TOML names; each field's alias is the
environment name. Nothing here does I/O beyond reading the files it is pointed at.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from app.config_toml import TomlSource, read_toml
from app.errors import ConfigError

MIB = 1024 * 1024
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _setting(env: str, default: Any, description: str, **constraints: Any) -> Any:
    """A field readable as `env` from the environment and by its own name from TOML."""
    name = env.removeprefix("PROXY_").lower()
    return Field(
        default,
        validation_alias=AliasChoices(env, name),
        description=description,
        **constraints,
    )


class Settings(BaseSettings):
    """Every setting of the proxy; the README and `.env.example` list the same names."""

    model_config = SettingsConfigDict(
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
        allow_inf_nan=False,  # `inf` seconds or MiB would fail every request later
    )

    openrouter_api_key: SecretStr | None = _setting(
        "OPENROUTER_API_KEY", None, "Upstream key; without it chat answers 503."
    )
    openrouter_base_url: str = _setting(
        "OPENROUTER_BASE_URL", "https://openrouter.ai/api/v1", "Upstream API base URL."
    )
    openrouter_app_url: str = _setting(
        "OPENROUTER_APP_URL", "http://localhost", "Sent as HTTP-Referer (attribution)."
    )
    openrouter_app_title: str = _setting(
        "OPENROUTER_APP_TITLE", "openrouter-proxy", "Sent as X-Title and X-OpenRouter-Title."
    )
    host: str = _setting("PROXY_HOST", "127.0.0.1", "Bind address.")
    port: int = _setting("PROXY_PORT", 8080, "Bind port.", ge=1, le=65535)
    db_path: Path = _setting(
        "PROXY_DB_PATH",
        Path("./openrouter-proxy.db"),
        "SQLite file for keys and usage (when PROXY_DATABASE_URL is unset).",
    )
    database_url: SecretStr | None = _setting(
        "PROXY_DATABASE_URL",
        None,
        "postgresql://… : keys and usage in Postgres, for replicas on several machines.",
    )
    usage_retention_days: int = _setting(
        "PROXY_USAGE_RETENTION_DAYS",
        90,
        "Days usage records are kept (the daily totals are kept for good).",
        ge=1,
    )
    allow_open: bool = _setting(
        "PROXY_ALLOW_OPEN", False, "Allow a non-loopback bind while no client keys exist."
    )
    default_model: str = _setting(
        "PROXY_DEFAULT_MODEL", "free", "Model used when a request names none.", min_length=1
    )
    allow_paid: bool = _setting(
        "PROXY_ALLOW_PAID", False, "May `free` and fallback add priced models on their own."
    )
    max_wait: float = _setting(
        "PROXY_MAX_WAIT", 10.0, "Seconds a request may wait for a cooling model.", ge=0
    )
    connect_timeout: float = _setting(
        "PROXY_CONNECT_TIMEOUT", 5.0, "Seconds to connect upstream, per attempt.", gt=0
    )
    first_byte_timeout: float = _setting(
        "PROXY_FIRST_BYTE_TIMEOUT", 60.0, "Seconds until first content, per attempt.", gt=0
    )
    total_timeout: float = _setting(
        "PROXY_TOTAL_TIMEOUT", 600.0, "Seconds for a whole attempt, stream included.", gt=0
    )
    stream_first_token_timeout: float = _setting(
        "PROXY_STREAM_FIRST_TOKEN_TIMEOUT",
        15.0,
        "Seconds a stream may go without content before moving on, while another candidate "
        "remains (the last candidate gets PROXY_FIRST_BYTE_TIMEOUT).",
        gt=0,
    )
    stream_idle_timeout: float = _setting(
        "PROXY_STREAM_IDLE_TIMEOUT",
        60.0,
        "Seconds without a data event after the first content before a stream is ended.",
        gt=0,
    )
    max_attempts: int = _setting(
        "PROXY_MAX_ATTEMPTS", 10, "Upstream attempts one request may make.", ge=1
    )
    redis_url: str | None = _setting(
        "PROXY_REDIS_URL", None, "Shared state for several replicas (DESIGN §12)."
    )
    redis_fail: Literal["degraded", "closed", "open"] = _setting(
        "PROXY_REDIS_FAIL",
        "degraded",
        "Redis unreachable: `degraded` (limits divided by replicas), `closed` (503), `open`.",
    )
    redis_prefix: str = _setting(
        "PROXY_REDIS_PREFIX", "orp:", "Prefix of every Redis key the proxy writes.", min_length=1
    )
    admin_key: SecretStr | None = _setting(
        "PROXY_ADMIN_KEY", None, "Bearer for /admin/*; admin routes are off when unset."
    )
    cache: Literal["off", "deterministic", "all"] = _setting(
        "PROXY_CACHE", "deterministic", "`off`, `deterministic` (temperature 0 or seed), `all`."
    )
    cache_ttl: float = _setting("PROXY_CACHE_TTL", 3600.0, "Seconds a cached answer lives.", gt=0)
    cache_max_mb: float = _setting(
        "PROXY_CACHE_MAX_MB", 256.0, "Bound on the cache's measured size in MiB.", ge=0
    )
    cache_scope: Literal["key", "global"] = _setting(
        "PROXY_CACHE_SCOPE", "key", "`key`: entries private to a client key; `global`: shared."
    )
    upstream_rpm: int = _setting(
        "PROXY_UPSTREAM_RPM", 20, "Free-model requests per minute the account allows.", ge=1
    )
    upstream_rpd: int = _setting(
        "PROXY_UPSTREAM_RPD", 50, "Free-model requests per day the account allows.", ge=1
    )
    cors_origins: str = _setting(
        "PROXY_CORS_ORIGINS", "", "Browser origins allowed to call the proxy (comma list or *)."
    )
    allowed_hosts: str = _setting(
        "PROXY_ALLOWED_HOSTS", "", "Extra Host names accepted besides loopback and the bind host."
    )
    max_body_mb: float = _setting(
        "PROXY_MAX_BODY_MB", 20.0, "Largest accepted request body in MiB.", gt=0
    )
    log_format: Literal["text", "json"] = _setting(
        "PROXY_LOG_FORMAT", "text", "`json` gives one JSON line per request."
    )
    log_level: Literal["debug", "info", "warning", "error"] = _setting(
        "PROXY_LOG_LEVEL", "info", "Log level."
    )
    chains: dict[str, list[str]] = Field(
        default_factory=dict,
        description="TOML [chains]: model or alias -> models to try, in order.",
    )

    @field_validator("openrouter_api_key", mode="before")
    @classmethod
    def _blank_key_is_none(cls, value: Any) -> Any:
        return (value.strip() or None) if isinstance(value, str) else value

    @field_validator("admin_key", "redis_url", "database_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_format", "log_level", "cache", "cache_scope", "redis_fail", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator(
        "openrouter_api_key",
        "admin_key",
        "openrouter_base_url",
        "openrouter_app_url",
        "openrouter_app_title",
        "host",
        "default_model",
        "cors_origins",
        "allowed_hosts",
        "redis_url",
        "redis_prefix",
        "database_url",
        mode="before",
    )
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        """Keys and titles become header values: a line break would fail every request."""
        if isinstance(value, str) and not value.isprintable():
            raise ValueError("must not contain a line break or other control character")
        return value

    @field_validator("openrouter_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        try:
            parts = urllib.parse.urlsplit(value)
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError as exc:
            raise ValueError(f"is not a valid URL ({exc})") from None
        if not parts.hostname:
            raise ValueError("has no host name")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("postgresql://", "postgres://")
        ):
            raise ValueError("must start with postgresql:// (SQLite is set by PROXY_DB_PATH)")
        return value

    @field_validator("host")
    @classmethod
    def _bind_host(cls, value: str) -> str:
        """An IP literal, `localhost` or a DNS name; anything else would fail in uvicorn."""
        try:
            ipaddress.ip_address(value.strip("[]"))
            return value
        except ValueError:
            pass
        if len(value) <= 253 and all(_DNS_LABEL.fullmatch(p) for p in value.split(".")):
            return value
        raise ValueError("must be an IP address, localhost or a host name")

    @field_validator("chains")
    @classmethod
    def _non_empty_chains(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, models in value.items():
            if not models or not all(isinstance(m, str) and m for m in models):
                raise ValueError(f"chain '{name}' must be a non-empty list of model ids")
        return value

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * MIB)

    @property
    def upstream_key(self) -> str | None:
        return self.openrouter_api_key.get_secret_value() if self.openrouter_api_key else None


def env_name(field_name: str) -> str:
    """The environment name users know a field by (`max_wait` -> `PROXY_MAX_WAIT`)."""
    info = Settings.model_fields.get(field_name)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return field_name


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings once; raise ConfigError with a one-line reason when invalid."""
    toml_values = read_toml(config_file, Settings.model_fields) if config_file else {}

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, dotenv_settings, TomlSource(cls, toml_values))

    try:
        return _Loaded(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming the first bad setting, its value and why it is wrong."""
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else "?"
    reason = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    secret = env_name(field) in ("OPENROUTER_API_KEY", "PROXY_ADMIN_KEY", "PROXY_DATABASE_URL")
    shown = "" if secret or isinstance(value, dict) else f" (got {value!r})"
    return f"invalid setting {env_name(field)}: {reason}{shown}"
