"""Why a device link is down, in words: failure causes, their log lines, and the backoff.

paho raises nothing for several failures (a broker that rejects our client certificate
closes the connection after the handshake; an ACL denial is only a PUBACK reason code),
so the link turns each into one plain cause and :class:`LinkReport` logs it once, not
once per retry. Pure functions and small classes, tested without a broker.
"""

from __future__ import annotations

import logging
import random
import re
import socket
import ssl

from paho.mqtt.reasoncodes import ReasonCode

from contracts.mqtt import reason_text

log = logging.getLogger("edge.link")  # the link's own log lines, wherever they are made

_SSL_TEXT = re.compile(r"\[[A-Z0-9_]+(?:: \w+)?\] (.*?)(?: \(_ssl\.c:\d+\))?$")


class Backoff:
    """Jittered exponential backoff: each delay is drawn from ``[d/2, d]``, and ``d`` doubles
    from ``minimum`` up to ``maximum`` and returns to ``minimum`` on :meth:`reset`.

    Half the delay is kept so a station never hammers the broker, half is random so
    stations that lost the broker together spread out when they retry.
    """

    def __init__(self, minimum: float, maximum: float, rng: random.Random) -> None:
        self._minimum = minimum
        self._maximum = maximum
        self._rng = rng
        self._nominal = minimum

    def next(self) -> float:
        nominal = self._nominal
        self._nominal = min(nominal * 2, self._maximum)
        return self._rng.uniform(nominal / 2, nominal)

    def reset(self) -> None:
        self._nominal = self._minimum


def connect_failure(exc: BaseException, where: str, *, timeout_s: float, tls: bool) -> str:
    """The cause of a failed connect for one log line; ``tls`` says the TCP connection was
    made and the TLS handshake failed."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS failure: certificate verify failed: {exc.verify_message} (broker {where})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failure: {ssl_text(str(exc))} (broker {where})"
    if tls and isinstance(exc, OSError):
        reason = exc.strerror or type(exc).__name__
        return f"TLS failure: handshake with {where} failed: {reason} (is it a TLS port?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve broker host {where.rpartition(':')[0]}: {exc.strerror}"
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot reach broker {where}: connection refused"
    if isinstance(exc, TimeoutError):
        return f"cannot reach broker {where}: no answer within {timeout_s:g} s"
    if isinstance(exc, OSError):
        return f"cannot reach broker {where}: {exc.strerror or type(exc).__name__}"
    return f"cannot connect to broker {where}: {type(exc).__name__}: {exc}"


def ssl_text(message: str) -> str:
    """``tlsv1 alert unknown ca`` from ``[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown
    ca (_ssl.c:1006)``; other text unchanged."""
    found = _SSL_TEXT.search(message)
    return found.group(1) if found else message


def refusal_cause(reason: ReasonCode) -> str:
    """The cause of a CONNACK refusal, with a hint where the code has a usual culprit."""
    hint = {134: " (wrong password?)", 135: " (wrong password or unknown user?)"}
    hint_text = hint.get(reason.value, "")
    return f"broker refused the connection: {reason_text(reason)}{hint_text}"


class LinkReport:
    """The link's log lines: one ERROR per distinct failure cause (then silence while it
    repeats), one WARNING when an established connection is lost, one INFO on (re)connect."""

    def __init__(self, name: str, where: str) -> None:
        self._name = name
        self._where = where
        self._cause: str | None = None
        self._owed = True  # an INFO line is owed: first connect, or recovery from logged trouble
        self._first = True

    def failed(self, cause: str, next_delay: float) -> None:
        if cause != self._cause:
            log.error(
                "%s: %s; retrying with backoff (next in %.2g s)", self._name, cause, next_delay
            )
            self._cause = cause
            self._owed = True

    def lost(self, reason: str, next_delay: float) -> None:
        log.warning(
            "%s: lost the connection to %s: %s; reconnecting (next in %.2g s)",
            self._name, self._where, reason, next_delay,
        )  # fmt: skip
        self._cause = None
        self._owed = True

    def connected(self, attempts: int, down_s: float) -> None:
        if not self._owed:
            return
        self._owed = False
        if self._first and attempts == 1:
            log.info("%s: connected to %s", self._name, self._where)
        else:
            log.info(
                "%s: connected to %s after %d attempt%s (down %.1f s)",
                self._name, self._where, attempts, "" if attempts == 1 else "s", down_s,
            )  # fmt: skip
        self._first = False
