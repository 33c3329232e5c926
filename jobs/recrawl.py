"""`crawlpairs recrawl --output ROOT`: bring ROOT up to date with Common Crawl.

Meant to be called by a scheduler every day. It reads Common Crawl's list of crawls
(collinfo.json; any URI or local file), picks the crawls not yet `done` under ROOT,
and for each one, oldest first, runs extract then dedup against the shared seen-set
ROOT/seen (or --seen). Per-crawl state lives in ROOT/state/<crawl>.json:

    {"crawl", "status": "in_progress" | "done" | "failed", "step": "extract" | "dedup",
     "attempts", "started_at", "finished_at", "error", "counts"}

Nothing new: no Spark session is even started. A crawl left `in_progress` (the
previous run died) or `failed` is simply run again: extract skips the WAT files it
already committed, dedup rewrites its output and replaces its own seen-set
contribution, so a resumed crawl ends exactly as an uninterrupted one. Crawls are
processed strictly in order and a failure stops the run: a later crawl must never
be deduplicated against a seen-set that is missing an earlier one.

Layout: ROOT/crawls/<crawl>/{candidates,deduped}/, ROOT/seen/, ROOT/state/.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from crawlpairs import inputs, storage
from crawlpairs.config import Config
from crawlpairs.stage import Context, Stage, UsageError, exit_process, main, run_stage


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def list_crawls(cfg: Config) -> list[str]:
    """Crawl ids from collinfo.json, oldest first (CC-MAIN-YYYY-WW sorts by time)."""
    doc = storage.read_json(cfg.recrawl.collinfo_url, cfg.storage)
    ids = {e.get("id", "") for e in doc if isinstance(e, dict)}
    return sorted(i for i in ids if inputs.CRAWL_ID.match(i))


def wat_files(crawl: str, cfg: Config) -> list[str]:
    """The crawl's WAT files, resolved as `extract --input <crawl id>` does; the first --max-files."""
    resolved = inputs.resolve([crawl], cfg.extract, cfg.storage)
    if resolved.errors:
        kind, _, message = resolved.errors[0]
        raise RuntimeError(f"crawl {crawl}: {kind}: {message}")
    files = [f.uri for f in resolved.files]
    return files[: cfg.recrawl.max_files] if cfg.recrawl.max_files > 0 else files


class State:
    """ROOT/state/<crawl>.json, each written atomically."""

    def __init__(self, root: str, cfg: Config):
        self.dir = storage.join(root, "state")
        self.cfg = cfg

    def uri(self, crawl: str) -> str:
        return storage.join(self.dir, f"{crawl}.json")

    def get(self, crawl: str) -> dict[str, Any] | None:
        try:
            return storage.read_json(self.uri(crawl), self.cfg.storage)
        except FileNotFoundError:
            return None

    def all(self) -> dict[str, dict[str, Any]]:
        out = {}
        for uri in storage.glob(storage.join(self.dir, "CC-MAIN-*.json"), self.cfg.storage):
            doc = storage.read_json(uri, self.cfg.storage)
            out[doc["crawl"]] = doc
        return out

    def put(self, crawl: str, **fields: Any) -> dict[str, Any]:
        doc = {**(self.get(crawl) or {"crawl": crawl, "attempts": 0}), **fields, "updated_at": _now()}
        storage.write_json(self.uri(crawl), doc, self.cfg.storage)
        return doc


