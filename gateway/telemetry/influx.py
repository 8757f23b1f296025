"""The InfluxDB telemetry store: line protocol writes, InfluxQL reads.

Writes: line protocol from influxdb-client's ``Point`` at nanosecond precision.

- ``api = "v1"``: ``POST /write?db=&rp=&precision=ns`` through one urllib3 pool (the hot
  path: thousands of points per request, connections reused). InfluxDB 1.x, and the
  1.x compatibility API of 2.x and 3.x.
- ``api = "v2"``: influxdb-client's synchronous write API to ``/api/v2/write`` (InfluxDB
  1.8+, 2.x, 3.x; 1.6 answers 404, so the error says so).

Reads: InfluxQL over ``GET /query?db=&rp=&epoch=ns&q=`` for both, which 1.x, 2.x (with a
DBRP mapping) and 3.x serve. Identifiers are double-quoted and string literals
single-quoted, each escaped. The JSON of ``/query`` writes a whole float such as ``20.0``
as ``20``, so values are converted back by the field's type from ``SHOW FIELD KEYS``.

- ``query_series``: ``SELECT "f" FROM "m" WHERE "tag" = 'v' AND time >= S AND time < E
  ORDER BY time ASC LIMIT n`` (InfluxQL returns only rows that have the field).
- ``series``: ``SHOW SERIES FROM "m"``, series keys parsed and unescaped.
- ``last``: ``SELECT last("f") FROM "m" GROUP BY "a","b"``.

Auth: a token goes in ``Authorization: Token ...``; username/password in Basic auth
for v1 (never in URLs, which end up in logs) and as the token ``user:password`` for the
v2 client, as InfluxDB 1.8 expects.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import urllib3
from influxdb_client.client import influxdb_client as _client_module
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.write import point as _point_module
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision

from gateway.telemetry.config import InfluxStoreConfig
from gateway.telemetry.model import (
    MAX_TIME_NS,
    MIN_TIME_NS,
    Bucket,
    FieldType,
    FieldValue,
    LastValue,
    MeasurementSchema,
    SchemaGuard,
    SeriesValue,
    StoreError,
    StoreRejected,
    StoreUnavailable,
    TelemetryPoint,
    check_buckets,
    check_query,
    group_latest,
    sort_tag_sets,
)

log = logging.getLogger(__name__)

# influxdb-client is only partly typed; its untyped parts are used through Any.
Point: Any = _point_module.Point
InfluxDBClient: Any = _client_module.InfluxDBClient
NS: Any = WritePrecision.NS

_CONVERT: dict[str, Callable[[Any], FieldValue]] = {
    "float": float,
    "integer": int,
    "string": str,
    "boolean": bool,
}
# InfluxDB quotes a rejected line in its error ("unable to parse '<line>': reason"), and
# InfluxDB 3 adds it as "original_line": the line holds field values, so it is withheld.
_QUOTED_LINE = re.compile(r"unable to parse '.*': ", re.DOTALL)
_MAX_ERROR_TEXT = 400


def quote_ident(name: str) -> str:
    """An InfluxQL identifier: double quotes, with backslash and quote escaped."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_literal(text: str) -> str:
    """An InfluxQL string literal: single quotes, with backslash, quote and newline escaped."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


def _where(tags: Mapping[str, str], start: int, end: int) -> str:
    """InfluxQL conditions for the series of ``tags`` in ``[start, end)`` (nanoseconds)."""
    conditions = [f"{quote_ident(key)} = {quote_literal(value)}" for key, value in tags.items()]
    conditions += [f"time >= {int(start)}", f"time < {int(end)}"]
    return " AND ".join(conditions)


def line_protocol(points: Sequence[TelemetryPoint]) -> str:
    """The batch as line protocol, one ``Point`` per point, nanosecond timestamps."""
    lines = []
    for item in points:
        point = Point(item.measurement)
        for key, tag in item.tags.items():
            point.tag(key, tag)
        for key, value in item.fields.items():
            point.field(key, value)
        lines.append(point.time(item.time_ns, NS).to_line_protocol())
    return "\n".join(lines)


def error_text(body: bytes | str | None) -> str:
    """InfluxDB's error message from a response body, without any quoted line protocol."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = (body or "").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        text = str(data.get("error") or data.get("message") or "")
    text = _QUOTED_LINE.sub("unable to parse <line withheld>: ", text)
    cut = text.find("unable to parse '")
    if cut >= 0:  # a quoted line without its end: withhold the rest
        text = text[:cut] + "unable to parse <line withheld>"
    return text[:_MAX_ERROR_TEXT] or "(no error text)"


