"""Stage 3: deduped/ -> images/ (webdataset shards + Parquet), polite and SSRF-safe.

Wiring only; the work is in udfs/dl_*:
  1. plan (dl_plan, on the driver, before any request): every row's host key is computed in
     Python (`tag_batches`: WHATWG parse, never throws); a per-host count gives the rows per
     host, the politeness bound and the task layout, recorded in `images_meta/plan.json`
     with the input's identity and the settings fingerprint;
  2. place: rows go to their task (`assign_batches`), are ranked per host inside the task
     and ordered by expected start time, and cut into shards (two windows over one shuffle
     of row metadata: no image bytes are ever shuffled);
  3. fetch: each task (`dl_task.download_shards`) fetches its rows in that order and commits
     each shard (tar, Parquet, then `_stats.json`) as soon as it is complete; committed
     shards are skipped, so a killed run loses only what was in flight;
  4. the stage's `images_meta/_stats.json` sums every shard's stats (skipped ones included).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from functools import partial

from crawlpairs import fingerprint, layout, storage
from crawlpairs.stage import Context, Stage, UsageError, exit_process, main
from crawlpairs.stats import Stats
from crawlpairs.udfs.download import plan as dl_plan
from crawlpairs.udfs.download import shards as dl_shards
from crawlpairs.udfs.download.board import Board
from crawlpairs.udfs.download.fetch import TRANSIENT_KINDS
from crawlpairs.udfs.download.task import SHARD_RESULT_SCHEMA, TASK_SCHEMA, download_shards

INTERNAL = ("key", "_shard", "_host", "_h", "_task", "_tkey", "_rate", "_rank", "_t", "_pos")
# Fields that change speed or politeness only: changing them never forces a recompute.
NOT_OUTPUT = ("connect_timeout", "read_timeout", "total_timeout", "per_host_rps", "per_host_concurrency",
              "in_flight_per_task", "retries", "max_retry_after", "backoff_base", "partitions", "max_pending",
              "decode_threads", "retry_failed", "force", "resolve_overrides", "allow_network", "user_agent",
              "contact_url", "host_rps", "host_rps_file", "adaptive_backoff", "slow_response_s", "min_host_rps",
              "max_crawl_delay", "share_backoff")
log = logging.getLogger(__name__)
NOMINAL_TASK_RPS = 100.0  # planning rate for hosts without a limit (about one core's images/s)


def uid_column():
    """extract's uid for inputs that lack one, by the same function (udfs.extract.candidates.make_uid)."""
    from pyspark.sql import functions as F

    from crawlpairs.udfs.extract.candidates import make_uid

    return F.udf(lambda url, text: make_uid(url or "", text or ""), "string", useArrow=True)("url", "text")


