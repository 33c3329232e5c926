"""`crawlpairs generate`: the Stage subclass that maps flags onto `generate()` and records its
counts in `_stats.json`, like every other stage.

Flags are defined here, not in config.py: the generator is a test and demo tool with no
config section, and each flag maps onto one of `generate()`'s keyword arguments.
"""

from __future__ import annotations

from typing import Any

from crawlpairs.generate.run import COUNTS, KINDS, generate
from crawlpairs.stage import Context, Stage


class GenerateStage(Stage):
    """Writes crawl files plus `_truth.parquet`, `_generate.json` and `_stats.json` under --output."""

    name = "generate"
    section = None
    output_dir = ""
    uses_spark = False
    input_required = False
    help = "write realistic Common Crawl WAT/WARC files with known ground truth"

    def add_arguments(self, parser: Any) -> None:
        g = parser.add_argument_group("generate")
        g.add_argument("--kind", choices=KINDS, default="wat", help="wat, warc or both (default wat)")
        g.add_argument("--files", type=int, default=1, help="number of files (default 1)")
        g.add_argument("--pages-per-file", type=int, default=1000, help="pages per file (default 1000)")
        g.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
        g.add_argument("--crawl", default="CC-MAIN-2024-33", help="crawl id CC-MAIN-YYYY-WW")
        g.add_argument(
            "--layout",
            choices=("cc", "flat"),
            default="cc",
            help="cc: crawl-data/<crawl>/segments/<seg>/wat/...; flat: all files in --output",
        )
        g.add_argument(
            "--shared-from",
            default=None,
            metavar="DIR",
            help="an earlier generate output whose pairs this crawl reuses",
        )
        g.add_argument(
            "--shared-fraction",
            type=float,
            default=0.0,
            help="fraction of this crawl's distinct pairs taken from --shared-from",
        )
        g.add_argument("--dup-rate", type=float, default=0.03, help="pairs repeated within a file")
        g.add_argument(
            "--image-base-url",
            default=None,
            metavar="URL",
            help="point image URLs at this server (with --images-dir)",
        )
        g.add_argument("--images-dir", default=None, metavar="DIR", help="write the served images here")
        g.add_argument(
            "--captions",
            default=None,
            metavar="PATH",
            help="captions Parquet (TEXT column) or shared-data dir; default $CRAWLPAIRS_SHARED_DATA",
        )
        g.add_argument("--workers", type=int, default=1, help="processes (files are made in parallel)")
        g.add_argument("--no-truth", action="store_true", help="skip _truth.parquet (faster for benchmarks)")

    def run(self, ctx: Context) -> None:
        from crawlpairs import storage
        from crawlpairs.stage import UsageError

        a = ctx.args
        out = ctx.cfg.output
        if storage.is_remote(out):
            raise UsageError(f"--output {out}: generate writes local files; upload them afterwards")
        try:
            res = generate(
                out,
                kind=a.kind,
                files=a.files,
                pages_per_file=a.pages_per_file,
                seed=a.seed,
                crawl=a.crawl,
                shared_pairs_from=a.shared_from,
                shared_fraction=a.shared_fraction,
                image_base_url=a.image_base_url,
                images_dir=a.images_dir,
                captions_path=a.captions,
                layout=a.layout,
                dup_rate=a.dup_rate,
                write_truth=not a.no_truth,
                workers=a.workers,
            )
        except (ValueError, FileNotFoundError) as exc:
            raise UsageError(str(exc)) from None
        for key in (*COUNTS, "unique_pairs_expected"):
            ctx.stats.incr(key, getattr(res, key))
        ctx.stats.incr("files_written", len(res.wat_files) + len(res.warc_files))
        ctx.stats.extra["result"] = res.to_dict()

    def summary(self, ctx: Context) -> str:
        c = ctx.stats.counts
        return (
            f"generate: {c['files_written']} files, {c['pages']} pages, {c['img_tags']} <img>, "
            f"{c['pairs_expected']} pairs expected -> {ctx.cfg.output}"
        )
