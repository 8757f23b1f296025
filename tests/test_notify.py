"""Webhook notifications against a real local HTTP receiver: formats, retries, limits."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import sqlite3
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import JsonValue, ValidationError

from contracts.alerts import AlertMessage
from gateway.metrics import Counters
from gateway.notify import (
    Notifier,
    NotifyConfig,
    NotifyError,
    WebhookConfig,
    answer_error,
    verify_signature,
)
from gateway.notify.formats import WECOM_MAX_BYTES, dingtalk_sign, render
from postedge.localservers import free_port
from tests.helpers import FakeClock, wait_until

T0 = 1_750_000_000.0
OK = b'{"errcode":0,"errmsg":"ok"}'


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A webhook receiver on a fixed loopback port that can be stopped and started again.

    It records every request and answers from ``answers`` in order, then 200 ``OK``.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[Received] = []
        self.answers: list[tuple[int, bytes]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, answer = receiver.record(Received(self.path, _lower(self.headers), body))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def record(self, request: Received) -> tuple[int, bytes]:
        with self._lock:
            self.requests.append(request)
            return self.answers.pop(0) if self.answers else (200, OK)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _lower(headers: Any) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver that is up."""
    receiver = Receiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def down_receiver() -> Iterator[Receiver]:
    """A receiver that is down until the test starts it."""
    receiver = Receiver()
    yield receiver
    receiver.stop()


MakeNotifier = Callable[..., tuple[Notifier, Counters]]


@pytest.fixture
def make_notifier(tmp_path: Path) -> Iterator[MakeNotifier]:
    """Started notifiers on ``tmp_path/notify.sqlite``, stopped at the end of the test."""
    running: list[Notifier] = []

    def factory(
        *webhooks: WebhookConfig, clock: Callable[[], float] = time.time, **settings: Any
    ) -> tuple[Notifier, Counters]:
        settings = {"retry_initial_s": 0.05, "retry_max_s": 0.2, **settings}
        config = NotifyConfig(
            queue_path=tmp_path / "notify.sqlite", webhooks=list(webhooks), **settings
        )
        counters = Counters()
        notifier = Notifier(config, counters, clock=clock)
        notifier.start()
        running.append(notifier)
        return notifier, counters

    yield factory
    for notifier in running:
        notifier.stop()
        assert notifier.failure is None


def hook(url: str, **kwargs: Any) -> WebhookConfig:
    return WebhookConfig.model_validate({"name": "hook", "url": url, **kwargs})


def alert(
    id: str = "alert-1",
    *,
    station: str = "S1",
    severity: str = "critical",
    state: str = "open",
    details: dict[str, JsonValue] | None = None,
) -> AlertMessage:
    return AlertMessage.model_validate(
        {
            "id": id,
            "station": station,
            "kind": "temperature_high",
            "severity": severity,
            "state": state,
            "subject": "probe cold-1",
            "raised_at": datetime(2026, 1, 5, 8, 30, tzinfo=UTC),
            "details": {"temperature_c": 9.5, "limit_c": 8.0} if details is None else details,
        }
    )


def count(counters: Counters, name: str) -> int:
    return counters.snapshot().get(name, 0)


