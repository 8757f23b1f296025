"""Log output for people (text on stderr) and for machines (JSON lines on stdout).

A station box runs the edge agent under systemd, and journald keeps whatever the service
writes to stdout, one entry per line. With ``postedge --log-format json`` every record is
one JSON object on one line, so ``journalctl -u postedge-edge -o cat | jq`` can filter by
level, logger or any field a call passes with ``extra={...}`` (``device``, ``station``).

Personal data is never logged: the formatter writes the formatted message and the extras
a call chose to pass, and nothing else from the record (no raw ``args``, no payloads), so
what reaches the journal is exactly what the calling code decided to say.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final, Literal, TextIO

LogFormat = Literal["text", "json"]
LOG_FORMATS: Final[tuple[LogFormat, ...]] = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
# ``message`` and ``asctime`` are set by Formatter.format, ``taskName`` by Python 3.12+.
_RECORD_ATTRIBUTES: Final = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))
) | {"message", "asctime", "taskName"}
_CORE_KEYS: Final = frozenset({"ts", "level", "logger", "msg", "exc", "stack"})


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``msg``, then the extras.

    ``ts`` is UTC with milliseconds and a ``Z`` (``2026-11-25T08:15:02.123Z``). ``exc``
    holds the formatted traceback when the record has one, ``stack`` the stack when the
    call asked for it. Extras that JSON cannot hold are written as their ``repr``, so a
    careless ``extra=`` never costs the log line; an extra named like a core key is
    written as ``x_<name>`` instead of replacing it. Text stays readable UTF-8.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key in _RECORD_ATTRIBUTES:
                continue
            entry[f"x_{key}" if key in _CORE_KEYS else key] = _jsonable(value)
        return json.dumps(entry, ensure_ascii=False, allow_nan=False)


def _utc_timestamp(created: float) -> str:
    moment = datetime.fromtimestamp(created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _jsonable(value: object) -> object:
    """``value`` itself if JSON can hold it as it is, else its ``repr``."""
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return repr(value)
    return value


def log_handler(fmt: LogFormat, stream: TextIO | None = None) -> logging.Handler:
    """The handler for ``--log-format``: text on stderr, or JSON lines on stdout.

    ``stream`` overrides the default stream (tests). The stream is looked up when the
    handler is made, so pytest's captured ``sys.stdout`` is honoured.
    """
    if fmt == "json":
        handler = logging.StreamHandler(stream or sys.stdout)
        handler.setFormatter(JsonFormatter())
    elif fmt == "text":
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    else:
        raise ValueError(f"unknown log format {fmt!r}; expected one of {LOG_FORMATS}")
    return handler
