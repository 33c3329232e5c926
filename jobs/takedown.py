"""`crawlpairs takedown`: remove URLs, domains or image hashes from every artefact of a run root.

    crawlpairs takedown --output ROOT --urls urls.txt [--domains domains.txt] [--sha256 hashes.txt]
    spark-submit jobs/takedown.py --output s3://bucket/run --urls s3://bucket/takedown-42.txt

Wiring only: the flags become a `udfs.publish.takedown.Request`, `udfs.publish.takedown.run` rewrites the
files (no Spark: each file is read and rewritten by itself, image bytes never cross a
shuffle), and the kNN index is rebuilt from the filtered embeddings by the index stage
itself, with the settings it last ran with. Journals in ROOT/takedowns/, blocked keys in the
seen-set (default ROOT/seen). See docs/publish.md, "Takedown".
"""

from __future__ import annotations

import argparse
import sys

from crawlpairs import config as config_mod
from crawlpairs import storage
from crawlpairs.stage import Context, Stage, UsageError, exit_process, main, run_stage
from crawlpairs.udfs.publish import takedown

LISTS = (("urls", takedown.parse_urls), ("domains", takedown.parse_domains), ("sha256", takedown.parse_sha256))


def read_request(ctx: Context) -> takedown.Request:
    """The lists named by the flags; an unreadable file is a one-line usage error naming its flag."""
    found: dict[str, set[str]] = {}
    for name, parse in LISTS:
        uri = getattr(ctx.args, name, None)
        if not uri:
            continue
        try:
            text = storage.read_bytes(uri, ctx.cfg.storage).decode("utf-8")
        except Exception as exc:  # noqa: BLE001 - missing, a folder, no permission, not UTF-8: one line
            raise UsageError(f"--{name} {uri}: cannot read ({exc.__class__.__name__}: "
                             f"{str(exc).strip()[:200]})") from None
        good, bad = parse(takedown.list_lines(text))
        for line in bad:
            ctx.stats.error(f"bad_{name}_line", input=uri, message=line[:300])
        found[name] = good
    return takedown.Request(frozenset(found.get("urls", ())), frozenset(found.get("domains", ())),
                            frozenset(found.get("sha256", ())))


class TakedownStage(Stage):
    name = "takedown"
    section = None
    output_dir = takedown.JOURNALS
    uses_spark = False
    input_required = False
    help = "remove URLs / domains / image sha256 from deduped, images, scored, embeddings, index, dataset"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--urls", metavar="FILE", help="image or page URLs, one a line (any spelling)")
        parser.add_argument("--domains", metavar="FILE", help="domains, one a line; example.com covers its subdomains")
        parser.add_argument("--sha256", metavar="FILE", help="sha256 of image bytes as downloaded, one a line")
        parser.add_argument("--seen", metavar="URI", help="seen-set that gets the blocked keys (default: ROOT/seen)")

    def run(self, ctx: Context) -> None:
        cfg, st = ctx.cfg, ctx.cfg.storage
        root = cfg.output.rstrip("/")
        asked = any(getattr(ctx.args, n, None) for n, _ in LISTS)
        req = read_request(ctx) if asked else None
        if req is not None and req.empty():
            raise UsageError("--urls/--domains/--sha256: the lists hold no valid entry")
        if not takedown.present(root, st):
            raise UsageError(f"--output {root}: holds none of {', '.join(takedown.ARTEFACTS)}")
        if req is None and all(d.get("status") == "done" for d in takedown.journals(root, st)):
            raise UsageError("--urls/--domains/--sha256: give at least one list (without one, a run only "
                             "finishes a pending takedown, and none is pending)")
        seen = getattr(ctx.args, "seen", None) or storage.join(root, "seen")
        docs = takedown.run(root, req, seen, st, ctx.stats, lambda: rebuild_index(root, st),
                            card=lambda r: dataset_card(r, st))
        ctx.stats.extra["takedowns"] = [{k: d.get(k) for k in ("id", "status", "rows_removed", "noop", "matched")}
                                        for d in docs]
        for d in docs:
            what = "nothing more to remove (done " + str(d.get("finished_at")) + ")" if d.get("noop") else \
                ", ".join(f"{a} -{n}" for a, n in d.get("rows_removed", {}).items() if a != "card") + \
                ("; card rewritten" if d.get("files_changed", {}).get("card") else "")
            print(f"takedown {d['id']}: {what}", file=sys.stderr)

    def summary(self, ctx: Context) -> str:
        removed = sum(v for k, v in ctx.stats.counts.items() if k.startswith("rows_removed_"))
        return f"takedown: {removed} rows removed across artefacts -> {ctx.out}"


def dataset_card(root: str, st) -> bytes | None:
    """The card publish would write for what dataset/ holds now (counts from its files, stats of every stage)."""
    import pyarrow.dataset as pads

    from crawlpairs import layout
    from crawlpairs.config import Config
    from crawlpairs.jobs.publish import FOLDERS, PublishStage
    from crawlpairs.udfs.publish import tables as publish

    meta = storage.join(root, "dataset_meta", "_stats.json")
    if not storage.exists(meta, st):
        return None
    recorded = storage.read_json(meta, st)
    p = config_mod.load(None, {"publish": recorded.get("config", {}).get("publish", {})}).publish

    def folder(name: str) -> pads.Dataset:
        files = takedown.data_files(storage.join(root, "dataset", name), ".parquet", st)
        fs, _ = storage.filesystem(root, st)
        return pads.dataset([storage.filesystem(f, st)[1] for f in files], format="parquet", filesystem=fs)

    data = folder("data")
    rows = data.to_table(columns=[c for c in ("language", "image_domain", "page_domain", "crawl")
                                  if c in data.schema.names])

    def counts(column: str, null: str = "none") -> dict[str, int]:
        if column not in rows.column_names:
            return {}
        vc = rows.column(column).value_counts().to_pylist()
        return {str(v["values"]) if v["values"] is not None else null: int(v["counts"]) for v in vc}

    stages = layout.stage_stats(root, st)
    ctx = Context(cfg=Config())
    ctx.cfg.storage = st
    return publish.card(p.pretty_name, p.card_license, rows.num_rows, folder("open").count_rows(),
                        counts("language", "und"), counts("image_domain"), counts("page_domain"), counts("crawl"),
                        stages, PublishStage.models(ctx, stages), list(p.open_licenses),
                        {f if f != "data" else "default": f"{f}/*.parquet" for f in FOLDERS},
                        recorded.get("extra", {}).get("source", "scored")).encode("utf-8")


def rebuild_index(root: str, st) -> None:
    """The index stage, run again on the filtered embeddings with the settings it recorded."""
    from crawlpairs.jobs.index import IndexStage

    out = storage.join(root, "index")
    metadata = takedown.data_files(storage.join(root, "embeddings", "metadata"), ".parquet", st)
    if sum(takedown.read_table(u, st).num_rows for u in metadata) == 0:
        storage.rm(out, st, recursive=True)  # nothing left to index: an index of the removed rows must not stay
        return
    recorded = {}
    stats_uri = storage.join(out, "_stats.json")
    if storage.exists(stats_uri, st):
        recorded = storage.read_json(stats_uri, st).get("config", {})
    cfg = config_mod.load(None, {s: recorded[s] for s in ("index", "score") if isinstance(recorded.get(s), dict)})
    cfg.storage = st
    cfg.input, cfg.output = [storage.join(root, "embeddings")], out
    stage = IndexStage()
    stage.uses_spark = cfg.index.distributed  # one local build needs no session
    run_stage(stage, cfg)


if __name__ == "__main__":
    exit_process(main(TakedownStage))
