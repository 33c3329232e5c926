"""Caption cleanup: what LAION-style filters measure must be the text a user will see.

Order matters: unescape first (WAT keeps `&amp;` literally), then repair mojibake
(ftfy, only on non-ASCII text: ASCII cannot be mojibake and ftfy is the slowest step),
then turn control characters into spaces, drop invisible formatting characters, and collapse every run of whitespace to one space.
"""

from __future__ import annotations

import html
import re
import unicodedata

import ftfy

# C0/C1 control characters stood for some separator in the source: they become spaces.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# Invisible formatting that makes identical-looking captions hash differently is removed:
# zero-width space, LRM/RLM, bidi embeddings, word joiner, BOM. ZWNJ/ZWJ (U+200C/D) stay:
# Persian, Indic scripts and emoji sequences need them.
_INVISIBLE = re.compile("[\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\ufeff\ufffe\uffff]")
# What UTF-8 mojibake looks like: a UTF-8 lead byte read as cp1252/latin-1 (Â..ô) followed by
# a continuation byte read the same way, or read as cp1251 (Р/С followed by a cp1251 char of
# bytes 0x80-0xBF). Text without such a pair is left to NFC normalisation: ftfy costs ~0.2 ms.
_CP1252_CONT = "\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122"
_CP1251_CONT = (
    "\u0402\u0403\u201a\u0453\u201e\u2026\u2020\u2021\u20ac\u2030\u0409\u2039\u040a\u040c\u040b\u040f"
    "\u0452\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u2122\u0459\u203a\u045a\u045c\u045b\u045f\u00a0"
    "\u040e\u045e\u0408\u00a4\u0490\u00a6\u00a7\u0401\u00a9\u0404\u00ab\u00ac\u00ad\u00ae\u0407\u00b0"
    "\u00b1\u0406\u0456\u0491\u00b5\u00b6\u00b7\u0451\u2116\u0454\u00bb\u0458\u0405\u0455\u0457"
)
_MOJIBAKE = re.compile(f"[\u00c2-\u00f4][{_CP1252_CONT}]|[\u0420\u0421][{_CP1251_CONT}]|\ufffd")
_FTFY = ftfy.TextFixerConfig(unescape_html=False, uncurl_quotes=False, remove_control_chars=False, explain=False)


def clean_text(raw: str) -> str:
    """Unescape, fix mojibake, drop control characters, collapse whitespace."""
    text = raw
    if text.isascii() and text.isprintable() and "&" not in text:
        # the common case: plain ASCII with only " " as whitespace; unchanged unless spaces
        # need collapsing (isprintable is False for any other whitespace)
        if "  " not in text and text[:1] != " " and text[-1:] != " ":
            return text
        return " ".join(text.split())
    if "&" in text:
        text = html.unescape(text)
    if not text.isascii():
        # before control removal: C1 bytes are part of the mojibake ftfy repairs ("Ã\x97" -> "×")
        if _MOJIBAKE.search(text):
            text = ftfy.fix_text(text, _FTFY)
        elif not unicodedata.is_normalized("NFC", text):
            text = unicodedata.normalize("NFC", text)
        text = _INVISIBLE.sub("", _CONTROL.sub(" ", text))
    elif not text.isprintable():  # also False for any whitespace but " ": cheap pre-check
        text = _CONTROL.sub(" ", text)
    return " ".join(text.split())
