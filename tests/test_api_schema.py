"""schemathesis against the API's own OpenAPI document, over a real ledger and store:
for a bounded number of generated requests per operation, no 5xx, and every response
matches the documented schema and content type."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)
from schemathesis.core.result import Ok
from schemathesis.generation.case import Case

from cloud_api.app import create_app
from cloud_api.auth import Accounts
from cloud_api.config import ApiConfig
from gateway.coldchain.config import ColdChainConfig
from tests.apiworld import PASSWORD, World, world_at

pytestmark = pytest.mark.slow

EXAMPLES = 12
"""Generated requests per operation (and per user below): enough to find a 5xx on a bad
value, small enough for the suite's time budget."""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp_path: Path = tmp_path_factory.mktemp("schema")
    with world_at(f"sqlite:///{tmp_path / 'ledger.sqlite'}", tmp_path) as built:
        yield built


@pytest.fixture(scope="module")
def api_schema(world: World) -> schemathesis.schemas.BaseSchema:
    config = ApiConfig(coldchain=ColdChainConfig(default_profile="pharma"))
    app = create_app(config, world.store, ledger=world.ledger, keyring=world.keyring)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _labels() -> list[str]:
    """Every operation of the document, as ``METHOD /path`` (the app is only built here,
    not started, to read its document)."""
    document = schemathesis.openapi.from_dict(create_app(ApiConfig()).openapi())
    labels = set()
    for result in document.get_all_operations():
        assert isinstance(result, Ok), result  # the document itself is valid
        labels.add(result.ok().label)
    return sorted(labels - set(NOT_GENERATED))


NOT_GENERATED = {
    "GET /api/v1/events": "an endless event stream: tests/test_api_live.py reads it",
}


@pytest.mark.parametrize("label", _labels())
def test_no_server_errors_and_responses_match_the_schema(
    label: str, api_schema: schemathesis.schemas.BaseSchema, world: World
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None
    # The auditor may reveal, an admin may do the rest: between them every operation gets
    # past its permission check to the code behind it. A user of this test's own, so that
    # generated calls that revoke tokens or disable users cannot lock out the next test.
    role = "auditor" if label.endswith("/reveal") else "admin"
    name = f"schema-{abs(hash(label)) % 10**8}"
    accounts = Accounts(world.ledger, session_ttl=timedelta(hours=1))
    now = datetime.now(UTC)
    accounts.save_user(name, role=role, scopes=["*"], password=PASSWORD, now=now)
    token = accounts.issue(name, kind="api", label="schemathesis", now=now).token
    headers = {"Authorization": f"Bearer {token}"}
    statuses: list[int] = []

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def check(case: Case[Any]) -> None:
        response = case.call_and_validate(
            headers=headers,
            checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
        )
        statuses.append(response.status_code)

    check()
    if label == "POST /api/v1/login":  # generated names and passwords never match
        assert set(statuses) <= {401, 422, 429}, statuses  # 429: one name failed often
    else:  # the generated calls reached the operation, not only the authentication
        assert any(status not in (401, 403) for status in statuses), statuses
