"""Moving one device's outbox to its MQTT link, and confirming it by the gateway's receipts.

The outbox holds every message until a receipt names it; this sender publishes pending
messages in sequence order, at most ``inflight`` unconfirmed at a time, and deletes what
receipts confirm. Whatever is unconfirmed is sent again, from the oldest, after every
(re)connect and after ``receipt_timeout_s`` without a receipt for the oldest message in
flight (the timeout doubles while nothing is confirmed, up to ten times its setting, so
a slow gateway is not buried in resends). The gateway deduplicates by message id.

Messages must be added to the outbox in sequence order (the agent adds each device's
messages from one thread): the sender reads onwards from the last sequence number it
sent, so a number committed after a higher one would wait for the next resend.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from contracts import ContractError
from contracts.receipts import SeqRange, decode_receipt
from edge.link import DeviceLink
from edge.outbox import Outbox

log = logging.getLogger(__name__)

_BATCH = 1000
_IDLE_WAKE_S = 1.0


@dataclass
class SenderStats:
    sent: int = 0
    resent: int = 0
    confirmed: int = 0
    receipts: int = 0
    bad_receipts: int = 0
    timeouts: int = 0


class Sender:
    """Publishes one device's outbox in order; ``start()`` runs it in a thread."""

    def __init__(
        self,
        device: str,
        outbox: Outbox,
        link: DeviceLink,
        *,
        inflight: int,
        receipt_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.device = device
        self._outbox = outbox
        self._link = link
        self._window = inflight
        self._timeout_base = receipt_timeout_s
        self._timeout = receipt_timeout_s
        self._clock = clock
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._receipts: deque[tuple[SeqRange, ...]] = deque()
        self._restart = False
        self._inflight: dict[int, float] = {}  # seq -> send time, in sending (= seq) order
        self._cursor = -1
        self._ever_sent = -1
        self._thread: threading.Thread | None = None
        self.stats = SenderStats()

    # -- called from other threads -------------------------------------------------

    def notify(self) -> None:
        """New messages are in the outbox."""
        self._wake.set()

    def on_connect(self) -> None:
        """The link (re)connected: send everything unconfirmed again."""
        self._restart = True
        self._wake.set()

    def on_receipt(self, payload: bytes) -> None:
        """A receipt arrived on the device's ``receipt`` topic (from the link's thread)."""
        try:
            receipt = decode_receipt(payload)
        except ContractError as exc:
            self.stats.bad_receipts += 1
            log.warning("%s: ignored a bad receipt: %s", self.device, exc)
            return
        if receipt.device != self.device:
            self.stats.bad_receipts += 1
            log.warning("%s: ignored a receipt for device %s", self.device, receipt.device)
            return
        self._receipts.append(tuple(receipt.ranges))
        self._wake.set()

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"{self.device}-sender", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    # -- the sender's thread --------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._wait_s())
            self._wake.clear()
            try:
                self._confirm_receipts()
                self._check_timeout()
                if self._restart:
                    self._restart = False
                    self._rewind()
                self._send()
            except Exception:  # a bug must not silently stop delivery: log and carry on
                log.exception("%s: sender failed; retrying", self.device)
                self._stopping.wait(1.0)

    def _wait_s(self) -> float:
        if not self._inflight:
            return _IDLE_WAKE_S
        oldest = next(iter(self._inflight.values()))
        return max(0.0, min(_IDLE_WAKE_S, oldest + self._timeout - self._clock()))

    def _confirm_receipts(self) -> None:
        if not self._receipts:
            return
        ranges: list[SeqRange] = []
        while self._receipts:
            ranges.extend(self._receipts.popleft())
            self.stats.receipts += 1
        self.stats.confirmed += self._outbox.confirm(self.device, ranges)
        inflight = self._inflight
        progressed = False
        for first, last in ranges:
            if last - first < len(inflight):
                for seq in range(first, last + 1):
                    progressed |= inflight.pop(seq, None) is not None
            else:
                for seq in [s for s in inflight if first <= s <= last]:
                    del inflight[seq]
                    progressed = True
        if progressed:
            self._timeout = self._timeout_base

    def _check_timeout(self) -> None:
        if not self._inflight:
            return
        oldest = next(iter(self._inflight.values()))
        if self._clock() - oldest < self._timeout:
            return
        self.stats.timeouts += 1
        log.warning(
            "%s: no receipt for %d messages after %.0f s; sending them again",
            self.device,
            len(self._inflight),
            self._timeout,
        )
        self._timeout = min(self._timeout * 2, self._timeout_base * 10)
        self._rewind()

    def _rewind(self) -> None:
        self._inflight.clear()
        self._cursor = -1

    def _send(self) -> None:
        link = self._link
        while (
            not self._stopping.is_set()
            and link.connected
            and len(self._inflight) < self._window
            and not self._receipts
        ):
            limit = min(_BATCH, self._window - len(self._inflight))
            rows = self._outbox.pending(self.device, after_seq=self._cursor, limit=limit)
            if not rows:
                return
            now = self._clock()
            for row in rows:
                if not link.publish(row.topic, row.payload, retain=row.retain):
                    return  # the link dropped: the next connect rewinds
                self._inflight[row.seq] = now
                self._cursor = row.seq
                if row.seq <= self._ever_sent:
                    self.stats.resent += 1
                else:
                    self.stats.sent += 1
                    self._ever_sent = row.seq
