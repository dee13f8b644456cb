"""Reversible encoding of untrusted strings into S3 path segments and Redis key parts.

Output alphabet: ``[A-Za-z0-9._~-]`` plus ``%XX`` escapes (uppercase hex) of
UTF-8 bytes. Everything else is escaped, in particular:

* ``/`` (path separator) and ``=`` (Hive ``key=value`` partition syntax), so a
  value can neither add path levels nor fake a partition column;
* ``*`` ``?`` ``[`` ``]`` (Redis SCAN/KEYS glob patterns), ``:`` (our Redis key
  separator), ``{`` ``}`` (Redis Cluster hash tags: would pin keys to one slot);
* ``%`` itself, which is what makes the encoding injective;
* a leading ``.`` or ``_``: ``.``/``..`` are path traversal segments, and
  Hadoop/Spark/Hive-style readers skip names starting with ``.`` or ``_`` as
  hidden files, which would silently drop data.

Length contract: input is at most MAX_PART_CHARS (256) code points, callers
already reject longer strings; each code point is at most 4 UTF-8 bytes and
each byte at most 3 output characters, so output is at most
MAX_ENCODED_PART_CHARS = 256 * 4 * 3 = 3072 ASCII characters. ASCII-only
input (the common case) stays at most 768. Note that the worst case exceeds
S3's 1024-byte key limit: hostile values must not be embedded in S3 keys
unless the caller bounds them further (e.g. by UTF-8 byte length).
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_ENCODED_PART_CHARS", "MAX_PART_CHARS", "decode_key_part", "encode_key_part"]

MAX_PART_CHARS: Final = 256
MAX_ENCODED_PART_CHARS: Final = MAX_PART_CHARS * 4 * 3

_SAFE_BYTES: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-")
_HIDDEN_PREFIX_BYTES: Final = frozenset(b"._")
_HEX_DIGITS: Final = "0123456789ABCDEF"


def encode_key_part(text: str) -> str:
    """Encode ``text`` (1..MAX_PART_CHARS code points) as a safe key part.

    Raises ValueError for empty or too long text and for lone surrogates
    (UnicodeEncodeError is a ValueError). The result is non-empty, at most
    MAX_ENCODED_PART_CHARS long, uses only ``[A-Za-z0-9._~%-]``, never
    starts with ``.`` or ``_``, and ``decode_key_part`` inverts it.
    """
    if not text:
        raise ValueError("cannot encode an empty key part: it would vanish from the path")
    if len(text) > MAX_PART_CHARS:
        raise ValueError(f"key part has {len(text)} characters, max {MAX_PART_CHARS}")
    out: list[str] = []
    for index, byte in enumerate(text.encode("utf-8")):
        if byte in _SAFE_BYTES and not (index == 0 and byte in _HIDDEN_PREFIX_BYTES):
            out.append(chr(byte))
        else:
            out.append(f"%{_HEX_DIGITS[byte >> 4]}{_HEX_DIGITS[byte & 0xF]}")
    return "".join(out)


def decode_key_part(part: str) -> str:
    """Inverse of :func:`encode_key_part`.

    Strict: only the exact output of encode_key_part is accepted (no lowercase
    hex, no needless escapes, valid UTF-8), so each string has one encoding.
    """
    data = bytearray()
    index = 0
    while index < len(part):
        char = part[index]
        if char == "%":
            hex_text = part[index + 1 : index + 3]
            if len(hex_text) != 2 or any(digit not in _HEX_DIGITS for digit in hex_text):
                raise ValueError(f"invalid escape at index {index} in key part")
            data.append(int(hex_text, 16))
            index += 3
        else:
            if not char.isascii() or ord(char) not in _SAFE_BYTES:
                raise ValueError(f"invalid character {char!r} at index {index} in key part")
            data.append(ord(char))
            index += 1
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"key part does not decode to UTF-8: {exc.reason}") from exc
    if encode_key_part(text) != part:
        raise ValueError("key part is not in canonical encoded form")
    return text
