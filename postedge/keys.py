"""``postedge gateway keys``: make and rotate the personal-data key file.

The gateway encrypts real-name records with the keys in ``[ledger] keys_file`` (format in
:mod:`gateway.personal`). ``new`` writes a first key file; ``rotate`` puts a fresh key in
front as the current one and keeps every older key (records encrypted under them still
decrypt) and the lookup key (so lookups of older records still match). Both write the
file atomically with mode 0600 and print key ids only, never key material. Restart the
gateway and the API after a rotation: they read the file at start.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from gateway.certs import write_file
from gateway.personal import Keyring, PersonalDataError

_NUMBERED = re.compile(r"^k([0-9]+)$")


def add_keys(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser(
        "keys",
        help="make or rotate the personal-data key file ([ledger] keys_file)",
        description=(
            "The key file that encrypts real-name records (AES-256-GCM) and keys their "
            "lookup hashes. 'new' writes a first one; 'rotate' adds a fresh current key "
            "in front and keeps the older ones, so older records still decrypt. The file "
            "is written atomically, mode 0600; only key ids are printed. Restart the "
            "gateway and the API after a rotation. Exit status 0; 1 when the file cannot "
            "be written, or exists already (new), or is not a key file (rotate)."
        ),
    )
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    new = actions.add_parser("new", help="write a first key file (refuses to overwrite)")
    new.add_argument("file", type=Path, metavar="FILE")
    new.set_defaults(func=_new)
    rotate = actions.add_parser("rotate", help="add a fresh current key, keep the older ones")
    rotate.add_argument("file", type=Path, metavar="FILE")
    rotate.add_argument(
        "--key-id", metavar="ID", help="the new key's id (default: k<N+1> after the newest kN)"
    )
    rotate.set_defaults(func=_rotate)


def _new(args: argparse.Namespace) -> int:
    path: Path = args.file
    if path.exists():
        raise PersonalDataError(
            f"{path} exists already: records encrypted with it would become unreadable if "
            "it were replaced; use 'postedge gateway keys rotate' for a new key"
        )
    keyring = Keyring.generate()
    _write(path, keyring)
    print(f"created {path}: current key {keyring.current_key_id}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    path: Path = args.file
    keyring = Keyring.from_file(path)
    key_id = args.key_id or next_key_id(keyring.key_ids)
    if key_id in keyring.key_ids:
        raise PersonalDataError(f"{path} has a key {key_id!r} already: choose another --key-id")
    rotated = keyring.rotated(key_id)
    _write(path, rotated)
    kept = ", ".join(keyring.key_ids)
    print(f"rotated {path}: current key {key_id} (older keys kept: {kept})")
    return 0


def next_key_id(key_ids: tuple[str, ...]) -> str:
    """``k<N+1>`` after the highest ``kN`` among ``key_ids`` (``k1`` if there is none)."""
    numbers = [int(match[1]) for key_id in key_ids if (match := _NUMBERED.match(key_id))]
    return f"k{max(numbers, default=0) + 1}"


def _write(path: Path, keyring: Keyring) -> None:
    try:
        write_file(path, keyring.dump().encode(), 0o600)
    except OSError as exc:
        raise PersonalDataError(f"cannot write {path}: {exc.strerror}") from None
