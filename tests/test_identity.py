"""Identity numbers: resident ID rules, other documents' formats, mobile numbers.

The check characters here come from an independent reference implementation, and every
rejection is checked for its rule and for a message that carries no part of the input.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.errors import ContractError
from contracts.identity import (
    PROVINCE_CODES,
    InvalidIdentity,
    ResidentId,
    check_character,
    masked_resident_id,
    parse_document,
    parse_mobile,
    parse_resident_id,
)

GB_EXAMPLE = "11010519491231002X"  # the worked example of GB 11643-1999, not a person
TODAY = dt.date(2026, 11, 25)
VALID_PROVINCES = (
    [f"{p}" for p in range(11, 16)]
    + ["21", "22", "23"]
    + [f"{p}" for p in range(31, 38)]
    + [f"{p}" for p in range(41, 47)]
    + [f"{p}" for p in range(50, 55)]
    + [f"{p}" for p in range(61, 66)]
    + ["71", "81", "82", "83"]
)


def reference_check(first17: str) -> str:
    """ISO 7064 MOD 11-2 written out from the standard, independently of the module."""
    remainder = sum(int(d) * (2 ** (17 - i) % 11) for i, d in enumerate(first17)) % 11
    return "10X98765432"[remainder]


def remainder_of(first17: str) -> int:
    return sum(int(d) * (2 ** (17 - i) % 11) for i, d in enumerate(first17)) % 11


def make_id(region: str = "110105", birth: str = "19491231", seq: str = "002") -> str:
    first17 = region + birth + seq
    return first17 + reference_check(first17)


def rejects(text: str, rule: str, **kwargs: dt.date) -> InvalidIdentity:
    """Parse ``text``, expect ``rule``, and check the message holds nothing of the input."""
    with pytest.raises(InvalidIdentity) as caught:
        parse_resident_id(text, **kwargs)
    exc = caught.value
    assert exc.rule == rule, str(exc)
    assert_no_trace_of(text, exc)
    return exc


def assert_no_trace_of(text: str, exc: InvalidIdentity) -> None:
    message = str(exc)
    assert exc.args == (message,)
    if exc.rule == "length":
        # The one message with digits states the count, in this exact form.
        assert re.sub(r"\d+ characters", "N characters", message) in {
            "resident ID is empty",
            "resident ID has N characters, needs 18",
        }
    else:
        assert not re.search(r"\d", message), message
    # No 4-character piece of the input that holds a digit (the mask shows 4 of them).
    for start in range(max(len(text) - 3, 0)):
        window = text[start : start + 4]
        assert not (re.search(r"[0-9]", window) and window in message), message


# --- the check character ---------------------------------------------------------------


def test_the_worked_example_of_the_standard_parses() -> None:
    rid = parse_resident_id(GB_EXAMPLE, today=TODAY)
    assert rid.number == GB_EXAMPLE
    assert (rid.province, rid.region) == ("11", "110105")
    assert rid.birth_date == dt.date(1949, 12, 31)
    assert rid.sex == "female"  # 17th digit 2 is even
    assert check_character(GB_EXAMPLE[:17]) == "X"


def test_weights_are_powers_of_two_mod_eleven() -> None:
    weights = [2 ** (17 - i) % 11 for i in range(17)]
    assert weights == [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    for position, weight in enumerate(weights):
        first17 = "0" * position + "1" + "0" * (16 - position)
        assert check_character(first17) == "10X98765432"[weight]


@pytest.mark.parametrize("remainder", range(11))
def test_check_character_for_every_remainder(remainder: int) -> None:
    """Each remainder 0..10 maps to 1 0 X 9 8 7 6 5 4 3 2, on a real-looking number."""
    first17 = next(
        candidate
        for tail in range(100)
        if remainder_of(candidate := f"11010519491231{tail:02d}1") == remainder
    )
    expected = "10X98765432"[remainder]
    assert check_character(first17) == expected
    assert parse_resident_id(first17 + expected, today=TODAY).number == first17 + expected
    wrong = next(c for c in "0123456789X" if c != expected)
    rejects(first17 + wrong, "check_character", today=TODAY)


@pytest.mark.parametrize("bad", ["", "1234567890123456", "123456789012345678", "1101051949123100X"])
def test_check_character_needs_17_digits(bad: str) -> None:
    with pytest.raises(InvalidIdentity) as caught:
        check_character(bad)
    assert caught.value.rule == "length"


# --- valid numbers -----------------------------------------------------------------------


def test_lowercase_x_is_accepted_and_normalised() -> None:
    rid = parse_resident_id(GB_EXAMPLE.lower(), today=TODAY)
    assert rid.number == GB_EXAMPLE
    assert rid == parse_resident_id(GB_EXAMPLE, today=TODAY)


@pytest.mark.parametrize("province", VALID_PROVINCES)
def test_every_province_of_gb_t_2260_is_accepted(province: str) -> None:
    number = make_id(region=province + "0000")
    assert parse_resident_id(number, today=TODAY).province == province


def test_the_province_list_is_exactly_gb_t_2260_plus_83() -> None:
    assert set(VALID_PROVINCES) == PROVINCE_CODES
    for code in range(100):
        province = f"{code:02d}"
        if province not in PROVINCE_CODES:
            rejects(make_id(region=province + "0101"), "province", today=TODAY)


@pytest.mark.parametrize(
    ("region", "what"),
    [("810000", "Hong Kong"), ("820000", "Macao"), ("830000", "Taiwan")],
)
def test_residence_permit_numbers_are_resident_ids(region: str, what: str) -> None:
    assert parse_resident_id(make_id(region=region), today=TODAY).region == region, what


@pytest.mark.parametrize(("seq", "sex"), [("001", "male"), ("002", "female"), ("999", "male")])
def test_sex_is_the_parity_of_the_17th_digit(seq: str, sex: str) -> None:
    assert parse_resident_id(make_id(seq=seq), today=TODAY).sex == sex


@pytest.mark.parametrize("birth", ["20000229", "20240229", "19000101", "19960229"])
def test_real_dates_including_leap_days_are_accepted(birth: str) -> None:
    rid = parse_resident_id(make_id(birth=birth), today=TODAY)
    assert rid.birth_date.strftime("%Y%m%d") == birth


def test_born_today_is_accepted_and_tomorrow_is_not() -> None:
    assert parse_resident_id(make_id(birth="20261125"), today=TODAY).birth_date == TODAY
    rejects(make_id(birth="20261126"), "future_birth_date", today=TODAY)


def test_default_today_rejects_a_far_future_birth_and_accepts_an_old_one() -> None:
    rejects(make_id(birth="29990101"), "future_birth_date")
    assert parse_resident_id(make_id(birth="19800101")).birth_date.year == 1980


# --- rejections --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("birth", "rule"),
    [
        ("19990230", "birth_date"),
        ("19000229", "birth_date"),  # 1900 is not a leap year (divisible by 100)
        ("20230229", "birth_date"),
        ("20100431", "birth_date"),
        ("20100001", "birth_date"),
        ("20101301", "birth_date"),
        ("20100100", "birth_date"),
        ("20100132", "birth_date"),
        ("18991231", "birth_date"),  # implausibly early
        ("00000101", "birth_date"),
        ("20270101", "future_birth_date"),
    ],
)
def test_birth_dates_that_do_not_exist_or_are_future_are_rejected(birth: str, rule: str) -> None:
    rejects(make_id(birth=birth), rule, today=TODAY)


@pytest.mark.parametrize("province", ["00", "99", "84", "10", "72", "80", "91"])
def test_unknown_provinces_are_rejected(province: str) -> None:
    rejects(make_id(region=province + "0101"), "province", today=TODAY)


def test_legacy_15_digit_numbers_are_rejected() -> None:
    rejects("110105491231002", "legacy_15_digit", today=TODAY)


@pytest.mark.parametrize("length", [1, 14, 16, 17, 19, 36])
def test_wrong_lengths_are_rejected_with_the_count(length: int) -> None:
    text = (make_id() * 2)[:length]
    exc = rejects(text, "length", today=TODAY)
    assert str(exc) == f"resident ID has {length} characters, needs 18"


def test_the_empty_string_is_rejected() -> None:
    assert str(rejects("", "length")) == "resident ID is empty"


@pytest.mark.parametrize(
    "text",
    [
        " " + GB_EXAMPLE,
        GB_EXAMPLE + " ",
        GB_EXAMPLE + "\n",
        "110105 19491231002X",
        "1101051949\t1231002",
        "110105\u300019491231002X",  # ideographic space
        "110105\u00a01949123100X",  # no-break space
    ],
)
def test_whitespace_anywhere_is_rejected(text: str) -> None:
    rejects(text, "whitespace", today=TODAY)


@pytest.mark.parametrize(
    "text",
    [
        "１１０１０５１９４９１２３１００２Ｘ",  # all full-width
        "１10105194912310 02X".replace(" ", ""),  # one full-width digit
        "11010519491231002Ｘ",  # full-width X
        "11010519491231002ｘ",
    ],
)
def test_full_width_characters_are_rejected(text: str) -> None:
    rejects(text, "full_width", today=TODAY)


@pytest.mark.parametrize(
    "text",
    [
        "11010519491231002A",
        "1101051949123100AX",
        "110105194912310X2X",  # X before the last position
        "X1010519491231002X",
        "11010519491231002-",
        "1101051949-231002X",
        "11010519491231002\u0663",  # ARABIC-INDIC DIGIT THREE: a digit to str.isdigit()
        "11010519491231002\u00b2",  # SUPERSCRIPT TWO
        "张三10519491231002X",
        "110105194912310021\x00",
    ],
)
def test_any_other_character_is_rejected(text: str) -> None:
    rejects(text, "character", today=TODAY)


def test_the_error_is_a_contract_error_dead_lettered_as_realname() -> None:
    exc = rejects(make_id(birth="19990230"), "birth_date", today=TODAY)
    assert isinstance(exc, ContractError)
    assert isinstance(exc, ValueError)
    assert exc.reason == InvalidIdentity.reason == "realname"
    # date()'s own error is not chained on: a traceback shows only ours.
    assert exc.__cause__ is None
    assert exc.__suppress_context__


# --- properties --------------------------------------------------------------------------

province_codes = st.sampled_from(VALID_PROVINCES)
birth_dates = st.dates(min_value=dt.date(1900, 1, 1), max_value=TODAY)


@st.composite
def valid_first17(draw: st.DrawFn) -> str:
    region = draw(province_codes) + draw(st.from_regex(r"[0-9]{4}", fullmatch=True))
    seq = draw(st.from_regex(r"[0-9]{3}", fullmatch=True))
    return region + draw(birth_dates).strftime("%Y%m%d") + seq


@given(valid_first17())
def test_any_valid_prefix_with_its_check_character_parses(first17: str) -> None:
    number = first17 + reference_check(first17)
    rid = parse_resident_id(number, today=TODAY)
    assert rid.number == number
    assert check_character(first17) == number[17]
    assert rid.birth_date.strftime("%Y%m%d") == first17[6:14]
    assert rid.sex == ("male" if int(first17[16]) % 2 else "female")
    assert parse_resident_id(number.lower(), today=TODAY) == rid


@given(valid_first17(), st.integers(min_value=0, max_value=16), st.integers(1, 9))
def test_any_single_digit_change_is_caught(first17: str, position: int, delta: int) -> None:
    """MOD 11-2 catches every single substitution; the province or date may fail first."""
    number = first17 + reference_check(first17)
    changed_digit = str((int(number[position]) + delta) % 10)
    changed = number[:position] + changed_digit + number[position + 1 :]
    with pytest.raises(InvalidIdentity) as caught:
        parse_resident_id(changed, today=TODAY)
    assert caught.value.rule in {"check_character", "province", "birth_date", "future_birth_date"}
    assert_no_trace_of(changed, caught.value)


@given(valid_first17(), st.integers(min_value=0, max_value=15))
def test_any_adjacent_transposition_is_caught(first17: str, position: int) -> None:
    number = first17 + reference_check(first17)
    a, b = number[position], number[position + 1]
    if a == b:
        return
    swapped = number[:position] + b + a + number[position + 2 :]
    with pytest.raises(InvalidIdentity) as caught:
        parse_resident_id(swapped, today=TODAY)
    assert caught.value.rule in {"check_character", "province", "birth_date", "future_birth_date"}


@given(st.text(max_size=24))
def test_arbitrary_text_is_parsed_or_rejected_without_a_trace(text: str) -> None:
    try:
        rid = parse_resident_id(text, today=TODAY)
    except InvalidIdentity as exc:
        assert_no_trace_of(text, exc)
    else:
        assert rid.number == text.upper()


# --- the value object --------------------------------------------------------------------


def test_repr_and_str_show_the_number_masked_and_nothing_else() -> None:
    rid = parse_resident_id(GB_EXAMPLE, today=TODAY)
    assert repr(rid) == "ResidentId(1101**********002X)"
    assert str(rid) == rid.masked() == "1101**********002X"
    assert "1949" not in repr(rid)
    assert "female" not in repr(rid)
    assert masked_resident_id(GB_EXAMPLE) == "1101**********002X"
    with pytest.raises(InvalidIdentity):
        masked_resident_id("E12345678")


def test_resident_id_is_frozen_and_checks_direct_construction() -> None:
    rid = ResidentId(GB_EXAMPLE)
    assert rid.birth_date == dt.date(1949, 12, 31)
    with pytest.raises(AttributeError):
        rid.number = "x"  # type: ignore[misc]
    for bad, rule in [
        (GB_EXAMPLE.lower(), "character"),
        (GB_EXAMPLE[:-1] + "1", "check_character"),
        (" " + GB_EXAMPLE, "whitespace"),
        (make_id(region="990101"), "province"),
    ]:
        with pytest.raises(InvalidIdentity) as caught:
            ResidentId(bad)
        assert caught.value.rule == rule


# --- other documents ---------------------------------------------------------------------


def new_fpr(body16: str = "1560000019900101") -> str:
    first17 = "9" + body16
    return first17 + reference_check(first17)


@pytest.mark.parametrize(
    ("id_type", "text", "canonical"),
    [
        ("resident", GB_EXAMPLE.lower(), GB_EXAMPLE),
        ("passport", "E12345678", "E12345678"),
        ("passport", "EF1260892", "EF1260892"),
        ("passport", "g12345678", "G12345678"),
        ("passport", "SE1234567", "SE1234567"),
        ("passport", "C01X00T47", "C01X00T47"),  # a German passport number's shape
        ("passport", "12345", "12345"),
        ("passport", "AB1234567890ABCDE", "AB1234567890ABCDE"),
        ("hk_macao_permit", "H12345678", "H12345678"),
        ("hk_macao_permit", "M1234567801", "M1234567801"),
        ("hk_macao_permit", "h1234567800", "H1234567800"),
        ("taiwan_permit", "12345678", "12345678"),
        ("taiwan_permit", "1234567801", "1234567801"),
        ("taiwan_permit", "1234567801B", "1234567801B"),
        ("foreign_permanent_residence", "USA110090101001", "USA110090101001"),
        ("foreign_permanent_residence", "usa110090101001", "USA110090101001"),
        ("foreign_permanent_residence", new_fpr(), new_fpr()),
    ],
)
def test_documents_in_their_formats_are_accepted_canonical(
    id_type: str, text: str, canonical: str
) -> None:
    assert parse_document(id_type, text) == canonical  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("id_type", "text", "rule"),
    [
        ("resident", GB_EXAMPLE[:-1] + "1", "check_character"),
        ("passport", "E123", "passport"),  # too short
        ("passport", "ABCDEFGHI", "passport"),  # no digit
        ("passport", "E" + "1" * 17, "passport"),  # too long
        ("passport", "E1234-5678", "passport"),
        ("passport", "", "passport"),
        ("passport", "E1234 5678", "whitespace"),
        ("passport", "Ｅ12345678", "full_width"),
        ("hk_macao_permit", "K12345678", "hk_macao_permit"),
        ("hk_macao_permit", "H1234567", "hk_macao_permit"),
        ("hk_macao_permit", "H123456789", "hk_macao_permit"),
        ("hk_macao_permit", "H123456780123", "hk_macao_permit"),
        ("taiwan_permit", "1234567", "taiwan_permit"),
        ("taiwan_permit", "123456789", "taiwan_permit"),
        ("taiwan_permit", "T12345678", "taiwan_permit"),
        ("taiwan_permit", "1234567801(B)", "taiwan_permit"),
        ("taiwan_permit", "１２３４５６７８", "full_width"),
        ("foreign_permanent_residence", "US1100901010012", "foreign_permanent_residence"),
        ("foreign_permanent_residence", "USA11009010100", "foreign_permanent_residence"),
        ("foreign_permanent_residence", "8" + new_fpr()[1:], "foreign_permanent_residence"),
        ("foreign_permanent_residence", new_fpr()[:-1] + "Y", "foreign_permanent_residence"),
        ("foreign_permanent_residence", GB_EXAMPLE, "foreign_permanent_residence"),
    ],
)
def test_documents_out_of_format_are_rejected(id_type: str, text: str, rule: str) -> None:
    with pytest.raises(InvalidIdentity) as caught:
        parse_document(id_type, text)  # type: ignore[arg-type]
    assert caught.value.rule == rule
    assert caught.value.reason == "realname"
    assert not re.search(r"\d", str(caught.value))


def test_new_permanent_residence_cards_carry_a_mod_11_2_check_character() -> None:
    good = new_fpr()
    wrong = good[:-1] + next(c for c in "0123456789X" if c != good[-1])
    with pytest.raises(InvalidIdentity) as caught:
        parse_document("foreign_permanent_residence", wrong)
    assert caught.value.rule == "check_character"


# --- mobile numbers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "13800138000",
        "138 0013 8000",
        "138-0013-8000",
        "+8613800138000",
        "+86 138 0013 8000",
        "008613800138000",
        "0086-138-0013-8000",
        "8613800138000",
    ],
)
def test_mobile_numbers_are_normalised_to_11_digits(text: str) -> None:
    assert parse_mobile(text) == "13800138000"


@pytest.mark.parametrize("prefix", ["13", "14", "15", "16", "17", "18", "19"])
def test_every_mobile_prefix_1_3_to_1_9_is_accepted(prefix: str) -> None:
    assert parse_mobile(prefix + "912345678") == prefix + "912345678"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1380013800",  # 10 digits
        "138001380001",  # 12 digits
        "12800138000",  # 12x is not a mobile prefix
        "10086",
        "23800138000",
        "+8513800138000",
        "+86",
        "086 13800138000",
        "+86+8613800138000",
        "138.0013.8000",
        "(138)00138000",
        "138\t0013\t8000",
        "１３８００１３８０００",
        "1380013800\u0660",  # ARABIC-INDIC DIGIT ZERO
        "tel:13800138000",
        "010-12345678",  # a landline
    ],
)
def test_anything_else_is_not_a_mobile_number(text: str) -> None:
    with pytest.raises(InvalidIdentity) as caught:
        parse_mobile(text)
    assert caught.value.rule == "mobile"
    assert str(caught.value) == "not a mainland mobile number"