class DownloadStage(Stage):
    name = "download"
    section = "download"
    output_dir = "images"
    stats_dir = layout.meta_dir("images")
    light_jvm = True  # image bytes stay in Python workers; the JVM plans and moves small rows
    help = "deduped/ -> images/: fetch politely (opt-outs, robots.txt, per-host limits, SSRF guard)"

    def check(self, ctx: Context) -> None:
        """What needs I/O or the SSRF parser (choices and ranges: DownloadConfig.validate)."""
        opts = ctx.cfg.download
        for flag, uri in (("--do-not-train", opts.do_not_train), ("--url-blocklist", opts.url_blocklist),
                          ("--hash-blocklist", opts.hash_blocklist)):
            if uri and not storage.exists(uri, ctx.cfg.storage):
                raise UsageError(f"{flag} {uri}: no such file")
        from crawlpairs.udfs.download.ssrf import parse_allow_entry

        for entry in opts.allow_network:
            try:
                parse_allow_entry(entry)
            except ValueError:
                raise UsageError(f"--allow-network {entry}: expected IP[/len][:port]") from None

    def run(self, ctx: Context) -> None:
        from pyspark.sql import Window
        from pyspark.sql import functions as F
        from pyspark.sql import types as T
        from pyspark.sql.pandas.types import to_arrow_schema

        cfg, spark, opts, st, out = ctx.cfg, ctx.spark, ctx.cfg.download, ctx.cfg.storage, ctx.out
        self.check(ctx)
        rows = ctx.read_parquet_input()
        if "url" not in rows.columns:
            raise UsageError(f"--input {','.join(cfg.input)}: no `url` column")
        rows = rows.drop(*[c for c in (*INTERNAL, *SHARD_RESULT_SCHEMA.names) if c in rows.columns])
        if "uid" not in rows.columns:
            rows = rows.withColumn("uid", uid_column())
        ctx.stats.extra["shuffle_partitions"] = ctx.size_shuffles(rows)
        input_arrow = to_arrow_schema(rows.schema, timezone="UTC")
        meta = layout.meta_dir(out)
        plan_uri = storage.join(meta, dl_shards.PLAN)
        settings = fingerprint.settings(opts, ignore=NOT_OUTPUT)

        # 1. plan: host keys in Python, one aggregate, a small summary per partition
        t0 = time.perf_counter()
        tasks = opts.partitions or spark.sparkContext.defaultParallelism
        tag_schema = T.StructType(rows.schema.fields + [T.StructField("_host", T.StringType()),
                                                        T.StructField("_h", T.LongType())])
        tagged = rows.mapInArrow(partial(dl_plan.tag_batches, max_url_length=opts.max_url_length), tag_schema)
        rate_of = self.rate_of(opts)
        summary_schema = "kind string, host string, rows long, x long, task long, res array<long>"
        hosts = tagged.select("_host", "_h").repartition(tasks, "_host")  # a host's rows in one partition
        summary = [r.asDict() for r in hosts.mapInArrow(
            partial(dl_plan.summarize_hosts, tasks=tasks, rate_of=rate_of, top=2 * tasks + 10),
            summary_schema).collect()]
        plan = dl_plan.make_plan(summary, tasks, rate_of, max_split=opts.per_host_concurrency)
        prior = storage.read_json(plan_uri, st) if storage.exists(plan_uri, st) else None
        if prior is not None and opts.force:
            self.clear(out, plan_uri, st)
            prior = None
        if prior is not None:
            self.same_input(prior, plan, cfg)
            try:
                fingerprint.check(prior.get("settings"), settings, f"--output {out}")
            except fingerprint.StaleOutput as exc:
                raise UsageError(str(exc)) from None
            plan = prior
        else:
            plan.update(task_keys=dl_plan.partition_keys(tasks), order_rps=opts.per_host_rps, settings=settings,
                        fingerprint=fingerprint.digest(settings), shard_size=opts.shard_size,
                        inputs=list(cfg.input), created_at=dl_shards.iso(time.time()))
            plan.update(dl_plan.shard_layout(plan["task_rows"], opts.shard_size))
            storage.write_json(plan_uri, plan, st)  # recorded before the first request
        tasks = plan["tasks"]
        t_plan = time.perf_counter()

        # 2. place every row: task, rank per host, order by expected start, shard
        assign_schema = T.StructType(tag_schema.fields + [T.StructField("_task", T.IntegerType()),
                                                          T.StructField("_tkey", T.LongType()),
                                                          T.StructField("_rate", T.DoubleType())])
        assigned = tagged.mapInArrow(partial(dl_plan.assign_batches, plan=plan, nominal_rps=NOMINAL_TASK_RPS),
                                     assign_schema).repartition(tasks, "_tkey")
        by_host = Window.partitionBy("_tkey", "_host").orderBy("_h", "uid")
        by_time = Window.partitionBy("_tkey").orderBy("_t", "_h", "uid")
        placed = (assigned.withColumn("_rank", F.row_number().over(by_host) - 1)
                  .withColumn("_t", F.col("_rank") / F.col("_rate"))
                  .withColumn("_pos", F.row_number().over(by_time) - 1))
        print(dl_plan.describe(plan), file=sys.stderr)
        t_place = time.perf_counter()
        ctx.stats.extra["plan"] = {k: plan[k] for k in ("bound_seconds", "bounding_hosts", "tasks", "shards")}
        first = F.array(*[F.lit(int(x)) for x in plan["task_first_shard"]])
        placed = placed.withColumn(
            "_shard", (F.element_at(first, F.col("_task") + 1) + F.floor(F.col("_pos") / plan["shard_size"]))
            .cast("long"))

        # 3. fetch: each task commits its shards as they fill
        self.clean_temp(out, st)
        done = dl_shards.committed(out, st)
        retry = self.retry_shards(ctx, plan, done) if opts.retry_failed else set()
        skip = sorted(done - retry)
        todo = placed.filter(~F.col("_shard").isin(skip)) if skip else placed
        todo = todo.sortWithinPartitions("_shard", "_pos")
        shard_schema = dl_shards.parquet_schema(input_arrow, SHARD_RESULT_SCHEMA)
        ext = opts.output_format
        shares = dl_plan.rate_shares(plan)
        shard_layout = {k: plan[k] for k in ("shard_digits", "index_digits", "shard_size")}

        share = bool(shares) and opts.adaptive_backoff and opts.share_backoff
        with self.board(spark) if share else contextlib.nullcontext() as board:
            spec = board.spec() if board is not None else None

            def fetch(batches):
                return download_shards(batches, opts, out, shard_layout, shard_schema, st, ext=ext,
                                       rate_shares=shares, retry=retry, board=spec)

            result = todo.mapInArrow(fetch, T.StructType.fromJson(_spark_schema(TASK_SCHEMA))).collect()
            if board is not None:
                ctx.stats.extra["backoff_board"] = {"calls": board.calls, "shared_cuts": {
                    h: {"rps": round(c[0], 4), "why": c[1]} for h, c in sorted(board.ceilings.items())}}
        placed.unpersist()
        ctx.stats.extra["seconds"] = {"plan": round(t_plan - t0, 2), "place": round(t_place - t_plan, 2),
                                      "fetch": round(time.perf_counter() - t_place, 2)}
        written = [r for r in result if not r["skipped"]]
        ctx.stats.incr("shards_total", plan["shards"])
        ctx.stats.incr("shards_written", len(written))
        ctx.stats.incr("shards_skipped", plan["shards"] - len(written))
        if result:
            ctx.stats.extra["peak_rss_mb_per_task"] = max(r["peak_rss_mb"] for r in result)

        # 4. totals over every committed shard
        total = Stats()
        for u in storage.glob(storage.join(out, "*_stats.json"), st):
            if storage.basename(u)[0].isdigit():
                total.merge(Stats.from_dict(storage.read_json(u, st)))
        ctx.stats.merge(total)

    @staticmethod
    def board(spark) -> contextlib.AbstractContextManager:
        """The back-off board on the address executors reach the driver at; none (each task
        backs off alone) if it cannot listen there: it is advice, never a reason to fail."""
        host = spark.sparkContext.getConf().get("spark.driver.host", "127.0.0.1")
        try:
            return Board(host)
        except OSError as exc:
            log.warning("back-off board: cannot listen on %s (%s); each task backs off alone", host, exc)
            return contextlib.nullcontext()

    @staticmethod
    def rate_of(opts):
        """host -> the req/s the plan assumes for it (the [download] rate rules; Crawl-delay is learnt later)."""
        from crawlpairs.udfs.download.fetch import host_rate

        return partial(host_rate, opts)

    @staticmethod
    def same_input(prior: dict, plan: dict, cfg) -> None:
        old, new = prior.get("input", {}), plan["input"]
        if (old.get("rows"), old.get("uid_xor")) != (new["rows"], new["uid_xor"]):
            raise UsageError(f"--output {cfg.output}: holds a download of another input ({old.get('rows')} rows, "
                             f"this input has {new['rows']}); use a new --output or --force")

    @staticmethod
    def clear(out: str, plan_uri: str, st) -> None:
        """--force: remove this stage's shards and plan (nothing else in the folders)."""
        if storage.exists(out, st):
            for u in storage.ls(out, st):
                if dl_shards.is_shard_file(storage.basename(u)):
                    storage.rm(u, st)
        if storage.exists(plan_uri, st):
            storage.rm(plan_uri, st)

    @staticmethod
    def clean_temp(out: str, st) -> None:
        """A killed run can leave a hidden temp file of a shard being written: remove it."""
        if storage.is_remote(out) or not storage.exists(out, st):
            return
        for u in storage.ls(out, st):
            name = storage.basename(u)
            if name.startswith(".") and name.endswith(".tmp"):
                storage.rm(u, st)

    @staticmethod
    def retry_shards(ctx: Context, plan: dict, done: set[int]) -> set[int]:
        """Committed shards that hold a transient failure (--retry-failed rewrites only these)."""
        from pyspark.sql import functions as F

        if not done:
            return set()
        names = [storage.join(ctx.out, f"{dl_shards.shard_name(s, plan)}.parquet") for s in sorted(done)]
        old = ctx.spark.read.parquet(*[ctx.spark_uri(u) for u in names])
        kind = F.trim(F.split("error_message", ":").getItem(0))
        bad = old.filter((F.col("download_status") == "error") & kind.isin(list(TRANSIENT_KINDS)))
        digits = plan["shard_digits"]
        return {int(r["s"]) for r in bad.select(F.substring("key", 1, digits).alias("s")).distinct().collect()}


def _spark_schema(schema) -> dict:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema).jsonValue()


if __name__ == "__main__":
    exit_process(main(DownloadStage))
