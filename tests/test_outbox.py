"""The edge outbox: durable, ordered per device, confirmed by ranges, thinned over quota."""

from __future__ import annotations

import logging
import multiprocessing
import re
import sqlite3
import tempfile
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from contracts import (
    AnyBody,
    AnyEnvelope,
    CommandResultBody,
    DeviceTopic,
    DoorBody,
    HealthBody,
    ScanBody,
    TemperatureBody,
    decode,
    encode,
    make_envelope,
)
from contracts.timestamps import to_epoch_ms
from edge import outbox as outbox_module
from edge.errors import EdgeError
from edge.outbox import LOW_WATER, Outbox, Priority, priority_of

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)  # on a whole hour: windows start here
T0_MS = to_epoch_ms(T0)
WINDOW_S = 60.0
BIG = 1 << 30


def env(body: AnyBody, seq: int, at_s: float = 0.0, *, device: str = "dev1") -> AnyEnvelope:
    ts = T0 + timedelta(seconds=at_s)
    return make_envelope(station="s1", device=device, boot=1, seq=seq, ts=ts, body=body)


def temp(
    seq: int, at_s: float, celsius: float, probe: str = "p1", device: str = "dev1"
) -> AnyEnvelope:
    return env(TemperatureBody(probe=probe, celsius=celsius), seq, at_s, device=device)


def scan(seq: int, at_s: float = 0.0, device: str = "dev1") -> AnyEnvelope:
    return env(
        ScanBody(reader="r1", code=f"SF{seq:010d}", symbology="code128"), seq, at_s, device=device
    )


def health(seq: int, at_s: float) -> AnyEnvelope:
    body = HealthBody(
        uptime_s=at_s,
        cpu_percent=1.0,
        rss_bytes=1000,
        disk_free_bytes=2000,
        outbox_depth=0,
        outbox_bytes=0,
        thinned=0,
        links={"dev1": "up"},
    )
    return env(body, seq, at_s)


def topic(envelope: AnyEnvelope) -> str:
    return str(DeviceTopic(envelope.station, envelope.device, envelope.message_channel))


def size(envelopes: Iterable[AnyEnvelope]) -> int:
    return sum(len(encode(e)) for e in envelopes)


def add_all(outbox: Outbox, envelopes: Iterable[AnyEnvelope]) -> None:
    for envelope in envelopes:
        outbox.add(envelope, topic(envelope))


def seqs(outbox: Outbox, device: str = "dev1") -> list[int]:
    return [row.seq for row in outbox.pending(device, limit=100_000)]


def outbox_records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "edge.outbox" and r.levelno == level
    ]


# --- order, confirmation, durability ------------------------------------------------


def test_priorities_of_kinds() -> None:
    assert priority_of("temperature") is Priority.THIN
    assert priority_of("health") is Priority.DROP
    for kind in ("scan", "door", "induction", "divert", "xray", "command_result", "status"):
        assert priority_of(kind) is Priority.KEEP
    assert priority_of("something_new") is Priority.KEEP  # unknown kinds are never expendable


def test_pending_is_in_seq_order_per_device_and_devices_are_separate(tmp_path: Path) -> None:
    dev1 = [scan(3, 3), temp(1, 1, 4.5), scan(2, 2)]
    dev2 = [scan(1, 1, device="dev2"), scan(2, 2, device="dev2")]
    with Outbox(tmp_path / "box" / "outbox.sqlite", max_bytes=BIG) as outbox:
        add_all(outbox, dev1 + dev2)
        outbox.add(scan(4, 4), "postedge/v1/s1/dev1/event", retain=True)

        rows = outbox.pending("dev1")
        assert [r.seq for r in rows] == [1, 2, 3, 4]
        first = rows[0]
        assert (first.device, first.topic, first.kind, first.retain) == (
            "dev1",
            "postedge/v1/s1/dev1/telemetry",
            "temperature",
            False,
        )
        assert first.ts_ms == T0_MS + 1000
        assert decode(first.payload) == dev1[1]
        assert rows[3].retain is True
        assert [r.seq for r in outbox.pending("dev1", after_seq=2)] == [3, 4]
        assert [r.seq for r in outbox.pending("dev1", after_seq=1, limit=2)] == [2, 3]
        assert [(r.device, r.seq) for r in outbox.pending("dev2")] == [("dev2", 1), ("dev2", 2)]
        assert outbox.pending("dev3") == []
        assert (outbox.depth(), outbox.depth("dev1"), outbox.depth("dev2")) == (6, 4, 2)


