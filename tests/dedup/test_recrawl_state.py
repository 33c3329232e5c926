"""`recrawl` decisions that need no Spark: which crawls are pending, a failing crawl, the lock on ROOT."""

from __future__ import annotations

import json

import pytest

from crawlpairs.config import Config
from crawlpairs.jobs.recrawl import RecrawlStage, pending_crawls, run_lock, wat_files
from crawlpairs.stage import Context, UsageError

C0, C1, C2, C3 = "CC-MAIN-2024-22", "CC-MAIN-2024-26", "CC-MAIN-2024-30", "CC-MAIN-2024-33"


def test_pending_crawls():
    cfg = Config()
    crawls = [C0, C1, C2, C3]
    assert pending_crawls(crawls, {}, cfg) == [C3]  # fresh ROOT: only the newest
    states = {C1: {"status": "done"}, C2: {"status": "failed"}}
    assert pending_crawls(crawls, states, cfg) == [C2, C3]  # from the oldest known; failed is retried
    cfg.recrawl.retry_failed = False
    assert pending_crawls(crawls, states, cfg) == [C3]
    cfg.recrawl.since, cfg.recrawl.max_crawls = C0, 1
    assert pending_crawls(crawls, states, cfg) == [C0]
    assert pending_crawls([], states, cfg) == []


def _site(tmp_path) -> Config:
    """A local crawl list where C1's WAT listing is missing and C2's lists two files."""
    site = tmp_path / "site"
    (site / "crawl-data" / C2).mkdir(parents=True)
    (site / "crawl-data" / C2 / "wat.paths").write_text("# listing\ncrawl-data/x/1.wat.gz\n\ncrawl-data/x/2.wat.gz\n")
    (site / "collinfo.json").write_text(json.dumps([{"id": c} for c in (C2, C1, "not-a-crawl")]))
    cfg = Config()
    cfg.output = str(tmp_path / "root")
    cfg.recrawl.collinfo_url = f"file://{site}/collinfo.json"
    cfg.recrawl.since = C1
    cfg.extract.crawl_index_url = f"{site}/crawl-data/{{crawl}}/wat.paths"
    cfg.extract.prefix = "https://data.example.org/"
    return cfg


def test_wat_files_resolved_like_extract(tmp_path):
    cfg = _site(tmp_path)
    assert wat_files(C2, cfg) == ["https://data.example.org/crawl-data/x/1.wat.gz",
                                  "https://data.example.org/crawl-data/x/2.wat.gz"]
    cfg.recrawl.max_files = 1
    assert wat_files(C2, cfg) == ["https://data.example.org/crawl-data/x/1.wat.gz"]
    with pytest.raises(RuntimeError, match="unknown_crawl"):
        wat_files(C1, cfg)


def test_failed_crawl_stops_the_run_and_is_retried(tmp_path):
    cfg = _site(tmp_path)
    state = tmp_path / "root" / "state"

    def run() -> Context:
        ctx = Context(cfg=cfg, out=str(state))
        RecrawlStage().run(ctx)
        return ctx

    with pytest.raises(UsageError, match=f"{C1} failed"):
        run()
    doc = json.loads((state / f"{C1}.json").read_text())
    assert doc["status"] == "failed" and doc["attempts"] == 1 and "unknown_crawl" in doc["error"]
    assert not (state / f"{C2}.json").exists()  # never deduplicated against a seen-set missing C1
    with pytest.raises(UsageError):
        run()  # the next call retries
    assert json.loads((state / f"{C1}.json").read_text())["attempts"] == 2


    cfg.recrawl.collinfo_url = cfg.recrawl.collinfo_url.replace("collinfo.json", "none.json")
    with pytest.raises(UsageError, match="cannot read the crawl list"):
        run()  # the list source is down: one line, no state touched
    assert json.loads((state / f"{C1}.json").read_text())["attempts"] == 2


def test_nothing_to_do_starts_no_spark(tmp_path):
    cfg = _site(tmp_path)
    cfg.recrawl.since = "CC-MAIN-2099-01"
    ctx = Context(cfg=cfg, out=str(tmp_path / "root" / "state"))
    RecrawlStage().run(ctx)
    assert ctx.spark is None
    assert ctx.stats.counts == {"crawls_listed": 2, "crawls_pending": 0}


def test_one_recrawl_per_local_root(tmp_path):
    root = str(tmp_path)
    with run_lock(root), pytest.raises(UsageError, match="another recrawl is running"), run_lock(root):
        pass
    with run_lock(root):  # released
        pass
