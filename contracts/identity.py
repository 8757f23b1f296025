"""Identity document numbers and mainland mobile numbers, validated where they enter.

A resident ID number (公民身份号码, GB 11643-1999) is 18 characters: a 6-digit address
code whose first two digits are a province of GB/T 2260, an 8-digit birth date, a
3-digit sequence number (odd for men, even for women) and a check character computed
with ISO 7064 MOD 11-2. :func:`parse_resident_id` checks all of it and returns a
:class:`ResidentId`; :func:`parse_document` checks the formats of the other documents a
sender may show; :func:`parse_mobile` checks a mainland mobile number.

These numbers are personal data: an :class:`InvalidIdentity` names the rule that failed
and never quotes the input or any part of it, and a :class:`ResidentId` shows itself
masked. Apart from the length message (which states a count), rejection messages hold no
digits at all, so no message can carry a fragment of a number.

Rules (``InvalidIdentity.rule``):

======================= =============================================================
``length``              empty, or not 18 characters (resident ID)
``legacy_15_digit``     a first-generation 15-digit number: no longer accepted
``whitespace``          any whitespace, inside or around the number
``full_width``          full-width digits or letters (１, Ｘ): the reader or clerk must
                        send ASCII
``character``           any other character, or X anywhere but last
``province``            the first two digits are not a GB/T 2260 province
``birth_date``          not a calendar date (19990230), or before 1900
``future_birth_date``   a birth date after today (Beijing calendar date)
``check_character``     the ISO 7064 MOD 11-2 check character does not match
``passport``            not a passport number (see :func:`parse_document`)
``hk_macao_permit``     not a Hong Kong/Macao permit number (回乡证)
``taiwan_permit``       not a Taiwan permit number (台胞证)
``foreign_permanent_residence``  not a foreign permanent residence card number
``mobile``              not a mainland mobile number
======================= =============================================================
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Final, Literal

from contracts.errors import ContractError
from contracts.events import IdType

__all__ = [
    "PROVINCE_CODES",
    "InvalidIdentity",
    "ResidentId",
    "check_character",
    "masked_resident_id",
    "parse_document",
    "parse_mobile",
    "parse_resident_id",
]


class InvalidIdentity(ContractError):
    """An identity document or phone number that breaks its rules.

    ``reason`` is the dead-letter reason shared by all of them; ``rule`` names the rule
    that failed (see the module docstring). The message never contains the input.
    """

    reason = "realname"

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


# Province-level codes of GB/T 2260 (2007 edition and the Ministry of Civil Affairs' code
# list since): 11-15 North, 21-23 North-East, 31-37 East, 41-46 Central-South, 50-54
# South-West (50 Chongqing), 61-65 North-West, 71 Taiwan, 81 Hong Kong, 82 Macao.
# 83 is not a GB/T 2260 province: it is the address code 830000 of the residence permits
# for Taiwan residents (Hong Kong and Macao residents' permits use 810000 and 820000),
# issued since 2018-09-01 with numbers in the resident ID format.
PROVINCE_CODES: Final[frozenset[str]] = frozenset(
    [str(code) for code in range(11, 16)]
    + ["21", "22", "23"]
    + [str(code) for code in range(31, 38)]
    + [str(code) for code in range(41, 47)]
    + [str(code) for code in range(50, 55)]
    + [str(code) for code in range(61, 66)]
    + ["71", "81", "82", "83"]
)

# ISO 7064 MOD 11-2: weight of position i (0-based, left to right) is 2**(17 - i) mod 11;
# the remainder of the weighted sum mod 11 indexes the check character.
_WEIGHTS: Final = tuple(pow(2, 17 - i, 11) for i in range(17))
_CHECK_CHARACTERS: Final = "10X98765432"

_EARLIEST_YEAR: Final = 1900
# Beijing time (no daylight saving): a birth date is a calendar date where the ID is issued.
_CHINA_TZ: Final = dt.timezone(dt.timedelta(hours=8))

_ASCII_DIGITS: Final = frozenset("0123456789")


def check_character(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character for the first 17 digits of a resident ID."""
    if len(first17) != 17 or not set(first17) <= _ASCII_DIGITS:
        raise InvalidIdentity("length", "a check character needs 17 ASCII digits")
    total = sum(int(digit) * weight for digit, weight in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARACTERS[total % 11]


def masked_resident_id(number: str) -> str:
    """``number`` with all but its first 4 and last 4 characters starred (1101**********002X)."""
    if len(number) != 18:
        raise InvalidIdentity("length", "only a full-length resident ID can be masked")
    return f"{number[:4]}{'*' * 10}{number[-4:]}"


@dataclass(frozen=True, repr=False)
class ResidentId:
    """A valid resident ID number, canonical (X upper case), with the facts it encodes.

    Build it with :func:`parse_resident_id`, which also rejects future birth dates (that
    rule needs a clock). Constructing it directly checks everything else. Its repr and
    str show the number masked, and nothing of the birth date or sex.
    """

    number: str
    province: str = field(init=False)
    region: str = field(init=False)
    birth_date: dt.date = field(init=False)
    sex: Literal["male", "female"] = field(init=False)

    def __post_init__(self) -> None:
        _check_characters(self.number)
        if self.number.endswith("x"):
            raise InvalidIdentity("character", "a ResidentId holds the canonical upper-case X")
        birth_date = _check_structure(self.number)
        object.__setattr__(self, "province", self.number[:2])
        object.__setattr__(self, "region", self.number[:6])
        object.__setattr__(self, "birth_date", birth_date)
        object.__setattr__(self, "sex", "male" if int(self.number[16]) % 2 else "female")

    def masked(self) -> str:
        """The number for display: 1101**********002X."""
        return masked_resident_id(self.number)

    def __repr__(self) -> str:
        return f"ResidentId({self.masked()})"

    def __str__(self) -> str:
        return self.masked()


def parse_resident_id(text: str, *, today: dt.date | None = None) -> ResidentId:
    """Validate a resident ID number (lower-case x accepted) and return it canonical.

    ``today`` is the latest acceptable birth date; by default today's date in Beijing.
    Raises :class:`InvalidIdentity` naming the first rule that fails.
    """
    _check_characters(text)
    number = text.upper()
    birth_date = _check_structure(number)
    if today is None:
        today = dt.datetime.now(_CHINA_TZ).date()
    if birth_date > today:
        raise InvalidIdentity("future_birth_date", "birth date is in the future")
    return ResidentId(number)


def _check_characters(text: str) -> None:
    """The character-level rules, in the order that gives the most useful reason."""
    if not text:
        raise InvalidIdentity("length", "resident ID is empty")
    if any(char.isspace() for char in text):
        raise InvalidIdentity("whitespace", "resident ID contains whitespace")
    if any(_is_full_width(char) for char in text):
        raise InvalidIdentity("full_width", "resident ID contains full-width characters")
    if not set(text) <= _ASCII_DIGITS | {"X", "x"}:
        raise InvalidIdentity("character", "resident ID may hold only digits and a final X")
    if len(text) == 15 and set(text) <= _ASCII_DIGITS:
        raise InvalidIdentity(
            "legacy_15_digit", "first-generation (fifteen-digit) resident IDs are not accepted"
        )
    if len(text) != 18:
        raise InvalidIdentity("length", f"resident ID has {len(text)} characters, needs 18")
    if not set(text[:17]) <= _ASCII_DIGITS:
        raise InvalidIdentity("character", "only the last character of a resident ID may be X")


def _check_structure(number: str) -> dt.date:
    """Province, birth date (not its future) and check character of a canonical number."""
    if number[:2] not in PROVINCE_CODES:
        raise InvalidIdentity("province", "resident ID has no known province code")
    birth_date = _birth_date(number[6:14])
    if check_character(number[:17]) != number[17]:
        raise InvalidIdentity("check_character", "resident ID check character does not match")
    return birth_date


def _birth_date(digits: str) -> dt.date:
    year, month, day = int(digits[:4]), int(digits[4:6]), int(digits[6:])
    if year < _EARLIEST_YEAR:
        raise InvalidIdentity("birth_date", "resident ID birth year is implausibly early")
    try:
        return dt.date(year, month, day)
    except ValueError:
        raise InvalidIdentity("birth_date", "resident ID birth date is not a real date") from None


def _is_full_width(char: str) -> bool:
    """Full-width ASCII forms (U+FF01..U+FF5E, e.g. １ and Ｘ), as Chinese input methods type."""
    return "\uff01" <= char <= "\uff5e"


# --- other documents ------------------------------------------------------------------------

# Passports (any nationality; ICAO Doc 9303 prints up to 9 characters in the MRZ and lets
# longer numbers overflow): 5 to 17 letters and digits with at least one digit. Chinese
# ordinary passports are E + 8 digits, E + a letter (not I or O) + 7 digits (since
# 2017-04), or G + 8 digits (older, no chip); service and diplomatic passports are SE/PE/DE
# + 7 digits. All fit the general rule, which a foreign passport must pass anyway, so a
# narrower Chinese rule would reject nothing more without knowing the nationality.
_PASSPORT: Final = re.compile(r"(?=[A-Z0-9]*[0-9])[A-Z0-9]{5,17}")
# 港澳居民来往内地通行证 (MPS number rules of 2010): H (Hong Kong) or M (Macao), the
# 8-digit lifetime number, then 2 digits counting reissues; the 2013 card prints only the
# letter and the lifetime number. Both accepted.
_HK_MACAO_PERMIT: Final = re.compile(r"[HM][0-9]{8}(?:[0-9]{2})?")
# 台湾居民来往大陆通行证: 8-digit lifetime number since 2008-09-25 (and on the 2015 card);
# booklets issued before carry 2 more digits counting issues, and those issued in Hong Kong
# and Macao an issuing-office code, printed in brackets (accepted without the brackets:
# the wire carries letters and digits only). Sources disagree on that code's form, so any
# one letter or digit is accepted.
_TAIWAN_PERMIT: Final = re.compile(r"[0-9]{8}(?:[0-9]{2}[A-Z0-9]?)?")
# 外国人永久居留身份证: 3 letters (nationality) + 12 digits on the 2004 and 2017 cards; the
# 2023-12-01 card has 18: "9" (foreigner), 16 digits and an ISO 7064 MOD 11-2 check
# character like a resident ID (NIA machine-readable rules for the 2023 card).
_FPR_OLD: Final = re.compile(r"[A-Z]{3}[0-9]{12}")
_FPR_NEW: Final = re.compile(r"9[0-9]{16}[0-9X]")

_DOCUMENT_PATTERNS: Final[dict[str, tuple[re.Pattern[str], ...]]] = {
    "passport": (_PASSPORT,),
    "hk_macao_permit": (_HK_MACAO_PERMIT,),
    "taiwan_permit": (_TAIWAN_PERMIT,),
    "foreign_permanent_residence": (_FPR_OLD, _FPR_NEW),
}

_DOCUMENT_NAMES: Final = {
    "passport": "passport number",
    "hk_macao_permit": "Hong Kong/Macao permit number",
    "taiwan_permit": "Taiwan permit number",
    "foreign_permanent_residence": "permanent residence card number",
}


def parse_document(id_type: IdType, text: str) -> str:
    """Validate a document number of type ``id_type`` and return it canonical (upper case).

    Resident IDs go through :func:`parse_resident_id`. Raises :class:`InvalidIdentity`.
    """
    if id_type == "resident":
        return parse_resident_id(text).number
    name = _DOCUMENT_NAMES[id_type]
    if not text:
        raise InvalidIdentity(id_type, f"{name} is empty")
    if any(char.isspace() for char in text):
        raise InvalidIdentity("whitespace", f"{name} contains whitespace")
    if any(_is_full_width(char) for char in text):
        raise InvalidIdentity("full_width", f"{name} contains full-width characters")
    number = text.upper()
    if not any(pattern.fullmatch(number) for pattern in _DOCUMENT_PATTERNS[id_type]):
        raise InvalidIdentity(id_type, f"{name} does not have a valid format")
    new_fpr = id_type == "foreign_permanent_residence" and _FPR_NEW.fullmatch(number)
    if new_fpr and check_character(number[:17]) != number[17]:
        raise InvalidIdentity("check_character", f"{name} check character does not match")
    return number


# --- mobile numbers -------------------------------------------------------------------------

# Mainland mobile numbers: 11 digits, 1 then 3-9 (MIIT numbering plan: 13x-19x), after an
# optional country code. [0-9], not \d: \d also matches other scripts' digits.
_MOBILE: Final = re.compile(r"(?:\+86|0086|86)?(1[3-9][0-9]{9})")


def parse_mobile(text: str) -> str:
    """Validate a mainland mobile number and return its 11 digits.

    An optional ``+86``, ``0086`` or ``86`` prefix and ASCII spaces and hyphens anywhere
    are removed first; anything else fails with rule ``mobile``.
    """
    compact = text.replace(" ", "").replace("-", "")
    match = _MOBILE.fullmatch(compact)
    if match is None:
        raise InvalidIdentity("mobile", "not a mainland mobile number")
    return match.group(1)
