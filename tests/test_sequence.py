"""Message ids stay unique across restarts, crashes and concurrent use."""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import pytest

from edge.errors import EdgeError
from edge.sequence import SequenceStore


def take(path: Path, count: int, block: int = 10) -> list[tuple[int, int]]:
    with SequenceStore(path, block=block) as store:
        return [store.next() for _ in range(count)]


def test_boot_counts_up_and_seq_never_repeats(tmp_path: Path) -> None:
    path = tmp_path / "dev.seq.json"
    first = take(path, 25)
    second = take(path, 3)
    assert {boot for boot, _ in first} == {1}
    assert {boot for boot, _ in second} == {2}
    seqs = [seq for _, seq in first + second]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)


def _crash_after(path: str, count: int) -> None:
    store = SequenceStore(Path(path), block=10)
    store.open()
    for _ in range(count):
        store.next()
    import os

    os._exit(0)  # no close(), no cleanup: as a power cut would leave it


@pytest.mark.parametrize("count", [0, 1, 9, 10, 11, 35])
def test_a_crash_skips_numbers_but_never_repeats_one(tmp_path: Path, count: int) -> None:
    path = tmp_path / "dev.seq.json"
    process = multiprocessing.get_context("spawn").Process(
        target=_crash_after, args=(str(path), count)
    )
    process.start()
    process.join()
    assert process.exitcode == 0
    state = json.loads(path.read_text())
    assert state["reserved"] >= count
    boot, seq = take(path, 1)[0]
    assert boot == 2
    assert seq > count


def test_two_agents_cannot_share_an_identity(tmp_path: Path) -> None:
    path = tmp_path / "dev.seq.json"
    with SequenceStore(path), pytest.raises(EdgeError, match="in use"):
        SequenceStore(path).open()


def test_damaged_file_is_refused_not_reset(tmp_path: Path) -> None:
    path = tmp_path / "dev.seq.json"
    path.write_text("{not json")
    with pytest.raises(EdgeError, match="damaged"):
        SequenceStore(path).open()


def test_threads_get_distinct_numbers(tmp_path: Path) -> None:
    results: list[int] = []
    lock = threading.Lock()
    with SequenceStore(tmp_path / "dev.seq.json", block=7) as store:

        def work() -> None:
            mine = [store.next()[1] for _ in range(200)]
            with lock:
                results.extend(mine)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(results) == len(set(results)) == 800
