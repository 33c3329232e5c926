"""Fixtures for the extraction udf tests: shared real crawl files, config, WARC builder."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from crawlpairs.config import ExtractConfig


@pytest.fixture(scope="session")
def data_dir(shared_data: Path) -> Path:
    """The shared real crawl files (tests/conftest.py's `shared_data`, under this area's name)."""
    return shared_data


@pytest.fixture
def cfg(lid_model: str) -> ExtractConfig:
    """Default (LAION) filters with the offline lid.176.ftz; each test may change its own copy."""
    return ExtractConfig(lid_model=lid_model)


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
