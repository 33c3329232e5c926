"""Stage 7: any run's root -> report/index.html, one self-contained page.

    crawlpairs report --output OUT                          # OUT/report/index.html
    crawlpairs report --output OUT --compare OLD_OUT        # plus what changed since OLD_OUT

The facts come from the stages' own `_stats.json` (the funnel, every drop reason, download
statuses and refusals) and from the rows themselves, counted with Spark (languages,
licenses, image and page domains, score histograms); the sample grid takes the first
images of the first shards. `udfs/publish/report.render` makes the page.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import tarfile
from typing import Any

from crawlpairs import storage
from crawlpairs.jobs.publish import value_counts
from crawlpairs.layout import stage_stats
from crawlpairs.stage import Context, Stage, UsageError, exit_process, main
from crawlpairs.udfs.publish import report

# Where a root's rows are read from, best first: the published rows carry every column.
ROW_SOURCES = ("dataset/data", "scored", "deduped", "candidates")
HISTOGRAMS = (("similarity", "CLIP similarity"), ("punsafe", "punsafe (NSFW probability)"),
              ("aesthetic", "aesthetic score"), ("pwatermark", "pwatermark"))
# Drop reasons of the download stage that are a site's or our refusal rather than a failure.
REFUSAL_WORDS = ("opt", "robots", "ai_txt", "noai", "tdm", "blocklist", "ssrf", "dnt", "crawl_delay")


def funnel(stages: dict[str, dict]) -> list[tuple[str, int]]:
    """(step, rows after it) from each stage's counts, in pipeline order."""
    steps = (("extract", "pairs_found", "image links found"), ("extract", "rows_out", "candidates"),
             ("dedup", "rows_out", "after dedup"), ("download", "rows_out", "images downloaded"),
             ("score", "rows_out", "kept by the score filters"), ("publish", "rows_data", "published"))
    out = []
    for stage, key, label in steps:
        value = stages.get(stage, {}).get("counts", {}).get(key)
        if value is not None:
            out.append((label, int(value)))
    return out


def samples(root: str, st, n: int) -> list[tuple[str, str, str]]:
    """Up to n (data URI, caption, url) from the first image shards, in shard order.

    Streams each tar (a shard is ~1 GB at LAION scale) and stops at the n-th sample; a
    webdataset sample's files sit next to each other, so one sample is held at a time.
    """
    out: list[tuple[str, str, str]] = []

    def add(files: dict[str, bytes]) -> None:
        image = next(((ext, files[ext]) for ext in ("jpg", "jpeg", "png", "webp") if ext in files), None)
        if image is None:
            return
        mime = "jpeg" if image[0] in ("jpg", "jpeg") else image[0]
        uri = f"data:image/{mime};base64," + base64.b64encode(image[1]).decode("ascii")
        caption = files.get("txt", b"").decode("utf-8", "replace")
        url = ""
        if "json" in files:
            url = str(json.loads(files["json"]).get("url") or "")
        out.append((uri, caption, url))

    for tar_uri in sorted(storage.glob(storage.join(root, "images", "*.tar"), st)):
        key, files = None, {}
        with storage.open_uri(tar_uri, "rb", st) as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
            for m in tar:
                if not m.isfile() or "." not in m.name:
                    continue
                k, ext = m.name.rsplit(".", 1)
                if k != key:
                    if files:
                        add(files)
                        if len(out) >= n:
                            return out
                    key, files = k, {}
                f = tar.extractfile(m)
                if f is not None:
                    files[ext] = f.read()
        if files:
            add(files)
            if len(out) >= n:
                return out
    return out


class ReportStage(Stage):
    name = "report"
    section = "report"
    output_dir = "report"
    stats_dir = "report_meta"
    input_required = False
    help = "any run's root -> report/index.html: funnel, languages, domains, licenses, statuses, scores, samples"

    def run(self, ctx: Context) -> None:
        cfg = ctx.cfg
        facts = self.facts(ctx, cfg.output)
        if facts is None:
            raise UsageError(f"--output {cfg.output}: no stage output to report on (none of {', '.join(ROW_SOURCES)})")
        compare = None
        if cfg.report.compare:
            compare = self.facts(ctx, cfg.report.compare)
            if compare is None:
                raise UsageError(f"--compare {cfg.report.compare}: no stage output there")
        page = report.render(facts, compare)
        storage.write_bytes(storage.join(ctx.out, "index.html"), page.encode("utf-8"), cfg.storage)
        ctx.stats.incr("rows_in", sum(facts["languages"].values()))
        ctx.stats.incr("samples", len(facts["samples"]))
        ctx.stats.extra["source"] = facts["source"]
        ctx.stats.extra["page"] = storage.join(ctx.out, "index.html")

    def facts(self, ctx: Context, root: str) -> dict[str, Any] | None:
        from pyspark.sql import functions as F

        st, rc = ctx.cfg.storage, ctx.cfg.report
        source = next((s for s in ROW_SOURCES if storage.exists(storage.join(root, s), st)), None)
        if source is None:
            return None
        rows = ctx.spark.read.parquet(ctx.spark_uri(storage.join(root, source))).persist()

        hists = {}
        for column, title in HISTOGRAMS:
            if column not in rows.columns:
                continue
            values = rows.where(F.col(column).isNotNull())
            lo, hi = values.agg(F.min(column), F.max(column)).first()
            if lo is None:
                continue
            lo, hi = float(lo), float(hi)
            width = (hi - lo) / rc.bins if hi > lo else 1.0
            binned = values.groupBy(F.least(F.floor((F.col(column) - lo) / width), F.lit(rc.bins - 1)).alias("b"))
            per_bin = {int(r["b"]): int(r["count"]) for r in binned.count().collect()}
            hists[title] = ([lo + i * width for i in range(rc.bins + 1)], [per_bin.get(i, 0) for i in range(rc.bins)])
        stages = stage_stats(root, st)
        dl = stages.get("download", {})
        facts = {
            "root": root, "source": source, "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "funnel": funnel(stages),
            "drops": {s: doc.get("dropped", {}) for s, doc in stages.items() if doc.get("dropped")},
            "languages": value_counts(rows, "language"), "licenses": value_counts(rows, "license"),
            "image_domains": value_counts(rows, "image_domain"), "page_domains": value_counts(rows, "page_domain"),
            "statuses": {k.removeprefix("status_"): v for k, v in dl.get("counts", {}).items()
                         if k.startswith("status_")},
            "refusals": {k: v for k, v in dl.get("dropped", {}).items() if any(w in k for w in REFUSAL_WORDS)},
            "histograms": hists,
            "samples": samples(root, st, rc.samples),
        }
        rows.unpersist()
        return facts


if __name__ == "__main__":
    exit_process(main(ReportStage))
