"""The MQTT topic tree as frozen value objects.

A topic is validated once, where it enters, and is a plain string again only at the
edge of the MQTT client. Shapes::

    postedge/v1/{station}/{device}/{channel}   channel: telemetry, event, status, cmd,
                                               cmd/result, decision, receipt
    postedge/v1/{station}/_alerts
    postedge/v1/_deadletter/{reason}
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from contracts.errors import InvalidId, InvalidTopic
from contracts.ids import validate_id

ROOT = "postedge/v1"
SHARED_GROUP = "gateway"


class Channel(StrEnum):
    TELEMETRY = "telemetry"
    EVENT = "event"
    STATUS = "status"
    CMD = "cmd"
    CMD_RESULT = "cmd/result"
    DECISION = "decision"
    RECEIPT = "receipt"


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    """``postedge/v1/{station}/{device}/{channel}``."""

    station: str
    device: str
    channel: Channel

    def __post_init__(self) -> None:
        try:
            validate_id(self.station, "station id")
            validate_id(self.device, "device id")
        except InvalidId as exc:
            raise InvalidTopic(str(exc)) from None
        if not isinstance(self.channel, Channel):
            raise InvalidTopic(f"unknown channel {self.channel!r}")

    def __str__(self) -> str:
        return f"{ROOT}/{self.station}/{self.device}/{self.channel.value}"

    @classmethod
    def parse(cls, topic: str) -> DeviceTopic:
        """Parse a device topic; raise :class:`InvalidTopic` for anything else."""
        parts = topic.split("/")
        if len(parts) < 5 or f"{parts[0]}/{parts[1]}" != ROOT:
            raise InvalidTopic(f"not a device topic under {ROOT}/: {topic[:200]!r}")
        channel_text = "/".join(parts[4:])
        try:
            channel = Channel(channel_text)
        except ValueError:
            raise InvalidTopic(f"unknown channel {channel_text[:64]!r}") from None
        return cls(parts[2], parts[3], channel)


@dataclass(frozen=True, slots=True)
class AlertsTopic:
    """``postedge/v1/{station}/_alerts``: every alert change, as it happens; with a
    ``source`` (``device/probe``, ``device/board/lock``), the subtopic
    ``postedge/v1/{station}/_alerts/{source}`` where the latest alert of that source is
    retained. MQTT retains one message per topic, so "latest per source" needs a topic per
    source; a subscriber to ``postedge/v1/{station}/_alerts/#`` gets both."""

    station: str
    source: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            validate_id(self.station, "station id")
            for part in self.source:
                validate_id(part, "alert source")
        except InvalidId as exc:
            raise InvalidTopic(str(exc)) from None

    def __str__(self) -> str:
        tail = "".join(f"/{part}" for part in self.source)
        return f"{ROOT}/{self.station}/_alerts{tail}"


@dataclass(frozen=True, slots=True)
class DeadLetterTopic:
    """``postedge/v1/_deadletter/{reason}``: rejected input, by the reason it was rejected."""

    reason: str

    def __post_init__(self) -> None:
        try:
            validate_id(self.reason, "dead-letter reason")
        except InvalidId as exc:
            raise InvalidTopic(str(exc)) from None

    def __str__(self) -> str:
        return f"{ROOT}/_deadletter/{self.reason}"


def device_filter(channel: Channel, *, station: str = "+", device: str = "+") -> str:
    """A subscription filter for one channel of many devices, e.g. ``postedge/v1/+/+/status``."""
    if station != "+":
        validate_id(station, "station id")
    if device != "+":
        validate_id(device, "device id")
    return f"{ROOT}/{station}/{device}/{channel.value}"


def shared(topic_filter: str, group: str = SHARED_GROUP) -> str:
    """The MQTT 5 shared-subscription form of a filter: ``$share/{group}/{filter}``."""
    validate_id(group, "shared subscription group")
    return f"$share/{group}/{topic_filter}"
