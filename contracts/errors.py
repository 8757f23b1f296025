"""The error types of the wire contract.

Every error carries a short ``reason`` that names its class of fault on the wire: the
gateway dead-letters rejected input under ``postedge/v1/_deadletter/{reason}``.
Messages never quote a payload, so an error can be logged without leaking its content.
"""

from __future__ import annotations


class ContractError(ValueError):
    """Input that breaks the wire contract."""

    reason = "contract"


class InvalidId(ContractError):
    """A station, device, probe or message id that does not match the id rules."""

    reason = "id"


class InvalidTopic(ContractError):
    """A topic that is not one of the topic tree's shapes."""

    reason = "topic"


class PayloadTooLarge(ContractError):
    """A payload over the size limit, rejected before it is parsed."""

    reason = "oversize"


class MalformedPayload(ContractError):
    """A payload that is not UTF-8 JSON."""

    reason = "malformed"


class SchemaViolation(ContractError):
    """JSON that does not match the envelope or body schema.

    Unknown or missing fields, wrong types, values out of range.
    """

    reason = "schema"