def test_confirm_deletes_the_named_ranges_only(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.sqlite", max_bytes=BIG) as outbox:
        add_all(outbox, [scan(s) for s in range(1, 11)])
        add_all(outbox, [scan(s, device="dev2") for s in range(1, 4)])

        assert outbox.confirm("dev1", [(2, 4), (3, 6)]) == 5  # overlapping: each row once
        assert seqs(outbox) == [1, 7, 8, 9, 10]
        assert outbox.confirm("dev1", [(100, 200), (8, 7), (-5, -1)]) == 0  # unknown, empty
        assert outbox.confirm("dev1", [(9, 20), (1, 1)]) == 3  # any order, past the end
        assert seqs(outbox) == [7, 8]
        assert outbox.confirm("dev1", [(2, 6)]) == 0  # confirmed twice: a no-op
        assert outbox.confirm("nobody", [(1, 10)]) == 0
        assert seqs(outbox, "dev2") == [1, 2, 3]  # another device's numbers are untouched
        assert outbox.stats().bytes == size([scan(7), scan(8)]) + size(
            scan(s, device="dev2") for s in range(1, 4)
        )
        assert outbox.confirm("dev1", [(0, 10**30)]) == 2  # huge bounds do not overflow
        assert outbox.depth() == 3


def test_messages_and_counters_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    messages = [temp(1, 0, 4.0), scan(2, 1), health(3, 2), scan(1, 0, device="dev2")]
    with Outbox(path, max_bytes=BIG) as outbox:
        add_all(outbox, messages)
        outbox.confirm("dev1", [(2, 2)])
        before = outbox.stats()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("PRAGMA user_version").fetchone() == (1,)
    raw.close()
    with Outbox(path, max_bytes=BIG) as again:
        assert again.stats() == before
        assert before.enqueued == {"temperature": 1, "scan": 2, "health": 1}
        assert before.depth == 3
        assert before.bytes == size(messages) - size([messages[1]])
        assert seqs(again) == [1, 3]
        assert [decode(r.payload) for r in again.pending("dev2")] == [messages[3]]


def _add_and_die(path: str) -> None:
    """An agent that commits three messages and dies without closing anything."""
    import os

    outbox = Outbox(Path(path), max_bytes=BIG)
    outbox.open()
    add_all(outbox, [scan(1), scan(2), temp(3, 1, 5.0)])
    os._exit(0)


def test_an_added_message_is_committed_when_add_returns(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    process = multiprocessing.get_context("spawn").Process(target=_add_and_die, args=(str(path),))
    process.start()
    process.join(timeout=60)
    assert process.exitcode == 0
    with Outbox(path, max_bytes=BIG) as outbox:
        assert seqs(outbox) == [1, 2, 3]
        assert outbox.stats().enqueued == {"scan": 2, "temperature": 1}


def test_a_second_reader_sees_the_writers_commits(tmp_path: Path) -> None:
    """``edge check`` and the tests open the file beside a running agent."""
    path = tmp_path / "outbox.sqlite"
    with Outbox(path, max_bytes=BIG) as writer:
        writer.add(scan(1), topic(scan(1)))
        with Outbox(path, max_bytes=BIG) as reader:
            assert reader.depth("dev1") == 1
            assert reader.stats().enqueued == {"scan": 1}


def test_adding_a_known_device_and_seq_again_is_ignored(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.sqlite", max_bytes=BIG) as outbox:
        outbox.add(scan(1), topic(scan(1)))
        outbox.add(scan(1), topic(scan(1)))
        outbox.add_many([(scan(1), topic(scan(1))), (scan(2), topic(scan(2)))])
        outbox.add_many([(scan(2), topic(scan(2)))])
        stats = outbox.stats()
        assert seqs(outbox) == [1, 2]
        assert stats.enqueued == {"scan": 2}
        assert stats.bytes == size([scan(1), scan(2)])


def test_stats_report_depth_bytes_and_the_oldest_message(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.sqlite", max_bytes=5000, thin_window_s=WINDOW_S) as outbox:
        assert outbox.stats().oldest_ts_ms is None
        assert outbox.oldest_ts_ms() is None
        messages = [scan(5, 50), temp(6, 60, 3.5), scan(1, 20, device="dev2")]
        add_all(outbox, messages)
        stats = outbox.stats()
        assert (stats.depth, stats.bytes, stats.max_bytes) == (3, size(messages), 5000)
        assert (stats.thinned, stats.dropped, stats.over_quota) == (0, 0, False)
        assert stats.enqueued == {"scan": 2, "temperature": 1}
        assert stats.oldest_ts_ms == T0_MS + 20_000
        assert outbox.oldest_ts_ms("dev1") == T0_MS + 50_000
        assert outbox.oldest_ts_ms("dev3") is None
        outbox.confirm("dev2", [(1, 1)])
        assert outbox.stats().oldest_ts_ms == T0_MS + 50_000


# --- errors -------------------------------------------------------------------------


def test_a_file_that_is_not_a_database_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    path.write_bytes(b"this is not SQLite at all, just some bytes " * 200)
    with pytest.raises(EdgeError, match=r"outbox.sqlite is damaged"):
        Outbox(path, max_bytes=BIG).open()


def test_a_file_with_damaged_pages_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with Outbox(path, max_bytes=BIG) as outbox:
        outbox.add_many((scan(s), topic(scan(s))) for s in range(1, 2001))
    data = bytearray(path.read_bytes())
    assert len(data) > 40 * 4096
    data[8 * 4096 : 30 * 4096] = bytes(range(256)) * (22 * 16)  # B-tree pages now garbage
    path.write_bytes(bytes(data))
    with pytest.raises(EdgeError, match=re.escape(str(path))):
        Outbox(path, max_bytes=BIG).open()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 7")
    raw.close()
    with pytest.raises(EdgeError, match="schema version 7, newer"):
        Outbox(path, max_bytes=BIG).open()


def backlog(count: int) -> list[AnyEnvelope]:
    """``count`` scans of long codes (~0.7 KB each): a long outage's worth of events."""
    return [
        env(ScanBody(reader="r1", code=f"SF{seq:010d}" + "x" * 500, symbology="code128"), seq)
        for seq in range(1, count + 1)
    ]


def file_bytes(path: Path) -> int:
    """The outbox file and its WAL, as they take disk space."""
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def test_the_file_shrinks_again_when_a_backlog_drains(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with Outbox(path, max_bytes=BIG) as outbox:
        outbox.add_many((e, topic(e)) for e in backlog(12000))
    full = file_bytes(path)
    assert full > 8_000_000
    with Outbox(path, max_bytes=BIG) as outbox:
        for first in range(1, 12001, 500):  # the receipts of a drain, a batch at a time
            outbox.confirm("dev1", [(first, first + 499)])
        outbox.add(scan(12001), topic(scan(12001)))
    assert file_bytes(path) < full / 4
    with Outbox(path, max_bytes=BIG) as outbox:
        assert seqs(outbox) == [12001]


def test_an_outbox_from_an_older_agent_is_rewritten_to_shrink_and_keeps_its_messages(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.sqlite"
    with Outbox(path, max_bytes=BIG) as outbox:
        outbox.add_many((e, topic(e)) for e in backlog(12000))
    db = sqlite3.connect(path)  # as an agent before incremental vacuum left it
    db.execute("PRAGMA auto_vacuum = NONE")
    db.execute("VACUUM")
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    db.close()
    with caplog.at_level(logging.INFO, logger="edge.outbox"), Outbox(path, max_bytes=BIG) as outbox:
        assert seqs(outbox) == list(range(1, 12001))
        outbox.confirm("dev1", [(1, 12000)])
    assert any("rewriting it once" in m for m in outbox_records(caplog, logging.INFO))
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
    db.close()
    assert file_bytes(path) < 1_000_000


def test_an_older_outbox_that_cannot_be_rewritten_now_is_used_as_it_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rewrite failing (here: another connection holds the write lock; in the field,
    a disk too full for the copy) must not keep the agent from its messages."""
    path = tmp_path / "outbox.sqlite"
    with Outbox(path, max_bytes=BIG) as outbox:
        outbox.add_many((e, topic(e)) for e in backlog(10))
    db = sqlite3.connect(path, isolation_level=None)  # as an older agent left it
    db.execute("PRAGMA auto_vacuum = NONE")
    db.execute("VACUUM")
    db.execute("BEGIN IMMEDIATE")  # and still writing to it
    monkeypatch.setattr(outbox_module, "_BUSY_TIMEOUT_S", 0.2)
    try:
        with (
            caplog.at_level(logging.INFO, logger="edge.outbox"),
            Outbox(path, max_bytes=BIG) as outbox,
        ):
            assert seqs(outbox) == list(range(1, 11))
    finally:
        db.execute("ROLLBACK")
    assert any("not rewritten" in m for m in outbox_records(caplog, logging.WARNING))
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0  # the next open tries again
    db.close()


def test_a_closed_outbox_says_so(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", max_bytes=BIG)
    assert not (tmp_path / "outbox.sqlite").exists()  # the constructor does no I/O
    with pytest.raises(EdgeError, match="not open"):
        outbox.add(scan(1), topic(scan(1)))
    with outbox:
        pass
    with pytest.raises(EdgeError, match="not open"):
        outbox.pending("dev1")


# --- the quota ----------------------------------------------------------------------


def test_events_are_never_dropped_however_far_over_quota(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge.outbox")
    readings = [temp(1, 0, 1.0), temp(2, 30, 9.0), temp(3, 500, 4.0)]  # min, max, last
    door = DoorBody(board=1, lock=3, door="open", cause="command")
    result = CommandResultBody(command_id="c-1", command="open_slot", ok=True)
    events = [env(door, 4, 501), env(result, 5, 502)] + [scan(s, s) for s in range(6, 36)]
    with Outbox(tmp_path / "outbox.sqlite", max_bytes=600, thin_window_s=WINDOW_S) as outbox:
        add_all(outbox, readings + events)
        stats = outbox.stats()
        assert seqs(outbox) == list(range(1, 36))
        assert stats.bytes == size(readings + events) > 10 * 600
        assert (stats.over_quota, stats.thinned, stats.dropped) == (True, 0, 0)
        # One warning as the episode starts and one saying it cannot get under, not per add.
        warnings = outbox_records(caplog, logging.WARNING)
        assert len(warnings) == 2
        assert "over quota" in warnings[0]
        assert "still over quota" in warnings[1]
        assert outbox_records(caplog, logging.INFO) == []

        outbox.confirm("dev1", [(1, 35)])
        assert outbox.stats().over_quota is False
        assert len(outbox_records(caplog, logging.INFO)) == 1
        assert "under quota" in outbox_records(caplog, logging.INFO)[0]


def test_oldest_health_readings_are_dropped_before_any_thinning(tmp_path: Path) -> None:
    healths = [health(s, s * 60) for s in range(1, 6)]  # seqs 1..5, one a minute
    readings = [temp(s, s * 60, 4.0 + s) for s in range(6, 12)]  # one per window: unthinnable
    events = [scan(12, 700)]
    total = size(healths + readings + events)
    max_bytes = total - 1 - size(healths[:1])
    expected_dropped, left = 0, total
    while left > int(max_bytes * LOW_WATER):  # oldest first, just enough for the low water
        left -= size([healths[expected_dropped]])
        expected_dropped += 1
    assert 2 <= expected_dropped < len(healths)
    with Outbox(tmp_path / "outbox.sqlite", max_bytes=max_bytes, thin_window_s=WINDOW_S) as box:
        box.add_many((e, topic(e)) for e in healths + readings + events)
        assert seqs(box) == list(range(1 + expected_dropped, 13))
        stats = box.stats()
        assert (stats.dropped, stats.thinned, stats.over_quota) == (expected_dropped, 0, False)
        assert stats.bytes == left


# Hand-computed thinning with a 60 s window. Kept per (device, probe, window): the lowest
# reading (the later one on a tie), the highest and the last.
THINNING_CASE: list[tuple[str, int, str, float, float]] = [  # device, seq, probe, at_s, °C
    ("dev1", 1, "p1", 0, 4.0),  # deleted
    ("dev1", 2, "p2", 1, 8.0),  # deleted
    ("dev1", 3, "p1", 10, 2.0),  # deleted: seq 7 is an equal, later minimum
    ("dev1", 4, "p2", 11, 8.5),  # kept: max of p2
    ("dev1", 5, "p1", 20, 6.0),  # deleted
    ("dev1", 6, "p2", 21, 7.5),  # kept: min of p2
    ("dev1", 7, "p1", 30, 2.0),  # kept: min of p1
    ("dev1", 8, "p2", 31, 8.0),  # deleted
    ("dev1", 9, "p1", 40, 7.0),  # kept: max of p1
    ("dev1", 10, "p1", 50, 3.0),  # kept: last of p1
    ("dev1", 11, "p2", 59, 8.1),  # kept: last of p2
    ("dev1", 12, "p1", 60, 5.0),  # next window, all equal: only the last stays
    ("dev1", 13, "p1", 70, 5.0),
    ("dev1", 14, "p1", 80, 5.0),
    ("dev1", 15, "p1", 119, 5.0),  # kept
    ("dev1", 16, "p1", 125, 1.0),  # a window of two: both kept
    ("dev1", 17, "p1", 130, 9.0),
    ("dev2", 1, "p1", 0, 3.0),  # the same probe name on another device is another group
    ("dev2", 2, "p1", 5, 3.0),
    ("dev2", 3, "p1", 6, 3.0),
    ("dev2", 4, "p1", 7, 3.0),  # kept
]
THINNING_KEPT = {"dev1": [4, 6, 7, 9, 10, 11, 15, 16, 17, 18], "dev2": [4]}


def test_thinning_keeps_min_max_and_last_per_probe_and_window(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge.outbox")
    messages = [temp(seq, at, c, probe, device) for device, seq, probe, at, c in THINNING_CASE]
    messages.append(scan(18, 62))  # an event amid the readings stays
    path = tmp_path / "outbox.sqlite"
    # One byte less than everything: only the last add goes over, and one pass suffices.
    with Outbox(path, max_bytes=size(messages) - 1, thin_window_s=WINDOW_S) as outbox:
        add_all(outbox, messages)
        assert seqs(outbox, "dev1") == THINNING_KEPT["dev1"]
        assert seqs(outbox, "dev2") == THINNING_KEPT["dev2"]
        stats = outbox.stats()
        assert (stats.thinned, stats.dropped, stats.over_quota) == (11, 0, False)
        assert stats.depth == 11
        kept = [m for m in messages if m.seq in THINNING_KEPT[m.device]]
        assert stats.bytes == size(kept)
    assert len(outbox_records(caplog, logging.WARNING)) == 1
    (info,) = outbox_records(caplog, logging.INFO)
    assert "thinned 11" in info
    assert "window 60 s" in info
    with Outbox(path, max_bytes=size(messages)) as again:
        assert again.stats().thinned == 11  # the counter persists


@pytest.mark.parametrize(("period_s", "window_s"), [(20, 120), (40, 240)])
def test_the_window_doubles_until_thinning_is_enough(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, period_s: int, window_s: int
) -> None:
    """Three readings per 60 s (or 120 s) window, each a min, a max and a last between
    them: such windows thin nothing, so the window doubles until one holds six."""
    caplog.set_level(logging.INFO, logger="edge.outbox")
    celsius = [1.0, 9.0, 4.0, 5.0, 6.0, 5.5, 3.0, 2.0, 2.5, 8.0, 4.0, 7.0]
    readings = [temp(i + 1, i * period_s, c) for i, c in enumerate(celsius)]
    with Outbox(
        tmp_path / "outbox.sqlite", max_bytes=size(readings) - 1, thin_window_s=WINDOW_S
    ) as outbox:
        add_all(outbox, readings)
        # Seqs 1-6: min 1, max 2, last 6; seqs 7-12: min 8, max 10, last 12.
        assert seqs(outbox) == [1, 2, 6, 8, 10, 12]
        assert outbox.stats().thinned == 6
    (info,) = outbox_records(caplog, logging.INFO)
    assert f"window {window_s} s" in info


def test_a_second_episode_thins_readings_added_since(tmp_path: Path) -> None:
    """Thinning runs again when the quota is crossed again, not on the adds in between."""
    first = [temp(s, s, 5.0 + s % 3) for s in range(1, 41)]  # 40 readings in one window
    later = [temp(s, 400 + s, 5.0 + s % 3) for s in range(41, 200)]
    with Outbox(tmp_path / "outbox.sqlite", max_bytes=size(first) - 1) as outbox:
        add_all(outbox, first)
        assert seqs(outbox) == [38, 39, 40]  # max 7.0, min 5.0 (the later ties), last
        assert outbox.stats().thinned == 37
        for message in later:
            before = outbox.stats()
            outbox.add(message, topic(message))
            after = outbox.stats()
            if after.thinned > before.thinned:
                break
            assert after.bytes <= outbox.max_bytes
        assert after.thinned > before.thinned
        assert before.bytes + size([message]) > outbox.max_bytes  # crossed by this add
        assert after.bytes <= outbox.max_bytes * LOW_WATER


def test_adds_and_confirms_from_several_threads(tmp_path: Path) -> None:
    per_thread = 150
    start = threading.Barrier(3)
    adding_done = threading.Event()
    confirmed: dict[str, int] = {"dev1": 0, "dev2": 0}
    errors: list[BaseException] = []

    with Outbox(tmp_path / "outbox.sqlite", max_bytes=BIG) as outbox:

        def add(device: str) -> None:
            try:
                start.wait(timeout=10)
                for s in range(per_thread):
                    message = scan(s, s, device=device) if s % 2 else temp(s, s, 4.0, device=device)
                    outbox.add(message, topic(message))
            except BaseException as exc:
                errors.append(exc)

        def confirm() -> None:
            try:
                start.wait(timeout=10)
                while not adding_done.is_set() or outbox.depth():
                    for device in confirmed:
                        rows = outbox.pending(device, limit=20)
                        if rows:
                            ranges = [(r.seq, r.seq) for r in rows]
                            confirmed[device] += outbox.confirm(device, ranges)
                        else:
                            adding_done.wait(0.001)  # back off rather than spin on the lock
            except BaseException as exc:
                errors.append(exc)

        adders = [threading.Thread(target=add, args=(d,)) for d in ("dev1", "dev2")]
        confirmer = threading.Thread(target=confirm)
        for thread in [*adders, confirmer]:
            thread.start()
        for thread in adders:
            thread.join(timeout=60)
        adding_done.set()
        confirmer.join(timeout=60)
        assert not confirmer.is_alive()
        assert errors == []
        assert confirmed == {"dev1": per_thread, "dev2": per_thread}
        stats = outbox.stats()
        assert (stats.depth, stats.bytes) == (0, 0)
        assert stats.enqueued == {"scan": per_thread, "temperature": per_thread}


# --- thinning, for any readings -------------------------------------------------------

_readings = st.lists(
    st.tuples(
        st.sampled_from(["p1", "p2"]),
        st.integers(min_value=0, max_value=600),  # seconds: up to 10 windows of 60 s
        st.sampled_from([-18.0, 2.0, 4.0, 4.5, 8.0, 30.0]),  # few values: many ties
        st.booleans(),  # an event right after it
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(readings=_readings, quota_share=st.floats(min_value=0.05, max_value=1.2))
def test_thinning_always_keeps_min_max_last_and_every_event(
    readings: list[tuple[str, int, float, bool]], quota_share: float
) -> None:
    messages: list[AnyEnvelope] = []
    for probe, at_s, celsius, with_event in readings:
        messages.append(temp(len(messages) + 1, at_s, celsius, probe))
        if with_event:
            messages.append(scan(len(messages) + 1, at_s))
    max_bytes = max(1, int(size(messages) * quota_share))
    with (
        tempfile.TemporaryDirectory() as tmp,
        Outbox(Path(tmp) / "outbox.sqlite", max_bytes=max_bytes, thin_window_s=WINDOW_S) as outbox,
    ):
        outbox.add_many((m, topic(m)) for m in messages)
        kept = set(seqs(outbox))
        stats = outbox.stats()

    event("thinned" if stats.thinned else "nothing thinned")
    event("over quota" if stats.over_quota else "under quota")
    events = {m.seq for m in messages if m.kind == "scan"}
    assert events <= kept
    survivors = [m for m in messages if m.seq in kept]
    assert stats.thinned == len(messages) - len(kept)
    assert stats.bytes == size(survivors)
    assert stats.over_quota == (stats.bytes > max_bytes)
    if size(messages) <= max_bytes:
        assert stats.thinned == 0
        return
    temps = [m for m in messages if m.kind == "temperature"]
    assert any(_keeps_extremes(temps, kept, WINDOW_S * 1000 * 2**k) for k in range(20))
    if stats.bytes > max_bytes * LOW_WATER:  # gave up: a window spans everything pending
        for probe in ("p1", "p2"):
            assert sum(1 for m in survivors if m.kind == "temperature" and _probe(m) == probe) <= 6


def _probe(message: AnyEnvelope) -> str:
    assert isinstance(message.body, TemperatureBody)
    return message.body.probe


def _celsius(message: AnyEnvelope) -> float:
    assert isinstance(message.body, TemperatureBody)
    return message.body.celsius


def _keeps_extremes(temps: Sequence[AnyEnvelope], kept: set[int], window_ms: float) -> bool:
    """Each window of this size has at most 3 survivors, among them its lowest reading,
    its highest and its last (by device time, then seq)."""
    groups: dict[tuple[str, int], list[AnyEnvelope]] = {}
    for m in temps:
        groups.setdefault((_probe(m), int(to_epoch_ms(m.ts) // window_ms)), []).append(m)
    for group in groups.values():
        alive = [m for m in group if m.seq in kept]
        last = max(group, key=lambda m: (m.ts, m.seq))
        if len(alive) > 3 or last.seq not in kept:
            return False
        values = {_celsius(m) for m in alive}
        if min(map(_celsius, group)) not in values or max(map(_celsius, group)) not in values:
            return False
    return True
