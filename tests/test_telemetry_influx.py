"""The InfluxDB telemetry store beyond the shared contract: HTTP, errors, auth, the v2 path."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.telemetry import (
    SeriesValue,
    StoreError,
    StoreRejected,
    StoreUnavailable,
)
from gateway.telemetry.influx import (
    InfluxTelemetryStore,
    error_text,
    line_protocol,
    parse_series_key,
    quote_literal,
    status_error,
)
from postedge.localservers import Influxd
from tests.test_telemetry_store import S1, T0, influx, influx_config, pt

# --- InfluxDB ----------------------------------------------------------------------------


def _raw_write(server: Influxd, database: str, line: str) -> None:
    url = f"{server.url}/write?" + urllib.parse.urlencode({"db": database, "precision": "ns"})
    with urllib.request.urlopen(urllib.request.Request(url, line.encode(), method="POST")):  # noqa: S310
        pass


def test_line_protocol_is_built_by_point_at_ns_precision() -> None:
    tags = {"station": "s 1", "device": "d,1", "probe": "p=1"}
    point = pt(T0, tags, celsius=4.0, seq=3, id='a "b"', ok=True)
    assert line_protocol([point, pt(T0 + 1, celsius=-0.5)]) == (
        "temperature,device=d\\,1,probe=p\\=1,station=s\\ 1 "
        'celsius=4,id="a \\"b\\"",ok=true,seq=3i 1700000000123456789\n'
        "temperature,device=d1,probe=p1,station=s1 celsius=-0.5 1700000000123456790"
    )


def test_influxql_quoting_and_series_keys() -> None:
    assert quote_literal("it's a\\b\nc") == "'it\\'s a\\\\b\\nc'"
    assert parse_series_key('m,a=x\\ y\\,z\\=w,b=2,c="q"') == {"a": "x y,z=w", "b": "2", "c": '"q"'}


@pytest.mark.parametrize(
    ("status", "text", "error", "says"),
    [
        (400, "partial write: field type conflict: ... dropped=1", StoreRejected, "HTTP 400"),
        (413, "Request Entity Too Large", StoreRejected, "HTTP 413"),
        (401, "authorization failed", StoreError, "refused the credentials"),
        (403, "requires WRITE on db", StoreError, "refused the credentials"),
        (404, 'database not found: "db"', StoreError, 'CREATE DATABASE "db"'),
        (404, "404 page not found", StoreError, "1.8"),
        (500, "retention policy not found: short", StoreError, "retention policy"),
        (500, "timeout", StoreUnavailable, "HTTP 500"),
        (503, "", StoreUnavailable, "HTTP 503"),
        (429, "slow down", StoreUnavailable, "HTTP 429"),
    ],
)
def test_http_errors_map_to_store_errors(status: int, text: str, error: type, says: str) -> None:
    found = status_error(influx_config("http://h:8086", "db"), status, text, "write")
    assert type(found) is error
    assert says in str(found)


def test_error_texts_withhold_the_rejected_line() -> None:
    v1 = (
        b'{"error":"unable to parse \'temperature celsius=36.6,name=\\"Wang\\" 1\': bad timestamp"}'
    )
    assert error_text(v1) == "unable to parse <line withheld>: bad timestamp"
    v3 = {"error": "parsing failed", "data": {"original_line": 'm name="Wang" 1'}}
    assert error_text(json.dumps(v3).encode()) == "parsing failed"
    assert "Wang" not in error_text('unable to parse \'m name="Wang"')


@pytest.mark.integration
def test_influx_down_is_unavailable_and_the_same_store_recovers(private_influxd: Influxd) -> None:
    with influx(private_influxd.url, "postedge", timeout_s=2) as store:
        store.write([pt(T0, celsius=1.0)])
        private_influxd.stop()
        with pytest.raises(StoreUnavailable, match="cannot connect"):
            store.write([pt(T0 + 1, celsius=2.0)])
        with pytest.raises(StoreUnavailable):
            store.query_series("temperature", "celsius", S1)
        private_influxd.start()
        store.write([pt(T0 + 1, celsius=2.0)])
        assert len(store.query_series("temperature", "celsius", S1)) == 2


def test_influx_that_does_not_answer_times_out_as_unavailable() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with (
            influx(url, "db", timeout_s=0.2) as store,
            pytest.raises(StoreUnavailable, match="no answer in time"),
        ):
            store.write([pt(T0, celsius=1.0)])


@pytest.mark.integration
def test_a_store_opened_before_influx_starts_works_once_it_is_up(tmp_path: Path) -> None:
    """Services start in any order: open() tolerates a server that is not up yet."""
    server = Influxd(tmp_path / "late")
    with influx(server.url, "late", timeout_s=2) as store:
        with pytest.raises(StoreUnavailable, match="cannot connect"):
            store.write([pt(T0, celsius=1.0)])
        server.start()
        try:
            store.write([pt(T0, celsius=1.0)])  # creates the database on first contact
            assert store.query_series("temperature", "celsius", S1) == [SeriesValue(T0, 1.0)]
        finally:
            server.stop()


@pytest.mark.integration
def test_a_field_type_conflict_at_the_server_is_rejected(influxd: Influxd, influx_db: str) -> None:
    """Another writer made the field a string after this store saw it as a float."""
    with influx(influxd.url, influx_db) as store:
        store.write([pt(T0, celsius=1.0)])
        influxd.query('DROP MEASUREMENT "temperature"', db=influx_db)
        # In T0's shard: InfluxDB 1.x checks field types per shard (a week by default).
        line = f'temperature,device=d1,probe=p1,station=s1 celsius="warm" {T0 + 5}'
        _raw_write(influxd, influx_db, line)
        with pytest.raises(StoreRejected, match="field type conflict") as caught:
            store.write([pt(T0, celsius=42.5)])
        assert "42.5" not in str(caught.value)


@pytest.mark.integration
def test_a_missing_database_is_named_with_the_fix(influxd: Influxd, influx_db: str) -> None:
    with influx(influxd.url, influx_db) as store:
        store.write([pt(T0, celsius=1.0)])
        influxd.query(f'DROP DATABASE "{influx_db}"')
        with pytest.raises(StoreError, match=f'CREATE DATABASE "{influx_db}"'):
            store.write([pt(T0, celsius=1.0)])  # /write answers 404
        with pytest.raises(StoreError, match="does not exist"):
            store.write([pt(T0, m="other", x=1)])  # the schema lookup's query fails first


@pytest.mark.integration
def test_a_retention_policy_is_written_and_read(influxd: Influxd, influx_db: str) -> None:
    influxd.query(f'CREATE RETENTION POLICY "short" ON "{influx_db}" DURATION 1h REPLICATION 1')
    now = time.time_ns()  # within the policy's hour
    with influx(influxd.url, influx_db, retention_policy="short") as store:
        store.write([pt(now, celsius=1.0)])
        assert store.query_series("temperature", "celsius", S1) == [SeriesValue(now, 1.0)]
    for policy, count in (("short", 1), ("autogen", None)):
        statement = f'SELECT count("celsius") FROM "{policy}"."temperature"'  # noqa: S608
        series = influxd.query(statement, db=influx_db)["results"][0].get("series")  # type: ignore[index]
        assert (series[0]["values"][0][1] if series else None) == count


@pytest.mark.integration
@pytest.mark.parametrize(
    ("credentials", "says"),
    [({"username": "admin", "password": "wrong"}, "authorization failed"), ({}, "none were given")],
)
def test_wrong_or_missing_credentials_are_named(
    influxd_auth: Influxd, credentials: dict[str, str], says: str
) -> None:
    store = InfluxTelemetryStore(influx_config(influxd_auth.url, "db", **credentials))
    with pytest.raises(StoreError, match="InfluxDB refused the credentials") as caught:
        store.open()
    assert says in str(caught.value)
    assert "wrong" not in str(caught.value)
    assert not isinstance(caught.value, StoreUnavailable)


@pytest.mark.integration
def test_username_and_password_work_for_admins_and_users(influxd_auth: Influxd) -> None:
    """An admin's store creates the database; a plain user's store uses it."""
    url, database, user = influxd_auth.url, f"a_{uuid.uuid4().hex[:8]}", f"u_{uuid.uuid4().hex[:8]}"
    with influx(url, database, username="admin", password=influxd_auth.admin_password) as admin:
        influxd_auth.query(f"CREATE USER \"{user}\" WITH PASSWORD 'pw'")
        influxd_auth.query(f'GRANT ALL ON "{database}" TO "{user}"')
        with influx(url, database, username=user, password="pw") as writer:  # not an admin
            writer.write([pt(T0, celsius=1.5)])
        assert admin.query_series("temperature", "celsius", S1) == [SeriesValue(T0, 1.5)]


@pytest.mark.integration
def test_api_v2_on_influxdb_1_6_says_it_needs_1_8(influxd: Influxd, influx_db: str) -> None:
    with (
        influx(influxd.url, influx_db, api="v2") as store,
        pytest.raises(StoreError, match=r"1\.8"),
    ):
        store.write([pt(T0, celsius=1.0)])


class _FakeInflux2(http.server.BaseHTTPRequestHandler):
    """Records each request and answers ``server.answer`` (status, body) to writes."""

    server: Any

    def do_GET(self) -> None:
        """The ping of open(), and the schema queries of write(): nothing there yet."""
        empty = b'{"results":[{"statement_id":0}]}' if self.path.startswith("/query") else b""
        self.send_response(200 if empty else 204)
        self.send_header("Content-Length", str(len(empty)))
        self.end_headers()
        self.wfile.write(empty)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.path, dict(self.headers), body))
        status, text = self.server.answer
        self.send_response(status)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_influx2() -> Iterator[Any]:
    """A stand-in for InfluxDB 2's write endpoint: none can be installed here."""
    server: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeInflux2)
    server.requests, server.answer = [], (204, b"")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_v2_writes_line_protocol_to_api_v2_write(fake_influx2: Any) -> None:
    url = f"http://127.0.0.1:{fake_influx2.server_port}"
    with influx(url, "postedge", api="v2", org="postal", bucket="cold", token="tok-1") as store:
        store.write([pt(T0, celsius=4.5, seq=7)])
        path, headers, body = fake_influx2.requests[0]
        target = urllib.parse.urlsplit(path)
        assert target.path == "/api/v2/write"
        query = urllib.parse.parse_qs(target.query)
        assert query == {"org": ["postal"], "bucket": ["cold"], "precision": ["ns"]}
        assert headers["Authorization"] == "Token tok-1"
        assert (
            body
            == b"temperature,device=d1,probe=p1,station=s1 celsius=4.5,seq=7i " + str(T0).encode()
        )


@pytest.mark.parametrize(
    ("status", "body", "error", "says"),
    [
        (
            400,
            b'{"message":"unable to parse \'x y=\\"secret\\"\': bad"}',
            StoreRejected,
            "HTTP 400",
        ),
        (
            401,
            b'{"code":"unauthorized","message":"unauthorized access"}',
            StoreError,
            "credentials",
        ),
        (404, b'{"message":"bucket \\"cold\\" not found"}', StoreError, "bucket 'db' of org"),
        (503, b"", StoreUnavailable, "HTTP 503"),
    ],
)
def test_v2_write_errors_are_store_errors(
    fake_influx2: Any, status: int, body: bytes, error: type, says: str
) -> None:
    fake_influx2.answer = (status, body)
    url = f"http://127.0.0.1:{fake_influx2.server_port}"
    with influx(url, "db", api="v2", username="gw", password="pw") as store:
        with pytest.raises(error, match=says) as caught:
            store.write([pt(T0, celsius=4.5)])
        assert type(caught.value) is error
        assert "secret" not in str(caught.value)
        path, headers, _ = fake_influx2.requests[0]
        assert headers["Authorization"] == "Token gw:pw"  # username/password as 1.8 wants
        assert "bucket=db&" in path
