"""Stage 3: deduped/ -> images/ (webdataset shards + Parquet), polite and SSRF-safe.

Wiring only; the work is in udfs/dl_*:
  1. every input row gets a shard (hash of uid mod the shard count fixed in _plan.json);
     shards with a `_stats.json` are done and skipped (resume); with --retry-failed the
     transient failures of done shards are fetched again, nothing else;
  2. rows are repartitioned by host so one task owns a host (per-host limits hold),
     and `dl_task.download_frames` fetches, vets and resizes them (mapInPandas);
  3. rows are grouped by shard and `dl_shards.write_shard` writes tar + Parquet + stats;
  4. the stage's `_stats.json` sums every shard's stats (skipped ones included).
"""

from __future__ import annotations

from crawlpairs import storage
from crawlpairs.stage import Context, Stage, UsageError, main
from crawlpairs.stats import Stats
from crawlpairs.udfs import dl_shards
from crawlpairs.udfs.dl_fetch import TRANSIENT_KINDS
from crawlpairs.udfs.dl_images import RESIZE_MODES
from crawlpairs.udfs.dl_task import RESULT_COLUMNS, RESULT_SCHEMA, download_frames

INTERNAL = ("batch", "key", "_shard", "_host")


def uid_column():
    """extract's uid (udfs.extract.make_uid) for inputs that lack one: sha256(url TAB text)[:32 hex]."""
    from pyspark.sql import functions as F

    return F.substring(F.sha2(F.concat_ws("\t", "url", F.coalesce("text", F.lit(""))), 256), 1, 32)


def shard_column(shards: int):
    """A row's shard: xxhash64(uid) mod the shard count of `_plan.json`."""
    from pyspark.sql import functions as F

    return F.pmod(F.xxhash64("uid"), F.lit(shards)).cast("int")


class DownloadStage(Stage):
    name = "download"
    section = "download"
    output_dir = "images"
    help = "deduped/ -> images/: fetch politely (opt-outs, robots.txt, per-host limits, SSRF guard)"

    def check(self, ctx: Context) -> None:
        d = ctx.cfg.download
        if d.resize_mode not in RESIZE_MODES:
            raise UsageError(f"--resize-mode {d.resize_mode}: expected one of {', '.join(RESIZE_MODES)}")
        if d.output_format not in ("jpg", "jpeg", "png", "webp"):
            raise UsageError(f"--output-format {d.output_format}: expected jpg, png or webp")
        for flag, uri in (("--do-not-train", d.do_not_train), ("--url-blocklist", d.url_blocklist),
                          ("--hash-blocklist", d.hash_blocklist)):
            if uri and not storage.exists(uri, ctx.cfg.storage):
                raise UsageError(f"{flag} {uri}: no such file")
        from crawlpairs.udfs.dl_ssrf import parse_allow_entry

        for entry in d.allow_network:
            try:
                parse_allow_entry(entry)
            except ValueError:
                raise UsageError(f"--allow-network {entry}: expected IP[/len][:port]") from None

    def run(self, ctx: Context) -> None:
        from pyspark.sql import functions as F
        from pyspark.sql import types as T
        from pyspark.sql.pandas.types import from_arrow_schema

        cfg, spark, d, st, out = ctx.cfg, ctx.spark, ctx.cfg.download, ctx.cfg.storage, ctx.out
        self.check(ctx)
        rows = ctx.read_parquet_input()
        if "url" not in rows.columns:
            raise UsageError(f"--input {','.join(cfg.input)}: no `url` column")
        rows = rows.drop(*[c for c in (*INTERNAL, *RESULT_COLUMNS) if c in rows.columns])
        if "uid" not in rows.columns:
            rows = rows.withColumn("uid", uid_column())
        columns = rows.columns

        plan_uri = storage.join(out, dl_shards.PLAN)
        n_rows = rows.count()
        if storage.exists(plan_uri, st):
            plan = storage.read_json(plan_uri, st)
            if plan["rows"] != n_rows:  # shards of another input: resuming would skip new rows
                raise UsageError(f"--output {cfg.output}: holds a download of {plan['rows']} input rows, "
                                 f"this input has {n_rows}; use a new --output")
        else:
            plan = dl_shards.plan(n_rows, d.shard_size)
            storage.write_json(plan_uri, plan, st)
        rows = rows.withColumn("_shard", shard_column(plan["shards"]))

        done = {int(storage.basename(u)[: -len("_stats.json")])
                for u in storage.glob(storage.join(out, "*_stats.json"), st)
                if storage.basename(u)[0].isdigit()}
        todo = rows.filter(~F.col("_shard").isin(list(done))) if done else rows
        if d.retry_failed and done:
            old = spark.read.parquet(*[ctx.spark_uri(storage.join(out, f"{dl_shards.shard_name(s, plan)}.parquet"))
                                       for s in sorted(done)])
            kind = F.trim(F.split("error_message", ":").getItem(0))
            again = old.filter((F.col("status") == "error") & kind.isin(list(TRANSIENT_KINDS)))
            todo = todo.unionByName(again.select(*columns).withColumn("_shard", shard_column(plan["shards"])))
        ctx.stats.incr("shards_total", plan["shards"])

        host = F.lower(F.expr("parse_url(url, 'HOST')"))
        todo = todo.withColumn("_host", F.coalesce(host, F.col("url")))
        parts = d.partitions or 4 * spark.sparkContext.defaultParallelism
        fetched_schema = T.StructType(todo.schema.fields + from_arrow_schema(RESULT_SCHEMA).fields)

        def fetch(batches):
            return download_frames(batches, d, st)

        fetched = todo.repartition(parts, "_host").mapInPandas(fetch, fetched_schema)

        ext = "jpg" if d.output_format == "jpeg" else d.output_format

        def write(pdf):
            import pandas as pd

            shard = int(pdf["_shard"].iloc[0])
            if shard in done:  # a --retry-failed shard: keep its other rows; their images come from the old tar
                prev = pd.read_parquet(storage.open_uri(
                    storage.join(out, f"{dl_shards.shard_name(shard, plan)}.parquet"), "rb", st))
                prev = prev[~prev.uid.isin(pdf.uid)].drop(columns=["key"], errors="ignore")
                prev["image"] = None
                pdf = pd.concat([prev, pdf.drop(columns=["_shard", "_host"])], ignore_index=True)
            s = dl_shards.write_shard(pdf, shard, out, plan, st, ext=ext)
            return pd.DataFrame({"shard": [shard], "count": [s["count"]]})

        written = fetched.groupBy("_shard").applyInPandas(write, "shard int, count long").collect()
        ctx.stats.incr("shards_written", len(written))
        ctx.stats.incr("shards_skipped", len(done) - sum(1 for r in written if r["shard"] in done))

        total = Stats()
        for u in storage.glob(storage.join(out, "*_stats.json"), st):
            if storage.basename(u)[0].isdigit():
                total.merge(Stats.from_dict(storage.read_json(u, st)))
        ctx.stats.merge(total)


if __name__ == "__main__":
    raise SystemExit(main(DownloadStage))