def test_json_body_is_the_alert_signed_over_timestamp_and_body(
    receiver: Receiver, make_notifier: MakeNotifier
) -> None:
    notifier, _ = make_notifier(hook(receiver.url(), secret="s3cret"), clock=FakeClock(T0 + 0.75))
    sent = alert()
    notifier.notify(sent)
    [request] = wait_until(lambda: receiver.requests, what="the webhook request")
    assert request.json() == sent.model_dump(mode="json", by_alias=True)
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-postedge-timestamp"] == "1750000000"
    mac = hmac.new(b"s3cret", b"1750000000." + request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-postedge-signature"] == f"sha256={mac}"
    assert verify_signature("s3cret", "1750000000", request.body, f"sha256={mac}")
    assert not verify_signature("s3cret", "1750000001", request.body, f"sha256={mac}")
    assert not verify_signature("other", "1750000000", request.body, f"sha256={mac}")


def test_json_without_secret_is_unsigned() -> None:
    request = render(alert(), hook("http://127.0.0.1/x"), T0)
    assert "X-Postedge-Signature" not in request.headers


def test_wecom_markdown_holds_the_alert_and_its_details(
    receiver: Receiver, make_notifier: MakeNotifier
) -> None:
    notifier, _ = make_notifier(hook(receiver.url("/cgi-bin/webhook/send?key=k1"), format="wecom"))
    notifier.notify(alert(details={"temperature_c": 9.5, "probe": "cold-1"}))
    [request] = wait_until(lambda: receiver.requests, what="the webhook request")
    assert request.path == "/cgi-bin/webhook/send?key=k1"
    body = request.json()
    assert body["msgtype"] == "markdown"
    assert body["markdown"]["content"].splitlines() == [
        "**[postedge] 告警 Alert: temperature_high (critical)**",
        "站点 Station: S1",
        "对象 Subject: probe cold-1",
        "状态 State: open",
        "时间 Raised: 2026-01-05T08:30:00.000Z",
        "temperature_c: 9.5",
        "probe: cold-1",
    ]


def test_wecom_content_is_cut_to_the_robot_limit() -> None:
    details: dict[str, JsonValue] = {f"k{i}": "值" * 100 for i in range(40)}
    request = render(alert(details=details), hook("http://h/x", format="wecom"), T0)
    content = json.loads(request.body)["markdown"]["content"]
    assert len(content.encode()) <= WECOM_MAX_BYTES
    assert content.endswith("…")


def test_a_detail_value_cannot_forge_a_line() -> None:
    request = render(
        alert(details={"note": "x\n状态 State: resolved"}), hook("http://h/x", format="wecom"), T0
    )
    content = json.loads(request.body)["markdown"]["content"]
    assert "note: x 状态 State: resolved" in content.splitlines()


def test_dingtalk_signed_url_and_markdown(receiver: Receiver, make_notifier: MakeNotifier) -> None:
    url = receiver.url("/robot/send?access_token=tok")
    notifier, _ = make_notifier(
        hook(url, format="dingtalk", secret="SECabc"), clock=FakeClock(T0 + 0.5)
    )
    notifier.notify(alert(state="resolved"))
    [request] = wait_until(lambda: receiver.requests, what="the webhook request")
    query = parse_qs(urlsplit(request.path).query, strict_parsing=True)
    assert query["access_token"] == ["tok"]
    assert query["timestamp"] == ["1750000000500"]
    digest = hmac.new(b"SECabc", b"1750000000500\nSECabc", hashlib.sha256).digest()
    assert query["sign"] == [base64.b64encode(digest).decode()]
    body = request.json()
    assert body["msgtype"] == "markdown"
    assert body["markdown"]["title"] == "[postedge] temperature_high (critical)"
    lines = body["markdown"]["text"].split("\n\n")
    assert lines[0] == "**[postedge] 告警解除 Alert resolved: temperature_high (critical)**"
    assert "limit_c: 8.0" in lines


def test_dingtalk_sign_matches_a_published_vector() -> None:
    """The value the ``dingding`` crate's own test pins for this timestamp and secret."""
    assert dingtalk_sign("secret", 1700000000000) == (
        "OuzzJR5%2BxZ4%2FEYwqtNt6sMYZQMTa%2FHEGvc9miJe7XzY%3D"
    )


def test_answers_judged() -> None:
    assert answer_error("json", 204, b"") is None
    assert answer_error("json", 200, b'{"errcode": 5}') is None
    assert answer_error("wecom", 200, b"not json") is None
    assert answer_error("wecom", 200, OK) is None
    assert answer_error("dingtalk", 200, b'{"errcode":310000,"errmsg":"sign not match"}') == (
        "errcode 310000: sign not match"
    )
    assert answer_error("json", 404, b"") == "HTTP 404"


def test_receiver_down_then_up_delivers_once_after_retries(
    down_receiver: Receiver, make_notifier: MakeNotifier
) -> None:
    notifier, counters = make_notifier(hook(down_receiver.url()))
    notifier.notify(alert())
    wait_until(lambda: count(counters, "notify.retried") >= 2, what="retries")
    down_receiver.start()
    wait_until(lambda: count(counters, "notify.delivered") == 1, what="the delivery")
    assert len(down_receiver.requests) == 1
    assert notifier.pending() == 0


def test_server_error_then_success(receiver: Receiver, make_notifier: MakeNotifier) -> None:
    receiver.answers.append((500, b"oops"))
    notifier, counters = make_notifier(hook(receiver.url()))
    notifier.notify(alert())
    wait_until(lambda: count(counters, "notify.delivered") == 1, what="the delivery")
    assert len(receiver.requests) == 2
    assert count(counters, "notify.retried") == 1


def test_dingtalk_errcode_is_retried_and_logs_hold_no_url_or_payload(
    receiver: Receiver, make_notifier: MakeNotifier, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.notify")
    receiver.answers.append((200, b'{"errcode":310000,"errmsg":"sign not match"}'))
    url = receiver.url("/robot/send?access_token=tok-private")
    notifier, counters = make_notifier(hook(url, format="dingtalk", secret="SECabc"))
    notifier.notify(alert())
    wait_until(lambda: count(counters, "notify.delivered") == 1, what="the delivery")
    assert len(receiver.requests) == 2
    assert count(counters, "notify.retried") == 1
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("gateway."))
    assert "errcode 310000" in ours
    assert "alert-1" in ours
    for private in ("tok-private", "SECabc", "probe cold-1", "temperature_c"):
        assert private not in ours


def test_rate_limit_keeps_the_excess_queued_until_tokens_return(
    receiver: Receiver, make_notifier: MakeNotifier
) -> None:
    clock = FakeClock(T0)
    notifier, counters = make_notifier(hook(receiver.url()), clock=clock, per_station_per_minute=2)
    for i in range(5):
        notifier.notify(alert(f"a{i}"))
    wait_until(lambda: count(counters, "notify.rate_limited") >= 3, what="rate limiting")
    assert count(counters, "notify.delivered") == 2
    assert notifier.pending() == 3
    clock.at(30)  # one token back
    notifier.wake()
    wait_until(lambda: count(counters, "notify.delivered") == 3, what="the third delivery")
    clock.at(90)  # the bucket is full again: two tokens
    notifier.wake()
    wait_until(lambda: count(counters, "notify.delivered") == 5, what="the rest")
    assert [r.json()["id"] for r in receiver.requests] == ["a0", "a1", "a2", "a3", "a4"]
    assert count(counters, "notify.retried") == 0
    assert notifier.pending() == 0


def test_the_same_alert_state_is_delivered_once(
    receiver: Receiver, make_notifier: MakeNotifier
) -> None:
    """A replay (the gateway restarted) adds nothing; a new state or severity is new."""
    notifier, counters = make_notifier(hook(receiver.url()))
    notifier.notify(alert())
    notifier.notify(alert())
    wait_until(lambda: count(counters, "notify.delivered") == 1, what="the delivery")
    notifier.stop()
    notifier, counters = make_notifier(hook(receiver.url()))
    notifier.notify(alert())
    notifier.notify(alert(state="resolved"))
    notifier.notify(alert(state="resolved"))
    wait_until(lambda: count(counters, "notify.delivered") == 1, what="the resolution")
    assert count(counters, "notify.queued") == 1
    assert [r.json()["state"] for r in receiver.requests] == ["open", "resolved"]


def test_undelivered_rows_survive_a_restart(
    down_receiver: Receiver, make_notifier: MakeNotifier
) -> None:
    first, counters = make_notifier(hook(down_receiver.url()), retry_initial_s=30, retry_max_s=60)
    first.notify(alert("a1"))
    first.notify(alert("a2"))
    wait_until(lambda: count(counters, "notify.retried") == 2, what="both attempts")
    first.stop()
    down_receiver.start()
    second, counters = make_notifier(hook(down_receiver.url()))
    wait_until(lambda: count(counters, "notify.delivered") == 2, what="the deliveries")
    assert sorted(r.json()["id"] for r in down_receiver.requests) == ["a1", "a2"]
    assert second.pending() == 0


def test_a_queued_row_the_contract_no_longer_accepts_is_given_up(
    down_receiver: Receiver, make_notifier: MakeNotifier, tmp_path: Path
) -> None:
    """An upgrade that changed the alert contract must not wedge the delivery thread."""
    first, counters = make_notifier(hook(down_receiver.url()), retry_initial_s=30, retry_max_s=60)
    first.notify(alert())
    wait_until(lambda: count(counters, "notify.retried") == 1, what="the first attempt")
    first.stop()
    with closing(sqlite3.connect(tmp_path / "notify.sqlite")) as db, db:
        db.execute("UPDATE deliveries SET payload = '{\"schema\": 99}'")
    down_receiver.start()
    second, counters = make_notifier(hook(down_receiver.url()))
    wait_until(lambda: count(counters, "notify.gave_up") == 1, what="giving up")
    assert second.pending() == 0
    assert down_receiver.requests == []


def test_gives_up_after_give_up_after_s(
    down_receiver: Receiver, make_notifier: MakeNotifier
) -> None:
    clock = FakeClock(T0)
    notifier, counters = make_notifier(hook(down_receiver.url()), clock=clock, give_up_after_s=60)
    notifier.notify(alert())
    wait_until(lambda: count(counters, "notify.retried") == 1, what="the first attempt")
    assert count(counters, "notify.gave_up") == 0
    clock.at(61)
    notifier.wake()
    wait_until(lambda: count(counters, "notify.gave_up") == 1, what="giving up")
    assert notifier.pending() == 0
    assert count(counters, "notify.delivered") == 0


def test_station_filter_and_min_severity(receiver: Receiver, make_notifier: MakeNotifier) -> None:
    only_s1 = WebhookConfig(
        name="s1-critical", url=receiver.url("/s1"), stations=["S1"], min_severity="critical"
    )
    everything = WebhookConfig(name="all", url=receiver.url("/all"), min_severity="info")
    notifier, counters = make_notifier(only_s1, everything)
    notifier.notify(alert("warn-s1", station="S1", severity="warning"))
    notifier.notify(alert("crit-s2", station="S2", severity="critical"))
    notifier.notify(alert("crit-s1", station="S1", severity="critical"))
    notifier.notify(alert("info-s2", station="S2", severity="info"))
    wait_until(lambda: count(counters, "notify.delivered") == 5, what="the deliveries")
    by_path: dict[str, list[str]] = {}
    for request in receiver.requests:
        by_path.setdefault(request.path, []).append(request.json()["id"])
    assert by_path["/s1"] == ["crit-s1"]
    assert sorted(by_path["/all"]) == ["crit-s1", "crit-s2", "info-s2", "warn-s1"]


def test_default_min_severity_skips_info(tmp_path: Path) -> None:
    """Nothing is queued (and nothing needs a running notifier) when no webhook wants it."""
    config = NotifyConfig(queue_path=tmp_path / "q.sqlite", webhooks=[hook("http://h/x")])
    Notifier(config, Counters()).notify(alert(severity="info"))
    with pytest.raises(NotifyError, match="not started"):
        Notifier(config, Counters()).notify(alert(severity="warning"))


def test_stop_is_prompt_during_a_long_backoff(
    down_receiver: Receiver, make_notifier: MakeNotifier
) -> None:
    notifier, counters = make_notifier(
        hook(down_receiver.url()), retry_initial_s=600, retry_max_s=600
    )
    notifier.notify(alert())
    wait_until(lambda: count(counters, "notify.retried") == 1, what="the first attempt")
    started = time.monotonic()
    notifier.stop()
    assert time.monotonic() - started < 2.0


def test_the_documented_example_is_valid() -> None:
    text = (Path(__file__).parent.parent / "docs" / "notifications.md").read_text()
    block = re.search(r"```toml\n(.*?)```", text, re.DOTALL)
    assert block is not None
    config = NotifyConfig.model_validate(tomllib.loads(block.group(1))["notify"])
    assert {webhook.format for webhook in config.webhooks} == {"json", "wecom", "dingtalk"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"webhooks": [{"name": "a", "url": "ftp://h/x"}]}, "http:// or https://"),
        ({"webhooks": [{"name": "a", "url": "http://"}]}, "http:// or https://"),
        ({"webhooks": [{"name": "a", "url": "http://h/x", "colour": "red"}]}, "Extra inputs"),
        (
            {"webhooks": [{"name": "a", "url": "http://h/x", "format": "wecom", "secret": "s"}]},
            "takes no secret",
        ),
        (
            {"webhooks": [{"name": "a", "url": "http://h/1"}, {"name": "a", "url": "http://h/2"}]},
            "unique",
        ),
        ({"retry_initial_s": 10, "retry_max_s": 1}, "retry_max_s"),
    ],
)
def test_config_refuses(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        NotifyConfig.model_validate(settings)


def test_a_bug_in_the_delivery_loop_reaches_the_owner(tmp_path: Path) -> None:
    """The loop's failure is the gateway's: alerts must not queue unseen behind a dead
    thread (the gateway passes ``on_failure`` and stops loudly, as for its sessions)."""
    broken: list[bool] = []
    reported: list[BaseException] = []
    failed = threading.Event()

    def clock() -> float:
        if broken:
            raise RuntimeError("a bug in the delivery loop")
        return time.time()

    def on_failure(exc: BaseException) -> None:
        reported.append(exc)
        failed.set()

    config = NotifyConfig(
        queue_path=tmp_path / "notify.sqlite", webhooks=[hook("http://127.0.0.1:9/hook")]
    )
    notifier = Notifier(config, Counters(), clock=clock, on_failure=on_failure)
    notifier.start()
    try:
        broken.append(True)
        notifier.wake()
        assert failed.wait(10), "the failure was not reported"
        assert isinstance(reported[0], RuntimeError)
        assert notifier.failure is reported[0]
    finally:
        notifier.stop()
