"""The report: one self-contained HTML page, rendered in a real headless Chromium.

The root is the publish tests' (the real crawl files through extract, dedup and publish).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from crawlpairs.config import Config
from crawlpairs.jobs.report import ReportStage
from crawlpairs.stage import UsageError, run_stage
from crawlpairs.udfs.publish import report

SECTIONS = ("funnel", "languages", "domains", "licenses", "download", "scores", "samples")


def report_cfg(root: Path, **kw) -> Config:
    cfg = Config(output=str(root))
    for k, v in kw.items():
        setattr(cfg.report, k, v)
    return cfg


@pytest.fixture(scope="module")
def page(spark, published, root) -> str:
    run_stage(ReportStage, report_cfg(root), spark=spark)
    return (root / "report" / "index.html").read_text()


def test_page_has_every_section_with_counted_facts(page, published):
    _, stats = published
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page
    # the funnel's last step is the published row count, the first the links extract found
    assert f"published: {stats.counts['rows_data']:,}" in page or f">{stats.counts['rows_data']:,}<" in page
    assert "image links found" in page and "after dedup" in page
    assert "Herfindahl index" in page and "top 10 hold" in page
    assert "en" in page and "cc-by-sa" in page  # the real rows: English wiki pages under CC-BY-SA
    assert page.count("<svg") >= 5


def test_page_is_self_contained(page):
    assert "<script" not in page.lower()
    assert not re.search(r'<link\b', page, re.I)
    # no resource is fetched: every src is a data: URI, no CSS url() and no @import
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', page))
    assert "url(" not in page and "@import" not in page


def test_compare_shows_what_changed(spark, root, tmp_path):
    """An "earlier crawl": the same run with only its English rows published."""
    old = tmp_path / "old"
    (old / "dataset" / "data").mkdir(parents=True)
    table = pq.read_table(root / "dataset" / "data")
    english = table.filter(table.column("language").to_pandas().eq("en").to_numpy())
    pq.write_table(english, old / "dataset" / "data" / "part-00000.parquet")
    run_stage(ReportStage, report_cfg(root, compare=str(old)), spark=spark)
    page = (root / "report" / "index.html").read_text()
    assert '<section id="compare">' in page
    others = table.num_rows - english.num_rows
    assert others > 0
    lang_table = page.split('<section id="compare">')[1]
    non_en = [lang for lang in set(table.column("language").to_pylist()) if lang and lang != "en"]
    assert any(f"<td>{lang}</td>" in lang_table for lang in non_en)
    run_stage(ReportStage, report_cfg(root), spark=spark)  # back to the plain page for the other tests


def test_empty_root_is_a_usage_error(spark, tmp_path):
    with pytest.raises(UsageError, match="no stage output"):
        run_stage(ReportStage, report_cfg(tmp_path), spark=spark)


def test_render_escapes_captions_and_labels():
    facts = {"root": "r", "funnel": [("found", 3)], "languages": {"<b>x</b>": 2},
             "samples": [("data:image/png;base64,AAAA", '"><script>alert(1)</script>', "http://a/b")]}
    page = report.render(facts)
    assert "<script>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


def _png_size_and_colours(path: Path) -> tuple[int, int, int]:
    """Width, height and the number of distinct bytes in the first IDAT rows (a blank page has ~1)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat = b"".join(data[i + 8: i + 8 + struct.unpack(">I", data[i:i + 4])[0]]
                    for i in [m.start() - 4 for m in re.finditer(b"IDAT", data)])
    raw = zlib.decompress(idat)
    return width, height, len(set(raw[: min(len(raw), 2_000_000)]))


@pytest.mark.integration
def test_chromium_renders_the_page(page, root, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium not installed: .ci/run installs Debian's chromium")
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
             f"--user-data-dir={tmp_path / 'profile'}"]
    url = (root / "report" / "index.html").as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    for sid in SECTIONS:
        assert f'id="{sid}"' in dom
    assert dom.count("<svg") >= 5 and "<rect" in dom
    shot = tmp_path / "report.png"
    subprocess.run([*flags, "--window-size=1200,1800", f"--screenshot={shot}", url], capture_output=True,
                   timeout=120)
    width, height, colours = _png_size_and_colours(shot)
    assert (width, height) == (1200, 1800) and colours > 20  # charts and text, not a blank page


def test_samples_stream_the_first_shards_and_stop_at_n(tmp_path):
    """The sample grid reads shards as streams, one sample at a time, in shard then tar order."""
    import io
    import json
    import tarfile

    from crawlpairs.jobs.report import samples

    images = tmp_path / "images"
    images.mkdir()
    for shard in range(2):
        with tarfile.open(images / f"0000{shard}.tar", "w") as tar:
            for i in range(3):
                key = f"{shard}{i:04d}"
                files = {"jpg": b"\xff\xd8fake", "txt": f"caption {key}".encode(),
                         "json": json.dumps({"url": f"http://h/{key}.jpg"}).encode()}
                if i == 1:
                    files.pop("jpg")  # no image: skipped, not counted
                for ext, data in files.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    got = samples(str(tmp_path), None, 3)
    assert [c for _, c, _ in got] == ["caption 00000", "caption 00002", "caption 10000"]
    assert got[0][0].startswith("data:image/jpeg;base64,") and got[2][2] == "http://h/10000.jpg"
    assert len(samples(str(tmp_path), None, 10)) == 4
