"""Dead-letter records: what was rejected, why, and how to recognise it again.

A record names the reason, the error and the topic, and identifies the payload by its
size and SHA-256 instead of carrying it: rejected input may hold personal data, and a
record must be safe to publish, store and log.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from contracts import DeadLetterTopic

MAX_TOPIC_CHARS = 256


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    error: str
    topic: str
    size: int
    sha256: str
    received_ns: int

    @classmethod
    def of(
        cls, *, reason: str, error: str, topic: str, payload: bytes, received_ns: int
    ) -> DeadLetter:
        return cls(
            reason=reason,
            error=error[:1000],
            topic=topic[:MAX_TOPIC_CHARS],
            size=len(payload),
            sha256=hashlib.sha256(payload).hexdigest(),
            received_ns=received_ns,
        )

    @property
    def destination(self) -> str:
        return str(DeadLetterTopic(self.reason))

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False).encode()
