"""``postedge gateway keys``: a first key file, and rotation that keeps older records
readable; key material never printed."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest

from contracts.events import IdentityRead
from gateway.personal import Keyring
from postedge.cli import main
from postedge.keys import next_key_id
from tests.apiworld import NAME, NUMBER

SENDER = IdentityRead(
    name=NAME, id_type="resident", id_number=NUMBER, authority="北京市公安局西城分局",
    valid_from=dt.date(2015, 3, 1), valid_until=dt.date(2035, 3, 1),
)  # fmt: skip


def key_material(path: Path) -> list[str]:
    return [line.split(":", 1)[1] for line in path.read_text().splitlines()]


def test_new_writes_a_private_key_file_and_prints_no_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "personal.keys"
    assert main(["gateway", "keys", "new", str(path)]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keyring = Keyring.from_file(path)
    assert keyring.key_ids == ("k1",)
    printed = capsys.readouterr()
    assert f"created {path}: current key k1" in printed.out
    assert not any(key in printed.out + printed.err for key in key_material(path))


def test_new_never_replaces_a_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "personal.keys"
    assert main(["gateway", "keys", "new", str(path)]) == 0
    before = path.read_text()
    assert main(["gateway", "keys", "new", str(path)]) == 1
    assert "exists already" in capsys.readouterr().err
    assert path.read_text() == before


def test_rotation_keeps_older_records_readable_and_lookups_equal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "personal.keys"
    assert main(["gateway", "keys", "new", str(path)]) == 0
    first = Keyring.from_file(path)
    old_record = first.protect(SENDER)
    assert main(["gateway", "keys", "rotate", str(path)]) == 0
    rotated = Keyring.from_file(path)
    assert rotated.key_ids == ("k2", "k1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert rotated.reveal(old_record) == (NAME, NUMBER)
    new_record = rotated.protect(SENDER)
    assert (old_record.key_id, new_record.key_id) == ("k1", "k2")
    assert new_record.lookup == old_record.lookup
    printed = capsys.readouterr()
    assert "current key k2 (older keys kept: k1)" in printed.out
    assert not any(key in printed.out + printed.err for key in key_material(path))


def test_rotation_to_a_key_id_in_use_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "personal.keys"
    assert main(["gateway", "keys", "new", str(path)]) == 0
    before = path.read_text()
    assert main(["gateway", "keys", "rotate", str(path), "--key-id", "k1"]) == 1
    assert "has a key 'k1' already" in capsys.readouterr().err
    assert main(["gateway", "keys", "rotate", str(tmp_path / "missing.keys")]) == 1
    assert path.read_text() == before


def test_the_next_key_id_follows_the_highest_number() -> None:
    assert next_key_id(()) == "k1"
    assert next_key_id(("k2", "k10", "spring")) == "k11"
    assert next_key_id(("spring",)) == "k1"
