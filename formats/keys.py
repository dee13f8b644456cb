"""Reversible encoding of untrusted strings into S3 path segments and Redis key parts.

The encoding is percent-encoding of UTF-8 with nothing kept but unreserved characters,
``urllib.parse.quote(s, safe="")``, and one more rule: a leading ``.`` or ``_`` is escaped
as well. A reader in any language computes the same keys with those two steps.

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

from functools import lru_cache
from typing import Final
from urllib.parse import quote, unquote

__all__ = ["MAX_ENCODED_PART_CHARS", "MAX_PART_CHARS", "decode_key_part", "encode_key_part"]

MAX_PART_CHARS: Final = 256
MAX_ENCODED_PART_CHARS: Final = MAX_PART_CHARS * 4 * 3

_HIDDEN_PREFIXES: Final = {".": "%2E", "_": "%5F"}


# A window's rows encode every event type several times (Redis keys, S3 paths), and the same types
# come back window after window: a bounded cache (a few MB) makes that one encoding per type.
@lru_cache(maxsize=32_768)
def encode_key_part(text: str) -> str:
    """Encode ``text`` (1..MAX_PART_CHARS code points) as a safe key part.

    It is ``urllib.parse.quote(text, safe="")`` (UTF-8, uppercase hex, nothing but
    ``[A-Za-z0-9._~-]`` left as is), with a leading ``.`` or ``_`` escaped too: any language's
    percent-encoding plus that one rule computes the same keys. Raises ValueError for empty or
    too long text and for lone surrogates. The result is non-empty, at most
    MAX_ENCODED_PART_CHARS long, and ``decode_key_part`` inverts it.
    """
    if not text:
        raise ValueError("cannot encode an empty key part: it would vanish from the path")
    if len(text) > MAX_PART_CHARS:
        raise ValueError(f"key part has {len(text)} characters, max {MAX_PART_CHARS}")
    text.encode("utf-8")  # UnicodeEncodeError (a ValueError) for lone surrogates
    part = quote(text, safe="")
    return _HIDDEN_PREFIXES.get(part[0], part[0]) + part[1:]


def decode_key_part(part: str) -> str:
    """Inverse of :func:`encode_key_part`.

    Strict: only the exact output of encode_key_part is accepted (no lowercase hex, no
    needless escapes, valid UTF-8), so each string has one encoding.
    """
    try:
        text = unquote(part, errors="strict")
    except UnicodeDecodeError as exc:
        raise ValueError(f"key part does not decode to UTF-8: {exc.reason}") from exc
    if not text or encode_key_part(text) != part:
        raise ValueError("key part is not in canonical encoded form")
    return text