def parse_series_key(key: str) -> dict[str, str]:
    """The tags of a ``SHOW SERIES`` key such as ``m,a=x\\ y,b=2`` (escaped as line protocol)."""
    tags = {}
    for part in _split_unescaped(key, ",")[1:]:
        name, value = _split_unescaped(part, "=", maxsplit=1)
        tags[_unescape(name)] = _unescape(value)
    return tags


def _split_unescaped(text: str, sep: str, maxsplit: int = -1) -> list[str]:
    """Split on ``sep`` where a backslash does not escape it."""
    parts: list[str] = []
    start = index = 0
    while index < len(text) and len(parts) != maxsplit:
        if text[index] == "\\":
            index += 2
            continue
        if text[index] == sep:
            parts.append(text[start:index])
            start = index + 1
        index += 1
    parts.append(text[start:])
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\([,= \\\"])", r"\1", text)


class InfluxTelemetryStore:
    """The telemetry store contract on InfluxDB (see the module docstring)."""

    def __init__(self, config: InfluxStoreConfig) -> None:
        self.config = config
        self._pool: urllib3.PoolManager | None = None
        self._v2: _V2Writer | None = None
        self._prepared = False
        self._guard = SchemaGuard()
        self._auth = self._auth_headers()

    def __repr__(self) -> str:
        return f"InfluxTelemetryStore(url={self.config.url!r}, database={self.config.database!r})"

    # --- lifecycle ------------------------------------------------------------------

    def open(self) -> None:
        """Ping the server and, for v1, create the database where the user may.

        A server that is down is not an error here: services start in any order, so the
        first write or query tries again (and raises :class:`StoreUnavailable` until the
        server answers). Refused credentials and other misconfiguration do raise.
        """
        if self._pool is not None:
            return
        timeout = urllib3.Timeout(connect=self.config.timeout_s, read=self.config.timeout_s)
        self._pool = urllib3.PoolManager(num_pools=2, maxsize=16, retries=False, timeout=timeout)
        try:
            self._prepare()
        except StoreUnavailable as exc:
            log.warning("%s; will try again on first use", exc)
        except BaseException:
            self.close()
            raise

    def _prepare(self) -> None:
        """Ping, then create the database (v1) or the v2 writer; once per open store."""
        if self._prepared:
            return
        self._check(self._request("GET", "/ping", {}), "ping")
        if self.config.api == "v1":
            self._create_database()
        elif self._v2 is None:
            self._v2 = _V2Writer(self.config)
        self._prepared = True

    def close(self) -> None:
        if self._v2 is not None:
            self._v2.close()
            self._v2 = None
        if self._pool is not None:
            self._pool.clear()
            self._pool = None
        self._prepared = False

    def _auth_headers(self) -> dict[str, str]:
        config = self.config
        if config.token is not None:
            return {"Authorization": f"Token {config.token.get_secret_value()}"}
        if config.username is not None and config.password is not None:
            basic = f"{config.username}:{config.password.get_secret_value()}"
            return urllib3.util.make_headers(basic_auth=basic)
        return {}

    def _create_database(self) -> None:
        """``CREATE DATABASE`` is idempotent; a user who may not run it leaves it to the admin."""
        statement = f"CREATE DATABASE {quote_ident(self.config.database)}"
        response = self._request("POST", "/query", {"q": statement})
        if response.status == 403:
            log.info(
                "InfluxDB user %s may not create databases; database %s must exist",
                self.config.username,
                self.config.database,
            )
            return
        self._check(response, "CREATE DATABASE")
        self._results(response)

    # --- HTTP -----------------------------------------------------------------------

    def _request(
        self, method: str, path: str, params: Mapping[str, str], body: bytes | None = None
    ) -> urllib3.BaseHTTPResponse:
        if self._pool is None:
            raise StoreError("the InfluxDB store is not open: call open() first")
        url = f"{self.config.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        # Headers are per request: urllib3 replaces (does not merge) pool-wide headers.
        headers = dict(self._auth)
        if body is not None:
            headers["Content-Type"] = "text/plain; charset=utf-8"
        try:
            return self._pool.request(method, url, body=body, headers=headers)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreUnavailable(f"InfluxDB at {self.config.url}: {_describe(exc)}") from None

    def _check(self, response: urllib3.BaseHTTPResponse, action: str) -> None:
        """Raise the store error a non-2xx answer means (see :func:`status_error`)."""
        if response.status == 404:
            self._guard.forget()  # the database may come back with another schema
        if response.status >= 300:
            raise status_error(self.config, response.status, error_text(response.data), action)

    def _query(self, statement: str) -> dict[str, Any]:
        """Run one InfluxQL read statement; its result object (series, ...)."""
        self._prepare()
        params = {"db": self.config.database, "q": statement, "epoch": "ns"}
        if self.config.retention_policy is not None:
            params["rp"] = self.config.retention_policy
        response = self._request("GET", "/query", params)
        self._check(response, "query")
        results = self._results(response)
        if not results:
            raise StoreError("InfluxDB answered a query without a result")
        if results[0].get("partial"):
            raise StoreError("InfluxDB truncated a query result (max-row-limit): ask for less")
        return results[0]

    def _results(self, response: urllib3.BaseHTTPResponse) -> list[dict[str, Any]]:
        try:
            data = json.loads(response.data)
        except ValueError:
            raise StoreError("InfluxDB answered a query with something that is not JSON") from None
        if not isinstance(data, dict):
            raise StoreError("InfluxDB answered a query with JSON of another shape")
        results: list[dict[str, Any]] = data.get("results") or []
        for result in results:
            if "error" in result:
                raise self._statement_error(str(result["error"]))
        return results

    def _statement_error(self, text: str) -> StoreError:
        if "database not found" in text or "retention policy not found" in text:
            self._guard.forget()
            return status_error(self.config, 404, text, "query")
        return StoreError(f"InfluxDB query failed: {error_text(text)}")

    # --- writing --------------------------------------------------------------------

    def write(self, points: Sequence[TelemetryPoint]) -> None:
        """Write the batch in one request; a 2xx answer means it is in InfluxDB's WAL.

        InfluxDB 1.x fsyncs its WAL before answering (``wal-fsync-delay = "0s"``, the
        default); with a delay configured, a power cut could lose the last writes.
        """
        if not points:
            return
        self._prepare()
        delta = self._guard.check(points, self._load_schema)
        body = line_protocol(points)
        if self._v2 is not None:
            self._v2.write(body)
        else:
            params = {"db": self.config.database, "precision": "ns"}
            if self.config.retention_policy is not None:
                params["rp"] = self.config.retention_policy
            response = self._request("POST", "/write", params, body.encode())
            self._check(response, "write")
        self._guard.confirm(delta)

    def _load_schema(self, measurement: str) -> MeasurementSchema | None:
        """What the server holds of a measurement: its tag keys and field types."""
        name = quote_ident(measurement)
        tags = {row[0] for row in _rows(self._query(f"SHOW TAG KEYS FROM {name}"))}
        fields: dict[str, FieldType] = {}
        for key, kind in _rows(self._query(f"SHOW FIELD KEYS FROM {name}")):
            fields.setdefault(key, kind)  # 1.x: one entry per shard's type; keep the first
        if not tags and not fields:
            return None
        return MeasurementSchema(frozenset(tags), fields)

    # --- reading --------------------------------------------------------------------

    def query_series(
        self,
        measurement: str,
        field: str,
        tags: Mapping[str, str],
        start_ns: int | None = None,
        end_ns: int | None = None,
        limit: int | None = None,
    ) -> list[SeriesValue]:
        check_query(measurement, field, list(tags), limit)
        start = MIN_TIME_NS if start_ns is None else max(start_ns, MIN_TIME_NS)
        end = MAX_TIME_NS + 1 if end_ns is None else min(end_ns, MAX_TIME_NS + 1)
        kind = self._field_type(measurement, field, tags.keys())
        if kind is None or limit == 0 or start >= end:
            return []
        statement = (  # InfluxQL of validated names and escaped literals
            f"SELECT {quote_ident(field)} FROM {quote_ident(measurement)} "  # noqa: S608
            f"WHERE {_where(tags, start, end)} ORDER BY time ASC"
        )
        if limit is not None:
            statement += f" LIMIT {int(limit)}"
        convert = _CONVERT[kind]
        rows = sorted(_rows(self._query(statement)), key=lambda row: int(row[0]))
        return [SeriesValue(int(time_ns), convert(value)) for time_ns, value in rows[:limit]]

    def query_buckets(
        self,
        measurement: str,
        field: str,
        tags: Mapping[str, str],
        start_ns: int,
        end_ns: int,
        every_ns: int,
    ) -> list[Bucket]:
        check_query(measurement, field, list(tags), None)
        start, end = check_buckets(start_ns, end_ns, every_ns)
        kind = self._field_type(measurement, field, tags.keys())
        if kind not in ("float", "integer") or start >= end:  # mean() of text is an error
            return []
        name = quote_ident(field)
        statement = (  # InfluxQL of validated names and escaped literals
            f"SELECT mean({name}), min({name}), max({name}), count({name}) "  # noqa: S608
            f"FROM {quote_ident(measurement)} WHERE {_where(tags, start, end)} "
            f"GROUP BY time({every_ns // 10**9}s) fill(none)"
        )
        return [
            Bucket(int(period), float(mean), float(low), float(high), int(count))
            for period, mean, low, high, count in _rows(self._query(statement))
            if count
        ]

    def series(self, measurement: str) -> list[dict[str, str]]:
        check_query(measurement, None, (), None)
        result = self._query(f"SHOW SERIES FROM {quote_ident(measurement)}")
        return sort_tag_sets([parse_series_key(row[0]) for row in _rows(result)])

    def last(self, measurement: str, field: str, group_by: Sequence[str]) -> list[LastValue]:
        check_query(measurement, field, group_by, None)
        kind = self._field_type(measurement, field, ())
        if kind is None:
            return []
        statement = f"SELECT last({quote_ident(field)}) FROM {quote_ident(measurement)}"  # noqa: S608
        if group_by:
            statement += " GROUP BY " + ",".join(quote_ident(key) for key in group_by)
        convert = _CONVERT[kind]
        candidates = []
        for series in self._query(statement).get("series", []):
            tags = series.get("tags") or {}
            group = {key: tags.get(key, "") for key in group_by}
            for time_ns, value in series.get("values", []):
                candidates.append(LastValue(group, int(time_ns), convert(value)))
        return group_latest(candidates)

    def _field_type(
        self, measurement: str, field: str, tag_keys: Iterable[str]
    ) -> FieldType | None:
        """The field's type, or None when the query can match nothing (unknown names)."""
        tag_keys = list(tag_keys)
        schema = self._guard.schema(measurement, self._load_schema, need=field, need_tags=tag_keys)
        if schema is None or field not in schema.fields or not set(tag_keys) <= schema.tags:
            return None
        return schema.fields[field]


def _rows(result: Mapping[str, Any]) -> Iterator[list[Any]]:
    for series in result.get("series", []):
        yield from series.get("values", [])


def status_error(config: InfluxStoreConfig, status: int, text: str, action: str) -> StoreError:
    """The store error for an HTTP error status (or a query error that means the same).

    401/403: credentials; 404: missing database or endpoint; 400/413/422 on a write: the
    batch itself (split it); 429 and 5xx: try again later.
    """
    writing = action == "write"
    if status == 401:
        given = text if _has_credentials(config) else "none were given"
        return StoreError(
            f"InfluxDB refused the credentials (HTTP 401 on {action}: {given}): check "
            "username/password or token in the [store] configuration"
        )
    if status == 403:
        return StoreError(
            f"InfluxDB refused the credentials for this {action} (HTTP 403: {text}): grant "
            "the user the privileges it needs"
        )
    if "retention policy not found" in text:
        return StoreError(
            f"InfluxDB database {config.database!r} has no retention policy "
            f"{config.retention_policy!r}: create it or remove retention_policy ({text})"
        )
    if status == 404 and "not found" in text and ("database" in text or "bucket" in text):
        return StoreError(_missing_database(config, text))
    if status == 404:
        return StoreError(
            f"InfluxDB has no endpoint for this {action} (HTTP 404: {text}); api = 'v2' "
            "needs InfluxDB 1.8 or later"
        )
    if writing and status in (400, 413, 422):
        return StoreRejected(f"InfluxDB rejected the batch (HTTP {status}): {text}")
    if status == 429 or status >= 500:
        return StoreUnavailable(f"InfluxDB could not {action} (HTTP {status}): {text}")
    return StoreError(f"InfluxDB refused the {action} (HTTP {status}): {text}")


def _missing_database(config: InfluxStoreConfig, text: str) -> str:
    if config.api == "v2":
        return (
            f"InfluxDB bucket {config.write_bucket!r} of org {config.org!r} does not exist "
            f"({text}): create it, e.g. influx bucket create --name {config.write_bucket}"
        )
    return (
        f"InfluxDB database {config.database!r} does not exist ({text}): create it with "
        f"CREATE DATABASE {quote_ident(config.database)}, or give the gateway an admin user "
        "and it creates the database when it starts"
    )


def _has_credentials(config: InfluxStoreConfig) -> bool:
    return config.token is not None or config.username is not None


def _describe(exc: BaseException) -> str:
    """A short reason for a transport failure (urllib3's messages name object addresses)."""
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return "cannot connect: " + str(exc).rsplit(": ", 1)[-1]
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return "connection timed out"
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return "no answer in time (timeout_s)"
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return _describe(exc.reason)
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return "connection lost"
    return f"{type(exc).__name__}: {exc}"


class _V2Writer:
    """influxdb-client's synchronous write API, for ``/api/v2/write``."""

    def __init__(self, config: InfluxStoreConfig) -> None:
        self._config = config
        token = None
        if config.token is not None:
            token = config.token.get_secret_value()
        elif config.username is not None and config.password is not None:
            token = f"{config.username}:{config.password.get_secret_value()}"
        self._client: Any = InfluxDBClient(
            url=config.url,
            token=token,
            org=config.org,
            timeout=int(config.timeout_s * 1000),
            retries=False,
        )
        self._api: Any = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, body: str) -> None:
        config = self._config
        try:
            self._api.write(
                bucket=config.write_bucket,
                org=config.org,
                record=body,
                write_precision=NS,
            )
        except InfluxDBError as exc:
            status = getattr(exc, "status", None)
            text = error_text(getattr(exc, "body", None) or exc.message)
            if status is None:
                raise StoreError(f"InfluxDB write failed: {text}") from None
            raise status_error(config, int(status), text, "write") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreUnavailable(f"InfluxDB at {config.url}: {_describe(exc)}") from None

    def close(self) -> None:
        self._api.close()
        self._client.close()
