"""The errors of ``firmware_bridge``: callers catch these, never pymodbus' or pyserial's.

Library exceptions are translated where this package meets them (see :func:`map_exceptions`),
so the edge agent can tell an unplugged adapter from a silent or a garbling device without
knowing which library sits underneath.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping


class BridgeError(Exception):
    """Root of every error a device driver raises."""


class DeviceUnavailable(BridgeError):
    """The port cannot be opened, or it vanished (adapter unplugged, simulator gone)."""


class DeviceTimeout(BridgeError):
    """The device sent nothing back in time: off the bus, wrong address, or dropped frame."""


class DeviceProtocolError(BridgeError):
    """The device answered, but not usefully: exception response, bad CRC or frame, wrong length."""


ExceptionMapping = Mapping[type[BaseException], type[BridgeError]]


@contextlib.contextmanager
def map_exceptions(mapping: ExceptionMapping) -> Iterator[None]:
    """Re-raise library exceptions as bridge errors, keeping the original as the cause.

    The first matching entry wins, so list subclasses before their bases. Exceptions that
    match nothing pass through unchanged: they are bugs, not device faults.
    """
    try:
        yield
    except Exception as exc:
        for source, target in mapping.items():
            if isinstance(exc, source):
                raise target(str(exc)) from exc
        raise
