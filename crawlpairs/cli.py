"""`crawlpairs <command> ...`: one subcommand per stage, each a thin call into its job module.

Job modules are imported only when their command runs, so `crawlpairs extract` on a
CPU node never imports torch or faiss.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("crawlpairs.jobs.pipeline:PipelineStage", "every stage in order"),
    "generate": ("crawlpairs.generate:GenerateStage", "write realistic WAT/WARC files (demo, tests, benchmarks)"),
    "extract": ("crawlpairs.jobs.extract:ExtractStage", "WAT/WARC files -> candidates/"),
    "dedup": ("crawlpairs.jobs.dedup:DedupStage", "candidates/ -> deduped/ (exact, near-dup, seen-set)"),
    "recrawl": ("crawlpairs.jobs.recrawl:RecrawlStage", "process Common Crawl snapshots not yet done"),
    "download": ("crawlpairs.jobs.download:DownloadStage", "deduped/ -> images/ (polite, lawful, SSRF-safe)"),
    "score": ("crawlpairs.jobs.score:ScoreStage", "images/ -> scored/ + embeddings/ (CLIP, NSFW, aesthetic)"),
    "index": ("crawlpairs.jobs.index:IndexStage", "embeddings/ -> index/ (autofaiss kNN)"),
    "query": ("crawlpairs.jobs.query:QueryStage", "top-k search of an index by text, image or vector"),
    "publish": ("crawlpairs.jobs.publish:PublishStage", "scored/ (or deduped/) -> dataset/ (data, laion, open, card)"),
    "report": ("crawlpairs.jobs.report:ReportStage", "any run's root -> report/index.html (one self-contained page)"),
    "takedown": ("crawlpairs.jobs.takedown:TakedownStage", "remove URLs/domains/image hashes from every artefact"),
}


def load_stage(command: str):
    target, _ = COMMANDS[command]
    module_name, cls_name = target.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)


def usage() -> str:
    lines = ["usage: crawlpairs <command> [--help] [flags]", "", "commands:"]
    lines += [f"  {name:<10} {desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        from crawlpairs import __version__

        print(__version__)
        return 0
    command = argv[0]
    if command not in COMMANDS:
        print(f"crawlpairs: error: unknown command {command!r} (try: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    try:
        stage_cls = load_stage(command)
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("crawlpairs"):
            raise  # our own import broke: a bug to see whole, not a missing extra
        print(f"crawlpairs {command}: error: needs {exc.name!r}; install crawlpairs[all]", file=sys.stderr)
        return 2
    from crawlpairs.stage import main as stage_main

    return stage_main(stage_cls, argv[1:], prog=f"crawlpairs {command}")


def entry() -> None:
    """The `crawlpairs` console script: main(), then the process ends (stage.exit_process says why)."""
    from crawlpairs import jvm_archive
    from crawlpairs.stage import exit_process

    jvm_archive.BUILD_AT_EXIT = True  # exit_process completes the archive; a notebook or test never builds one
    exit_process(main())


if __name__ == "__main__":
    entry()
