"""Fixtures for the extraction udf tests: shared real crawl files, config, WARC builder."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from crawlpairs.config import ExtractConfig

LID = "models/lid.176.ftz"


def _shared() -> Path:
    env = os.environ.get("CRAWLPAIRS_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _shared()
    if not (d / "wat").is_dir():
        pytest.skip(f"shared test data not found at {d} (set CRAWLPAIRS_SHARED_DATA)")
    return d


@pytest.fixture
def cfg(data_dir: Path) -> ExtractConfig:
    return ExtractConfig(lid_model=str(data_dir / LID))


@pytest.fixture
def warc_bytes():
    """Builder of small hand-written WARCs: `warc_bytes([(url, html), ...])`."""
    return make_warc


def make_warc(pages: list[tuple[str, str | bytes]], gz: bool = True, content_type: str = "text/html") -> bytes:
    """A WARC with one HTTP response record per (url, html) pair, written with warcio."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=gz)
    for url, html in pages:
        body = html.encode("utf-8") if isinstance(html, str) else html
        headers = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
        rec = writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=headers)
        writer.write_record(rec)
    return buf.getvalue()
