"""Real-name records: encryption round trip, rotation, lookups, tampering, masking, keys.

The numbers are the GB 11643-1999 worked example and made-up document numbers.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import logging
import re
from pathlib import Path

import pytest

from contracts.events import IdentityRead, IdType
from contracts.identity import InvalidIdentity
from gateway.errors import GatewayError
from gateway.personal import (
    ENV_VAR,
    Keyring,
    PersonalDataError,
    ProtectedIdentity,
    mask_name,
    mask_number,
    mask_phone,
)

NUMBER = "11010519491231002X"
NAME = "张三"


def identity(number: str = NUMBER, id_type: IdType = "resident", name: str = NAME) -> IdentityRead:
    return IdentityRead(
        name=name,
        id_type=id_type,
        id_number=number,
        authority="北京市公安局西城分局",
        valid_from=dt.date(2015, 3, 1),
        valid_until=dt.date(2035, 3, 1),
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))
LOOKUP = bytes(range(64, 96))
KEY_TEXT = f"# personal data keys\n\nk2:{b64(KEY_B)}\nk1:{b64(KEY_A)}\nlookup:{b64(LOOKUP)}\n"


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate()


def write_keys(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "personal.keys"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


# --- round trip --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("id_type", "number", "canonical", "masked"),
    [
        ("resident", NUMBER.lower(), NUMBER, "1101**********002X"),
        ("passport", "e12345678", "E12345678", "E1*****78"),
        ("passport", "AB123", "AB123", "A***3"),
        ("hk_macao_permit", "H1234567801", "H1234567801", "H1*******01"),
        ("taiwan_permit", "12345678", "12345678", "12****78"),
        ("foreign_permanent_residence", "USA110090101001", "USA110090101001", "US***********01"),
    ],
)
def test_protect_then_reveal_gives_the_canonical_number_and_name(
    keyring: Keyring, id_type: IdType, number: str, canonical: str, masked: str
) -> None:
    protected = keyring.protect(identity(number, id_type))
    assert keyring.reveal(protected) == (NAME, canonical)
    assert protected.id_type == id_type
    assert protected.key_id == keyring.current_key_id == "k1"
    assert protected.masked_number == masked
    assert protected.masked_name == "张*"
    assert len(protected.nonce) == 12
    assert re.fullmatch(r"[0-9a-f]{64}", protected.lookup)
    assert canonical.encode() not in protected.ciphertext
    assert NAME.encode() not in protected.ciphertext


def test_each_record_has_its_own_nonce_but_the_same_lookup(keyring: Keyring) -> None:
    first, second = keyring.protect(identity()), keyring.protect(identity())
    assert first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext
    assert first.lookup == second.lookup == keyring.lookup("resident", NUMBER)


def test_a_bad_resident_number_is_refused_before_anything_is_encrypted(keyring: Keyring) -> None:
    with pytest.raises(InvalidIdentity) as caught:
        keyring.protect(identity(NUMBER[:-1] + "1"))
    assert caught.value.rule == "check_character"
    assert caught.value.reason == "realname"
    with pytest.raises(InvalidIdentity):
        keyring.protect(identity("K12345678", "hk_macao_permit"))


# --- lookups -----------------------------------------------------------------------------


def test_lookup_canonicalises_and_separates_id_types(keyring: Keyring) -> None:
    assert keyring.lookup("resident", NUMBER.lower()) == keyring.lookup("resident", NUMBER)
    assert keyring.lookup("passport", "e12345678") == keyring.lookup("passport", "E12345678")
    # The same characters as two document types are two people.
    assert keyring.lookup("passport", "12345678") != keyring.lookup("taiwan_permit", "12345678")
    assert keyring.lookup("resident", NUMBER) != Keyring.generate().lookup("resident", NUMBER)
    with pytest.raises(InvalidIdentity):
        keyring.lookup("resident", "110105491231002")
    with pytest.raises(PersonalDataError):
        keyring.lookup("driving_licence", "12345678")


def test_lookups_survive_a_key_rotation(keyring: Keyring) -> None:
    rotated = keyring.rotated("k2")
    assert rotated.lookup("resident", NUMBER) == keyring.lookup("resident", NUMBER)
    assert rotated.protect(identity()).lookup == keyring.protect(identity()).lookup


# --- rotation ----------------------------------------------------------------------------


def test_rotation_keeps_old_records_readable_and_encrypts_new_ones_with_the_new_key(
    keyring: Keyring,
) -> None:
    old_record = keyring.protect(identity())
    rotated = keyring.rotated("k2")
    assert rotated.current_key_id == "k2"
    assert rotated.key_ids == ("k2", "k1")
    new_record = rotated.protect(identity(name="欧阳娜娜"))
    assert new_record.key_id == "k2"
    assert rotated.reveal(old_record) == (NAME, NUMBER)
    assert rotated.reveal(new_record) == ("欧阳娜娜", NUMBER)
    # The keyring from before the rotation does not know the new key.
    with pytest.raises(PersonalDataError, match="no personal data key with id 'k2'"):
        keyring.reveal(new_record)


def test_a_key_file_rotation_reads_both_keys(tmp_path: Path) -> None:
    before = Keyring.from_file(write_keys(tmp_path, f"k1:{b64(KEY_A)}\nlookup:{b64(LOOKUP)}\n"))
    record = before.protect(identity())
    after = Keyring.from_file(write_keys(tmp_path, KEY_TEXT))
    assert after.current_key_id == "k2"
    assert after.reveal(record) == (NAME, NUMBER)
    assert after.protect(identity()).key_id == "k2"
    assert after.lookup("resident", NUMBER) == before.lookup("resident", NUMBER)


# --- tampering and associated data -------------------------------------------------------


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda p: dataclasses.replace(p, ciphertext=flip(p.ciphertext, 0)),
        lambda p: dataclasses.replace(p, ciphertext=flip(p.ciphertext, len(p.ciphertext) - 1)),
        lambda p: dataclasses.replace(p, ciphertext=p.ciphertext[:-1]),
        lambda p: dataclasses.replace(p, ciphertext=b""),
        lambda p: dataclasses.replace(p, nonce=flip(p.nonce, 5)),
        lambda p: dataclasses.replace(p, id_type="passport"),
        lambda p: dataclasses.replace(p, id_type="hk_macao_permit"),
    ],
    ids=["first-byte", "tag", "truncated", "empty", "nonce", "as-passport", "as-permit"],
)
def test_tampered_or_moved_records_do_not_decrypt(keyring: Keyring, tamper: object) -> None:
    protected = keyring.protect(identity())
    tampered = tamper(protected)  # type: ignore[operator]
    with pytest.raises(PersonalDataError) as caught:
        keyring.reveal(tampered)
    assert NUMBER not in str(caught.value)


def test_a_record_relabelled_with_another_key_id_does_not_decrypt(keyring: Keyring) -> None:
    rotated = keyring.rotated("k2")
    record = rotated.protect(identity())
    with pytest.raises(PersonalDataError, match="does not authenticate"):
        rotated.reveal(dataclasses.replace(record, key_id="k1"))


def test_a_record_with_an_unknown_key_id_or_bad_nonce_is_refused(keyring: Keyring) -> None:
    record = keyring.protect(identity())
    with pytest.raises(PersonalDataError, match="no personal data key"):
        keyring.reveal(dataclasses.replace(record, key_id="k9"))
    with pytest.raises(PersonalDataError, match="nonce"):
        keyring.reveal(dataclasses.replace(record, nonce=record.nonce + b"\x00"))


# --- masking -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("张三", "张*"),
        ("欧阳娜娜", "欧***"),
        ("李", "*"),
        ("买买提·艾力", "买*****"),
        ("John Smith", "J*********"),
        ("", ""),
    ],
)
def test_names_show_only_their_first_character(name: str, masked: str) -> None:
    assert mask_name(name) == masked


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("13800138000", "138****8000"),
        ("+86 139-1234-5678", "139****5678"),
        ("008619912345678", "199****5678"),
    ],
)
def test_phones_show_their_prefix_and_last_four(phone: str, masked: str) -> None:
    assert mask_phone(phone) == masked


@pytest.mark.parametrize(
    "phone", ["12800138000", "010-12345678", "1380013800", "１３８００１３８０００"]
)
def test_a_bad_phone_cannot_be_masked(phone: str) -> None:
    with pytest.raises(InvalidIdentity) as caught:
        mask_phone(phone)
    assert caught.value.rule == "mobile"
    assert phone not in str(caught.value)


@pytest.mark.parametrize(
    ("id_type", "number", "masked"),
    [
        ("resident", NUMBER, "1101**********002X"),
        ("passport", "E12345678", "E1*****78"),
        ("passport", "1234567", "1*****7"),
        ("taiwan_permit", "12345678", "12****78"),
    ],
)
def test_document_numbers_hide_at_least_half(id_type: str, number: str, masked: str) -> None:
    shown = mask_number(id_type, number)
    assert shown == masked
    assert shown.count("*") >= len(number) / 2


# --- key files and the environment ---------------------------------------------------------


def test_key_file_with_comments_blank_lines_and_spaces_loads(tmp_path: Path) -> None:
    text = f"\n  # keys\nk2 : {b64(KEY_B)}  \n\nk1:{b64(KEY_A)}\n lookup:{b64(LOOKUP)}\n"
    keyring = Keyring.from_file(write_keys(tmp_path, text))
    assert keyring.key_ids == ("k2", "k1")
    assert keyring.current_key_id == "k2"


def test_env_var_uses_semicolons_and_matches_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, f"k2:{b64(KEY_B)}; k1:{b64(KEY_A)};lookup:{b64(LOOKUP)};")
    from_env = Keyring.from_env()
    from_file = Keyring.from_file(write_keys(tmp_path, KEY_TEXT))
    assert from_env.key_ids == from_file.key_ids == ("k2", "k1")
    assert from_env.lookup("resident", NUMBER) == from_file.lookup("resident", NUMBER)
    assert from_file.reveal(from_env.protect(identity())) == (NAME, NUMBER)
    monkeypatch.setenv("OTHER_KEYS", f"k1:{b64(KEY_A)};lookup:{b64(LOOKUP)}")
    assert Keyring.from_env("OTHER_KEYS").current_key_id == "k1"


def test_dump_round_trips_through_a_key_file(tmp_path: Path) -> None:
    keyring = Keyring.generate("first").rotated("second")
    record = keyring.protect(identity())
    loaded = Keyring.from_file(write_keys(tmp_path, keyring.dump()))
    assert loaded.key_ids == ("second", "first")
    assert loaded.reveal(record) == (NAME, NUMBER)
    assert loaded.lookup("resident", NUMBER) == record.lookup


BAD_KEY_FILES = [
    (f"k1:{b64(KEY_A)[:-2]}\nlookup:{b64(LOOKUP)}\n", "line 1: key is not valid base64"),
    (f"k1:{b64(KEY_A)}!\nlookup:{b64(LOOKUP)}\n", "line 1: key is not valid base64"),
    (f"k1:{b64(KEY_A[:16])}\nlookup:{b64(LOOKUP)}\n", "line 1: key 'k1' has 16 bytes, needs 32"),
    (f"k1:{b64(KEY_A)}\nlookup:{b64(LOOKUP + b'x')}\n", "line 2: key 'lookup' has 33 bytes"),
    (f"lookup:{b64(LOOKUP)}\n", "no encryption key"),
    ("# nothing here\n\n", "no encryption key"),
    (f"k1:{b64(KEY_A)}\n", "no lookup: line"),
    (f"k1:{b64(KEY_A)}\nk1:{b64(KEY_B)}\nlookup:{b64(LOOKUP)}\n", "'k1' appears twice"),
    (f"k1:{b64(KEY_A)}\nlookup:{b64(LOOKUP)}\nlookup:{b64(KEY_B)}\n", "line 3: a second lookup"),
    (f"{b64(KEY_A)}\nlookup:{b64(LOOKUP)}\n", "line 1: expected key_id:base64-key"),
    (f"key one:{b64(KEY_A)}\nlookup:{b64(LOOKUP)}\n", "line 1: expected key_id:base64-key"),
    (f":{b64(KEY_A)}\nlookup:{b64(LOOKUP)}\n", "line 1: expected key_id:base64-key"),
]


@pytest.mark.parametrize(("text", "says"), BAD_KEY_FILES)
def test_bad_key_files_are_refused_without_showing_key_material(
    tmp_path: Path, text: str, says: str
) -> None:
    with pytest.raises(PersonalDataError) as caught:
        Keyring.from_file(write_keys(tmp_path, text))
    message = str(caught.value)
    assert says in message
    assert_no_key_material(message)
    # No chained decoder error either: a traceback shows only this message.
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    assert isinstance(caught.value, GatewayError)


@pytest.mark.parametrize(("text", "says"), BAD_KEY_FILES)
def test_bad_env_values_are_refused_without_showing_key_material(
    monkeypatch: pytest.MonkeyPatch, text: str, says: str
) -> None:
    monkeypatch.setenv(ENV_VAR, text.replace("\n", ";"))
    with pytest.raises(PersonalDataError) as caught:
        Keyring.from_env()
    assert re.sub(r"line (\d)", r"entry \1", says) in str(caught.value)
    assert ENV_VAR in str(caught.value)
    assert_no_key_material(str(caught.value))


def assert_no_key_material(message: str) -> None:
    for key in (KEY_A, KEY_B, LOOKUP, KEY_A[:16]):
        assert b64(key)[:8] not in message
        assert key.hex()[:8] not in message


def test_a_missing_key_file_or_env_var_is_a_personal_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(PersonalDataError, match="does not exist"):
        Keyring.from_file(tmp_path / "absent.keys")
    with pytest.raises(PersonalDataError, match="cannot read"):
        Keyring.from_file(tmp_path)  # a directory
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(PersonalDataError, match=f"{ENV_VAR} is not set"):
        Keyring.from_env()
    monkeypatch.setenv(ENV_VAR, "  ")
    with pytest.raises(PersonalDataError, match="is not set"):
        Keyring.from_env()


def test_a_key_file_readable_by_others_is_loaded_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_keys(tmp_path, KEY_TEXT)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="gateway.personal"):
        Keyring.from_file(path)
    assert "chmod 600" in caplog.text
    assert_no_key_material(caplog.text)


@pytest.mark.parametrize(
    ("keys", "lookup_key", "says"),
    [
        ([], LOOKUP, "no personal data encryption key"),
        ([("k1", KEY_A[:31])], LOOKUP, "has 31 bytes"),
        ([("k1", KEY_A)], LOOKUP[:8], "lookup key 'lookup' has 8 bytes"),
        ([("lookup", KEY_A)], LOOKUP, "names the lookup key"),
        ([("k;1", KEY_A)], LOOKUP, "id is not"),
        ([("k1", KEY_A), ("k1", KEY_B)], LOOKUP, "appears twice"),
    ],
)
def test_the_constructor_checks_its_keys(
    keys: list[tuple[str, bytes]], lookup_key: bytes, says: str
) -> None:
    with pytest.raises(PersonalDataError, match=says):
        Keyring(keys, lookup_key=lookup_key)


# --- nothing leaks -----------------------------------------------------------------------


def test_reprs_show_no_personal_data_and_no_keys(keyring: Keyring) -> None:
    loaded = Keyring([("k2", KEY_B), ("k1", KEY_A)], lookup_key=LOOKUP)
    assert repr(loaded) == "Keyring(current='k2', keys=['k2', 'k1'])"
    assert_no_key_material(repr(loaded))
    assert_no_key_material(str(loaded))
    protected = keyring.protect(identity())
    shown = repr(protected)
    assert "1101**********002X" in shown
    assert "张*" in shown
    for secret in (
        NUMBER,
        NAME,
        protected.lookup,
        protected.ciphertext.hex(),
        repr(protected.nonce),
    ):
        assert secret not in shown
    assert NUMBER not in repr(identity())
    assert NAME not in repr(identity())


def test_nothing_logged_or_raised_carries_the_number_or_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Variables, not literals: a logged traceback quotes the lines of this test.
    bad, bad_phone = NUMBER[:-1] + "1", "1380013800"
    with caplog.at_level(logging.DEBUG):
        keyring = Keyring.from_file(write_keys(tmp_path, KEY_TEXT))
        record = keyring.protect(identity())
        keyring.reveal(record)
        keyring.lookup("resident", NUMBER)
        errors: list[Exception] = []
        for action in (
            lambda: keyring.protect(identity(bad)),
            lambda: keyring.lookup("resident", bad),
            lambda: keyring.reveal(dataclasses.replace(record, ciphertext=b"x" * 40)),
            lambda: keyring.reveal(dataclasses.replace(record, id_type="passport")),
            lambda: Keyring.generate().reveal(record),
            lambda: mask_phone(bad_phone),
        ):
            with pytest.raises((InvalidIdentity, PersonalDataError)) as caught:
                action()
            errors.append(caught.value)
            # What a careless caller would log: the message and the traceback.
            logging.getLogger("test").error("refused", exc_info=caught.value)
    assert len(errors) == 6
    assert "personal data keys loaded" in caplog.text  # logging did happen
    for secret in (NUMBER, bad, NUMBER[6:14], NAME, bad_phone):
        assert secret not in caplog.text
        for exc in errors:
            assert secret not in str(exc)
            assert secret not in repr(exc)
    assert_no_key_material(caplog.text)


def test_generated_keyrings_are_independent() -> None:
    first, second = Keyring.generate(), Keyring.generate()
    record = first.protect(identity())
    with pytest.raises(PersonalDataError, match="does not authenticate"):
        second.reveal(record)
    assert isinstance(record, ProtectedIdentity)
