"""The `--config` TOML file as a settings source, ranked below the environment and `.env`
(DESIGN §3)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from app.errors import ConfigError


def read_toml(path: Path, known: Collection[str]) -> dict[str, Any]:
    """The file's settings by field name; ConfigError naming the file when it cannot be
    used, or names a setting that is not one of `known`."""
    import tomllib  # only `--config` reads TOML: a serving process without it never does

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting '{unknown[0]}'")
    return data


class TomlSource(PydanticBaseSettingsSource):
    """The TOML file's values, ranked below the environment and `.env`."""

    def __init__(self, settings_cls: type[BaseSettings], values: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._values = values

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)
