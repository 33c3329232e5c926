"""The rules the ground truth applies: LAION's default filters, the fault names, and how an
attribute is written (escaped) and read back (cleaned).

Apart from the page synthesis so that a newcomer checking "what counts as a pair" reads one
short file; the limits come from ExtractConfig's defaults, so truth and extractor never drift.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

from crawlpairs.config import ExtractConfig

# LAION's default filters as the ground truth applies them: ExtractConfig's defaults (2000, 60,
# svg/gif, 5, 4000). The faults below are sized to clear these with a margin (tests check it).
_LAION = ExtractConfig()
MAX_URL_LENGTH = _LAION.max_url_length
MAX_DOMAIN_LENGTH = _LAION.max_domain_length
DROP_EXTENSIONS = tuple(_LAION.drop_extensions)
MIN_TEXT_LENGTH = _LAION.min_text_length
MAX_TEXT_LENGTH = _LAION.max_text_length
# Fault names (drop reasons) in the ground truth; None means the pair survives.
FAULTS = (
    "no_alt",  # no alt attribute
    "empty_alt",  # alt="" or only whitespace / control characters
    "text_too_short",  # cleaned alt shorter than MIN_TEXT_LENGTH (all are <= 3 chars)
    "text_too_long",  # cleaned alt longer than MAX_TEXT_LENGTH (all are > 4200 chars)
    "scheme",  # src is data: or javascript: (includes lazy-loading placeholders)
    "extension",  # .svg or .gif
    "url_too_long",  # resolved url longer than MAX_URL_LENGTH (all are > 2100)
    "domain_too_long",  # host longer than MAX_DOMAIN_LENGTH (all are >= 70)
)

# characters cleanup turns into spaces: C0/C1 controls, zero-width and bidi marks, separators, BOM
CTRL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
WS_RE = re.compile(r"\s+")


def clean_text(raw: str) -> str:
    """The ground truth's text cleanup: decode entities, control chars to spaces, collapse spaces."""
    return WS_RE.sub(" ", CTRL_RE.sub(" ", html.unescape(raw))).strip()


def url_extension(url: str) -> str:
    """Lower-cased extension of the last path segment ('' when none)."""
    last = urlsplit(url).path.rsplit("/", 1)[-1]
    return last.rsplit(".", 1)[1].lower() if "." in last else ""


def escape(s: str) -> str:
    """An attribute value as written in the HTML (and, raw, in the WAT)."""
    return html.escape(s, quote=True)
