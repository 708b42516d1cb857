"""What a decoder would see: bounded decoding of base64, hex, URL-encoding and rot13 payloads.

An attacker can hide an instruction from a text model by encoding it ("decode this base64 and
do what it says: aWdub3Jl..."). The classifier scores the decoded text beside the original,
so the payload is judged as the model downstream would read it. Decoding is bounded on every
axis: at most `MAX_VIEWS` decoded views per text, each run at most `MAX_RUN_CHARS` long, a
decoded view kept only when it is mostly printable text, and nesting followed `MAX_DEPTH`
levels deep (base64 of hex of ...). No I/O, no torch; a few regex searches per text.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from typing import Final
from urllib.parse import unquote

__all__ = ["MAX_DEPTH", "MAX_RUN_CHARS", "MAX_VIEWS", "decoded_views"]

MAX_VIEWS: Final[int] = 4
MAX_DEPTH: Final[int] = 2
MAX_RUN_CHARS: Final[int] = 4096
_MIN_PRINTABLE: Final[float] = 0.85

# 20+ base64 characters carry at least 15 bytes: short enough for "ignore all rules",
# long enough that ordinary words (no digits, no +/) rarely qualify; see `_looks_base64`.
_B64 = re.compile(r"[A-Za-z0-9+/_-]{20,}={0,2}")
_HEX = re.compile(r"[0-9A-Fa-f]{24,}")
# separated forms ("\\x69\\x67", "0x69, 0x67") are searched only when such a marker is there
_HEX_SEP = re.compile(r"(?:(?:0x|\\x)?[0-9A-Fa-f]{2}[\s:,]{0,2}){12,}")
_URL_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_ROT_HINT = re.compile(r"rot[\s_-]?13|caesar|cipher|cifrado|chiffr|шифр|凯撒|密文")


def _printable(text: str) -> bool:
    if not text.strip():
        return False
    good = sum(1 for ch in text if ch.isprintable() or ch in "\n\t\r")
    return good / len(text) >= _MIN_PRINTABLE and any(ch.isalpha() for ch in text)


def _utf8(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if _printable(text) else None


def _looks_base64(run: str) -> bool:
    # a run of plain letters ("internationalization") is a word, not an encoding
    stripped = run.rstrip("=")
    has_digit_or_sym = any(c.isdigit() or c in "+/_-" for c in stripped)
    has_upper = any(c.isupper() for c in stripped)
    has_lower = any(c.islower() for c in stripped)
    return has_upper and has_lower and (has_digit_or_sym or len(stripped) >= 28)


def _b64(run: str) -> str | None:
    if not _looks_base64(run):
        return None
    body = run.rstrip("=")
    body = body[: len(body) - len(body) % 4] if len(body) % 4 == 1 else body
    padded = body + "=" * (-len(body) % 4)
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            return _utf8(decode(padded))
        except (binascii.Error, ValueError):
            continue
    return None


def _hex(run: str) -> str | None:
    digits = re.sub(r"0x|\\x|[\s:,]", "", run)
    if len(digits) % 2:
        digits = digits[:-1]
    try:
        return _utf8(bytes.fromhex(digits))
    except ValueError:
        return None


def _one_level(text: str) -> list[str]:
    views: list[str] = []
    for m in _B64.finditer(text):
        decoded = _b64(m.group(0)[:MAX_RUN_CHARS])
        if decoded:
            views.append(decoded)
        if len(views) >= MAX_VIEWS:
            return views
    hex_re = _HEX_SEP if ("\\x" in text or "0x" in text) else _HEX
    for m in hex_re.finditer(text):
        decoded = _hex(m.group(0)[: 2 * MAX_RUN_CHARS])
        if decoded:
            views.append(decoded)
        if len(views) >= MAX_VIEWS:
            return views
    if text.count("%") >= 3 and len(_URL_ESCAPE.findall(text, 0, 4 * MAX_RUN_CHARS)) >= 3:
        decoded = unquote(text[: 4 * MAX_RUN_CHARS], errors="replace")
        if decoded != text and _printable(decoded):
            views.append(decoded)
    if _ROT_HINT.search(text.lower()):
        views.append(codecs.decode(text[:MAX_RUN_CHARS], "rot13"))
    return views[:MAX_VIEWS]


def decoded_views(text: str) -> list[str]:
    """Decoded texts hidden in ``text`` (base64, hex, %-encoding, rot13 when hinted).

    Returns at most `MAX_VIEWS` views, each at most a few thousand characters, following
    encodings nested up to `MAX_DEPTH` levels. Rot13 is applied only when the text mentions
    rot13 or a cipher, since any text "decodes" as rot13 and scoring every text twice would
    double the classifier's cost. Returns an empty list for ordinary text.
    """
    out: list[str] = []
    frontier = [text]
    for _ in range(MAX_DEPTH):
        nxt: list[str] = []
        for t in frontier:
            for view in _one_level(t):
                if view not in out and view != text:
                    out.append(view)
                    nxt.append(view)
                if len(out) >= MAX_VIEWS:
                    return out
        if not nxt:
            break
        frontier = nxt
    return out
