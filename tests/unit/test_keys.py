from __future__ import annotations

import random
import re
import urllib.parse

import pytest

from formats.keys import MAX_ENCODED_PART_CHARS, MAX_PART_CHARS, decode_key_part, encode_key_part

_ALLOWED = re.compile(r"[A-Za-z0-9._~%-]+")

HOSTILE = [
    "/",
    "a/b",
    ".",
    "..",
    "...",
    "../../etc/passwd",
    "./x",
    "_hidden",
    ".hidden",
    "_",
    "year=2024",
    "=",
    "a=b/c=d",
    "\x00",
    "a\x00b",
    "\n",
    "\r\n",
    "*",
    "?",
    "[abc]",
    "{tag}",
    "key:part",
    "%",
    "%2F",
    "%252F",
    "~",
    "-",
    " ",
    "\\",
    "ü",
    "\u200b",
    "\ufeff",
    "😀" * 200,
    "e\u0301",  # decomposed é
    "\u00e9",  # composed é: must encode differently from the above
    "x" * 256,
]


def _assert_safe(encoded: str) -> None:
    assert _ALLOWED.fullmatch(encoded), encoded
    assert encoded not in (".", "..")
    assert encoded[0] not in "._"
    assert len(encoded) <= MAX_ENCODED_PART_CHARS


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_encode_safely_and_round_trip(text: str) -> None:
    encoded = encode_key_part(text)
    _assert_safe(encoded)
    for forbidden in "/=*?[]{}:\\ \x00\n":
        assert forbidden not in encoded
    assert decode_key_part(encoded) == text
    # Standard percent-decoding agrees, so other tools can read the keys.
    assert urllib.parse.unquote(encoded, errors="strict") == text


def test_injective_on_hostile_and_random_strings() -> None:
    rng = random.Random(42)
    alphabet = "aZ09._~-/%=:*?[]{}\x00\n 😀é\u0301"
    texts = set(HOSTILE)
    while len(texts) < 3_000:
        texts.add("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))))
    encodings = {encode_key_part(text) for text in texts}
    assert len(encodings) == len(texts)
    for text in texts:
        assert decode_key_part(encode_key_part(text)) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("click", "click"),
        ("page_view", "page_view"),
        ("a-b.c~d", "a-b.c~d"),
        (".", "%2E"),
        ("..", "%2E."),
        ("_x", "%5Fx"),
        ("x_", "x_"),
        ("a/b", "a%2Fb"),
        ("k=v", "k%3Dv"),
        ("a:b", "a%3Ab"),
        ("*?[]{}", "%2A%3F%5B%5D%7B%7D"),
        ("%", "%25"),
        ("\x00\n", "%00%0A"),
        ("é", "%C3%A9"),
        ("😀", "%F0%9F%98%80"),
    ],
)
def test_exact_encodings(text: str, expected: str) -> None:
    assert encode_key_part(text) == expected
    assert decode_key_part(expected) == text


def test_matches_quote_except_leading_dot_or_underscore() -> None:
    rng = random.Random(3)
    for _ in range(500):
        text = "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randint(1, 12)))
        expected = urllib.parse.quote(text, safe="")
        if text[0] in "._":
            expected = f"%{ord(text[0]):02X}" + expected[1:]
        assert encode_key_part(text) == expected


def test_worst_case_length_bound_is_tight() -> None:
    assert MAX_ENCODED_PART_CHARS == 256 * 4 * 3 == 3072
    worst = encode_key_part("😀" * MAX_PART_CHARS)
    assert len(worst) == MAX_ENCODED_PART_CHARS
    assert len(encode_key_part("/" * MAX_PART_CHARS)) == 768


@pytest.mark.parametrize("text", ["", "x" * 257, "😀" * 257, "\ud800", "a\udfffb"])
def test_encode_rejects_outside_contract(text: str) -> None:
    with pytest.raises(ValueError):
        encode_key_part(text)


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "a/b",
        "%",
        "%2",
        "%zz",
        "%2f",  # lowercase hex is not canonical
        "%61",  # needless escape of "a"
        ".",
        "..",
        "_x",
        "%FF",  # not UTF-8
        "%ED%A0%80",  # encoded surrogate
        "é",
        "a b",
        "a*",
    ],
)
def test_decode_rejects_non_canonical(encoded: str) -> None:
    with pytest.raises(ValueError):
        decode_key_part(encoded)
