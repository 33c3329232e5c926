"""What every stage shares: flags, config, session, timing, `_stats.json`.

A job module is a short subclass of `Stage` (cc-pyspark style) whose `run` does the
DataFrame wiring. The same class runs from the CLI (`crawlpairs extract ...`), from
spark-submit (`spark-submit jobs/extract.py ...`, the module's `__main__`), and from
other stages or tests (`run_stage`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import sys
import time
import typing
from dataclasses import dataclass, field
from typing import Any

from crawlpairs import __version__, storage
from crawlpairs import config as config_mod
from crawlpairs.config import Config, ConfigError
from crawlpairs.stats import Stats


class UsageError(Exception):
    """A mistake the user can fix; printed as one line naming the flag or path."""


PENDING_EXIT = 3  # exit status: finished, but some work is pending (transient I/O); re-run to do it


class PendingWork(Exception):
    """The stage committed what it could and wrote `_stats.json`; `pending` waits for a re-run.

    Raised by `run_stage` after the stats are written, so `crawlpairs run` stops before the
    next stage and the CLI / spark-submit exit with PENDING_EXIT.
    """

    def __init__(self, stage: str, pending: list[str]) -> None:
        self.pending = pending
        super().__init__(f"{stage}: finished with {len(pending)} input(s) pending after transient errors "
                         f"(listed in _stats.json); re-run the same command to read them")


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; a bad flag should cost one line."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


@dataclass
class Context:
    cfg: Config
    spark: Any = None
    stats: Stats = field(default_factory=Stats)
    args: argparse.Namespace = field(default_factory=argparse.Namespace)
    out: str = ""
    pending: list[str] = field(default_factory=list)  # units left for a re-run (run_stage raises PendingWork)
    session_conf: list[str] = field(default_factory=list)  # runtime SQL settings this stage set (unset after it)

    def spark_uri(self, uri: str) -> str:
        return storage.spark_uri(uri, self.cfg.storage)

    def size_shuffles(self, df) -> int:
        """Shuffle partitions from the input's size, unless the user set them (config or --conf).

        Spark's fixed 200 made every shuffle of a small run 200 tasks, every cached table 200
        partitions and every checkpoint 200 files (dedup of the real crawl files: 1,679 tasks,
        140 s; sized, 107 tasks, 46 s). Twice the input scan's partitions (Spark reads about
        128 MB per partition), at least the cluster's cores, keeps a shuffle partition near the
        scan's size at any scale. Returns the number in force.
        """
        if self.spark.sparkContext.getConf().contains("spark.sql.shuffle.partitions"):
            return int(self.spark.conf.get("spark.sql.shuffle.partitions"))
        n = max(self.spark.sparkContext.defaultParallelism, 2 * df.rdd.getNumPartitions())
        self.spark.conf.set("spark.sql.shuffle.partitions", str(n))
        self.session_conf.append("spark.sql.shuffle.partitions")  # for this stage only: run_stage unsets it
        return n

    def read_parquet_input(self):
        """--input as one DataFrame; an unreadable or empty input is a one-line UsageError."""
        try:
            return self.spark.read.parquet(*[self.spark_uri(u) for u in self.cfg.input])
        except Exception as exc:  # noqa: BLE001 - missing/empty input: Spark raises many kinds
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
            raise UsageError(f"--input {','.join(self.cfg.input)}: cannot read Parquet ({first})") from None


class Stage:
    name: str = ""
    section: str | None = None
    output_dir: str = ""
    uses_spark: bool = True
    input_required: bool = True
    write_stats: bool = True
    light_jvm: bool = False  # the driver JVM only plans and collects small rows (crawlpairs.spark.light_driver)
    stats_dir: str | None = None  # folder of `_stats.json` under --output, when not output_dir (data-only folders)
    help: str = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Flags that are not config fields (rare: prefer a config field)."""

    def run(self, ctx: Context) -> None:
        raise NotImplementedError

    def sections(self) -> list[str]:
        """The config sections this stage reads: validated before it starts."""
        return ([self.section] if self.section else []) + list(COMMON_SECTIONS)

    def summary(self, ctx: Context) -> str:
        c = ctx.stats.counts
        rows = c.get("rows_out", c.get("pairs_out"))
        what = f"{rows} rows" if rows is not None else "done"
        return f"{self.name}: {what} -> {ctx.out or ctx.cfg.output}"


# -- flags -------------------------------------------------------------------------

COMMON_SECTIONS = ("spark", "storage")


def _add_section_flags(parser: argparse.ArgumentParser, section: str, taken: set[str]) -> None:
    group = parser.add_argument_group(f"[{section}] settings")
    about = config_mod.describe(section)
    for name, tp in config_mod.section_fields(section).items():
        flag = config_mod.flag(name)
        if flag in taken:
            continue
        taken.add(flag)
        base, _ = config_mod.strip_optional(tp)
        dest = f"cfg__{section}__{name}"
        default = config_mod.default_of(section, name)
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        if isinstance(default, dict):
            shown = ",".join(f"{k}={v}" for k, v in default.items())
        allowed = config_mod.choices(tp)
        within = f"one of: {', '.join(allowed)}; " if allowed else ""
        text = f"{about.get(name, '')} ({within}default: {shown!s})".strip().replace("%", "%%")
        if base is bool:
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=text)
        else:
            metavar = "{" + ",".join(allowed) + "}" if allowed and base is not list else name.upper()
            group.add_argument(flag, dest=dest, default=argparse.SUPPRESS, metavar=metavar, help=text)


