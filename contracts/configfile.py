"""Configuration file conventions every postedge service shares.

Files are TOML, validated by strict pydantic models (unknown keys are errors), and every
error names the file and the key. Values are never quoted in errors: a config file holds
passwords.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

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
