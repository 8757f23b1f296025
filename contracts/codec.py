"""JSON encoding and decoding of envelopes, with a size limit and strict schemas.

``decode`` is the one place where bytes from the wire become typed values. It never
lets a pydantic error escape and never quotes the payload in its messages.
"""

from __future__ import annotations

from pydantic import TypeAdapter, ValidationError

from contracts.envelope import AnyEnvelope, Envelope
from contracts.errors import MalformedPayload, PayloadTooLarge, SchemaViolation

MAX_PAYLOAD_BYTES = 64 * 1024

_ADAPTER: TypeAdapter[AnyEnvelope] = TypeAdapter(Envelope)


def encode(envelope: AnyEnvelope) -> bytes:
    """Serialise an envelope to compact JSON; raise :class:`PayloadTooLarge` over the limit."""
    payload = envelope.model_dump_json(by_alias=True, exclude_none=True).encode()
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"payload is {len(payload)} bytes, limit {MAX_PAYLOAD_BYTES}")
    return payload


def decode(payload: bytes) -> AnyEnvelope:
    """Parse and validate one envelope; raise a :class:`~contracts.errors.ContractError`."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"payload is {len(payload)} bytes, limit {MAX_PAYLOAD_BYTES}")
    try:
        return _ADAPTER.validate_json(payload)
    except ValidationError as exc:
        raise _translate(exc) from None


def _translate(exc: ValidationError) -> MalformedPayload | SchemaViolation:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if any(error["type"] in ("json_invalid", "json_type") for error in errors):
        return MalformedPayload("payload is not a UTF-8 JSON object")
    details = "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or '(envelope)'}: {error['msg']}"
        for error in errors[:5]
    )
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return SchemaViolation(details + more)