def build_parser(stage: Stage, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or OneLineParser(prog=f"crawlpairs {stage.name}", description=stage.help)
    parser.add_argument(
        "--input", "-i", nargs="+", action="extend", default=None, metavar="IN",
        help="files, globs, folders, s3:// or https:// URIs, @listfile, or a crawl id",
    )
    parser.add_argument("--output", "-o", default=None, metavar="OUT", help="output root (local path or s3://)")
    parser.add_argument("--config", default=None, metavar="FILE.toml", help="settings file; flags win over it")
    parser.add_argument(
        "--conf", action="append", default=[], metavar="KEY=VALUE", help="extra Spark setting (repeatable)"
    )
    taken = {"--input", "--output", "--config", "--conf", "--help"}
    stage.add_arguments(parser)
    for action in parser._actions:
        taken.update(action.option_strings)
    if stage.section:
        _add_section_flags(parser, stage.section, taken)
    for section in COMMON_SECTIONS:
        _add_section_flags(parser, section, taken)
    return parser


def config_from_args(args: argparse.Namespace, stage: Stage) -> Config:
    overrides: dict[str | None, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if key.startswith("cfg__"):
            _, section, name = key.split("__", 2)
            overrides.setdefault(section, {})[name] = value
    cfg = config_mod.load(args.config, {s: v for s, v in overrides.items() if s})
    if args.input:
        cfg.input = list(args.input)
    if args.output:
        cfg.output = args.output
    for item in args.conf:
        if "=" not in item:
            raise ConfigError(f"--conf {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        cfg.spark.conf[key.strip()] = value.strip()
    if stage.input_required and not cfg.input:
        raise ConfigError("--input: required")
    if stage.write_stats and not cfg.output:
        raise ConfigError("--output: required")
    return cfg


# -- running -----------------------------------------------------------------------


def run_stage(stage_cls: type[Stage] | Stage, cfg: Config, spark: Any = None,
              args: argparse.Namespace | None = None) -> Stats:
    """Run one stage with a given config (and session); write its `_stats.json`."""
    stage = stage_cls() if isinstance(stage_cls, type) else stage_cls
    config_mod.validate(cfg, stage.sections())
    out = storage.join(cfg.output, stage.output_dir) if cfg.output else ""
    ctx = Context(cfg=cfg, spark=spark, args=args or argparse.Namespace(), out=out)
    if stage.uses_spark and ctx.spark is None:
        from crawlpairs.spark import get_spark, light_driver

        ctx.spark = get_spark(light_driver(cfg) if stage.light_jvm else cfg)
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    try:
        stage.run(ctx)
    finally:  # a shared session (crawlpairs run, notebooks) must not carry one stage's sizing to the next
        for key in ctx.session_conf:
            with contextlib.suppress(Exception):  # a dead JVM must not hide the stage's own error
                ctx.spark.conf.unset(key)
    seconds = time.perf_counter() - t0
    if stage.write_stats and ctx.out:
        doc = {
            "stage": stage.name,
            "version": __version__,
            "started_at": started.isoformat(),
            "seconds": round(seconds, 3),
            "inputs": cfg.input,
            "output": ctx.out,
            **ctx.stats.to_dict(),
            "config": config_mod.to_dict(cfg),
        }
        where = ctx.out if stage.stats_dir is None else storage.join(cfg.output, stage.stats_dir)
        storage.write_json(storage.join(where, "_stats.json"), doc, cfg.storage)
    print(stage.summary(ctx) + f" ({seconds:.1f} s)", file=sys.stderr)
    if ctx.pending:
        raise PendingWork(stage.name, ctx.pending)
    return ctx.stats


def main(stage_cls: type[Stage], argv: list[str] | None = None, prog: str | None = None) -> int:
    """Entry point for the CLI and for spark-submit: parse, check, run, report."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)  # its INFO lines are gateway chatter, not news
    stage = stage_cls()
    parser = build_parser(stage)
    if prog:
        parser.prog = prog
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = config_from_args(args, stage)
        if stage.write_stats and cfg.output:
            try:
                storage.check_writable(cfg.output, cfg.storage)
            except Exception as exc:  # noqa: BLE001 - any failure means "cannot write there"
                raise UsageError(f"--output {cfg.output}: not writable ({_short(exc)})") from None
        run_stage(stage, cfg, args=args)
    except (ConfigError, UsageError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except PendingWork as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return PENDING_EXIT
    return 0


def exit_process(rc: int) -> typing.NoReturn:
    """End a CLI or spark-submit process with `rc` once the stage is done, skipping interpreter teardown.

    Why: a pyarrow dataset scan can leave background threads that still run while Python
    tears down, and they abort the process after the work is done and committed (SIGABRT,
    `terminate called without an active exception`; apache/arrow#34314, #39862): a takedown
    that had finished was reported as failed that way in CI. By now every file is closed and
    every commit written; the output streams and logging are flushed here, and a Spark JVM this
    process started exits on its own when its gateway pipe closes, as on a normal exit.
    """
    from crawlpairs import jvm_archive

    jvm_archive.finish()  # a run that is writing the JVM's class archive waits for it here
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(rc)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0] if text else ''}"[:300]
