"""The API's request-body limit on a real uvicorn server: a body over ``[api]
max_body_bytes`` is a 413 problem whether its length is declared or it comes chunked, and
the server goes on serving."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from cloud_api.app import create_app
from cloud_api.config import ApiConfig, ListenConfig
from tests.apiworld import PASSWORD, World, serve, world_at

pytestmark = pytest.mark.integration

LIMIT = 2048
LOGIN = "/api/v1/login"


@pytest.fixture
def base(tmp_path: Path) -> Iterator[str]:
    world: World
    with world_at(f"sqlite:///{tmp_path / 'ledger.sqlite'}", tmp_path) as world:
        config = ApiConfig(api=ListenConfig(max_body_bytes=LIMIT))
        app = create_app(config, world.store, ledger=world.ledger, keyring=world.keyring)
        with serve(app) as url:
            yield url


def post(
    base: str, body: bytes | Iterable[bytes], *, chunked: bool = False
) -> tuple[int, str, dict[str, object]]:
    """POST ``body`` to the login route; (status, content type, JSON answer)."""
    url = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        connection.request(
            "POST", LOGIN, body=body, headers={"Content-Type": "application/json"},
            encode_chunked=chunked,
        )  # fmt: skip
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), json.loads(response.read())
    finally:
        connection.close()


def login_body(password: str) -> bytes:
    return json.dumps({"username": "sup", "password": password}).encode()


def test_a_declared_body_over_the_limit_is_a_413_problem(base: str) -> None:
    status, kind, problem = post(base, login_body("x" * LIMIT))
    assert (status, kind) == (413, "application/problem+json")
    assert problem["title"] == "Content Too Large"
    assert f"at most {LIMIT} bytes" in str(problem["detail"])


def test_a_chunked_body_is_refused_once_it_passes_the_limit(base: str) -> None:
    chunks = [b'{"username": "sup", "password": "'] + [b"x" * 512] * 8 + [b'"}']
    status, kind, problem = post(base, iter(chunks), chunked=True)
    assert (status, kind) == (413, "application/problem+json")
    assert f"at most {LIMIT} bytes" in str(problem["detail"])


def test_a_body_under_the_limit_is_handled_and_the_server_still_serves(base: str) -> None:
    post(base, login_body("x" * LIMIT))  # refused first: the server must not be stuck
    status, _, answer = post(base, login_body("wrong" * 50))  # under the limit
    assert status == 401
    chunks = [b'{"username": "sup", ', b'"password": ' + json.dumps(PASSWORD).encode() + b"}"]
    status, _, answer = post(base, iter(chunks), chunked=True)
    assert status == 200
    assert answer["token"]


def test_the_limit_cannot_be_set_below_one_kib() -> None:
    with pytest.raises(ValidationError, match="max_body_bytes"):
        ListenConfig(max_body_bytes=100)
