"""Configuration file conventions every postedge service shares.

Files are TOML, validated by strict pydantic models (unknown keys are errors), and every
error names the file and the key. Values are never quoted in errors: a config file holds
passwords.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigFileError(ValueError):
    """A configuration file that cannot be read or does not validate."""


def load_toml_model(path: Path, model: type[ModelT]) -> ModelT:
    """Read ``path`` and validate it as ``model``; raise :class:`ConfigFileError`."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigFileError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path}: not valid TOML: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigFileError(describe_validation_error(path, exc)) from None


def describe_validation_error(path: Path, exc: ValidationError) -> str:
    """One line per problem: ``file: key.path: message``."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"{path}: {key}: {error['msg']}")
    return "\n".join(lines)


def resolve(base: Path, path: Path) -> Path:
    """``path`` relative to the directory of the config file it was written in."""
    return path if path.is_absolute() else base / path


def resolve_sqlite_url(base: Path, url: str) -> str:
    """A ``sqlite:///relative`` URL made relative to the config file's directory; other
    URLs (absolute SQLite paths, PostgreSQL) unchanged."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        return prefix + str(resolve(base, Path(url[len(prefix) :])))
    return url


def _known_time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (e.g. Asia/Shanghai)") from None
    return name


TimeZoneName = Annotated[str, AfterValidator(_known_time_zone)]
"""An IANA time zone name that this machine knows."""