@contextlib.contextmanager
def run_lock(root: str):
    """One recrawl per ROOT at a time (local roots: an flock; object stores: the scheduler's job)."""
    if storage.is_remote(root):
        yield
        return
    import fcntl

    Path(root).mkdir(parents=True, exist_ok=True)
    with open(Path(root) / ".recrawl.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"--output {root}: another recrawl is running there") from None
        fh.write(str(os.getpid()))
        fh.flush()
        yield


def pending_crawls(crawls: list[str], states: dict[str, dict[str, Any]], cfg: Config) -> list[str]:
    """Crawls to run now, oldest first.

    Start point: --since if given; else the oldest crawl ROOT already knows; else
    (a fresh ROOT) only the newest crawl, so a first call does not queue a decade
    of snapshots by accident.
    """
    if not crawls:
        return []
    opts = cfg.recrawl
    if opts.since:
        start = opts.since
    elif states:
        start = min(states)
    else:
        start = crawls[-1]
    out = []
    for c in crawls:
        if c < start:
            continue
        status = states.get(c, {}).get("status")
        if status == "done" or (status == "failed" and not opts.retry_failed):
            continue
        out.append(c)
    return out[: opts.max_crawls] if opts.max_crawls > 0 else out


class RecrawlStage(Stage):
    name = "recrawl"
    section = "recrawl"
    output_dir = "state"
    uses_spark = False  # made only when there is work: a no-op daily call costs no JVM
    input_required = False
    help = "Extract + dedup every Common Crawl snapshot not yet processed under --output (for schedulers)"

    def run(self, ctx: Context) -> None:
        cfg = ctx.cfg
        root = cfg.output
        opts = cfg.recrawl
        with run_lock(root):
            state = State(root, cfg)
            try:
                crawls = list_crawls(cfg)
            except Exception as exc:  # noqa: BLE001 - the list source is down: say so, change nothing
                ctx.stats.error("crawl_list", input=opts.collinfo_url, message=f"{exc.__class__.__name__}: {exc}")
                raise UsageError(f"--collinfo-url {opts.collinfo_url}: cannot read the crawl list ({exc})") from None
            todo = pending_crawls(crawls, state.all(), cfg)
            ctx.stats.incr("crawls_listed", len(crawls))
            ctx.stats.incr("crawls_pending", len(todo))
            ctx.stats.extra["pending"] = todo
            if not todo:
                print(f"recrawl: nothing to do ({len(crawls)} crawls listed)", file=sys.stderr)
                return
            for crawl in todo:
                self.run_crawl(ctx, state, crawl)

    def spark(self, ctx: Context):
        if ctx.spark is None:
            from crawlpairs.spark import get_spark

            ctx.spark = get_spark(ctx.cfg)
        return ctx.spark

    def run_crawl(self, ctx: Context, state: State, crawl: str) -> None:
        from crawlpairs.jobs.dedup import DedupStage
        from crawlpairs.jobs.extract import ExtractStage

        cfg, root = ctx.cfg, ctx.cfg.output
        prev = state.get(crawl) or {}
        if prev.get("status") in ("in_progress", "failed"):
            ctx.stats.incr("crawls_resumed")
        state.put(crawl, status="in_progress", step="extract", attempts=prev.get("attempts", 0) + 1,
                  started_at=_now(), error=None)
        base = storage.join(root, "crawls", crawl)
        try:
            files = wat_files(crawl, cfg)
            if not files:
                raise RuntimeError(f"crawl {crawl}: its WAT listing is empty")
            ecfg = copy.deepcopy(cfg)
            ecfg.input, ecfg.output, ecfg.extract.crawl = files, base, crawl
            est = run_stage(ExtractStage, ecfg, self.spark(ctx))
            state.put(crawl, step="dedup", files=len(files))
            dcfg = copy.deepcopy(cfg)
            dcfg.input, dcfg.output = [storage.join(base, "candidates")], base
            dcfg.dedup.seen = cfg.dedup.seen or storage.join(root, "seen")
            dst = run_stage(DedupStage, dcfg, self.spark(ctx))
        except Exception as exc:
            state.put(crawl, status="failed", error=f"{exc.__class__.__name__}: {exc}"[:2000],
                      traceback=traceback.format_exc()[-4000:], finished_at=_now())
            ctx.stats.incr("crawls_failed")
            ctx.stats.error("crawl_failed", input=crawl, message=f"{exc.__class__.__name__}: {exc}")
            raise UsageError(f"recrawl: {crawl} failed ({exc.__class__.__name__}: {exc}); "
                             f"later crawls wait for it, the next call retries") from None
        counts = {"extract": dict(est.counts), "dedup": dict(dst.counts), "dedup_dropped": dict(dst.dropped)}
        state.put(crawl, status="done", step=None, finished_at=_now(), counts=counts)
        ctx.stats.incr("crawls_done")
        ctx.stats.incr("rows_out", dst.counts.get("rows_out", 0))


if __name__ == "__main__":
    exit_process(main(RecrawlStage))
