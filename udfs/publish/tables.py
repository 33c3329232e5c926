"""Stage 6 on an executor and on the driver: the published tables and the dataset card.

Pure functions over Arrow tables and plain dicts (no Spark), so the job stays wiring:
- `laion_batch`: our rows in LAION-5B's column names and types, for img2dataset and for
  code written against LAION's parquet files;
- `open_batch`: the PD12M-style subset, rows whose page license is open, with provenance;
- `card`: the Hugging Face dataset card (YAML header + datasheet) made from the stages'
  `_stats.json` documents, so every number in it was counted, not written by hand.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# LAION-5B's parquet columns (laion2B-en / -multi, aesthetics), their types, and where each
# comes from in our rows. WIDTH/HEIGHT are the original image's, as LAION measured them.
LAION_SCHEMA = pa.schema([
    ("SAMPLE_ID", pa.int64()),
    ("URL", pa.string()),
    ("TEXT", pa.string()),
    ("WIDTH", pa.int64()),
    ("HEIGHT", pa.int64()),
    ("LICENSE", pa.string()),
    ("NSFW", pa.string()),
    ("LANGUAGE", pa.string()),
    ("similarity", pa.float64()),
    ("punsafe", pa.float64()),
    ("pwatermark", pa.float64()),
    ("AESTHETIC_SCORE", pa.float64()),
    ("hash", pa.int64()),
    ("sha256", pa.string()),
])
_LAION_FROM = {"URL": "url", "TEXT": "text", "LICENSE": "license", "NSFW": "nsfw", "LANGUAGE": "language",
               "similarity": "similarity", "punsafe": "punsafe", "pwatermark": "pwatermark",
               "AESTHETIC_SCORE": "aesthetic", "sha256": "sha256"}

# What a row of the open subset carries so that its license and origin can be checked by anyone.
OPEN_COLUMNS = ("uid", "url", "text", "license", "license_url", "page_url", "crawl", "source_file",
                "source_offset", "fetch_time", "sha256", "original_width", "original_height", "language")

HF_SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
            (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
            (10_000_000_000, "1B<n<10B"))


def uid_int64(uids: pa.Array) -> pa.Array:
    """The first 8 bytes of each uid (hex of a sha256) as a signed int64: LAION's `SAMPLE_ID`/`hash` are ints."""
    out = np.zeros(len(uids), dtype=np.int64)
    valid = np.ones(len(uids), dtype=bool)
    for i, u in enumerate(uids.to_pylist()):
        if u:
            out[i] = np.uint64(int(u[:16], 16)).astype(np.int64)
        else:
            valid[i] = False
    return pa.array(out, pa.int64(), mask=~valid)


def _col(batch: pa.RecordBatch | pa.Table, name: str, typ: pa.DataType) -> pa.Array:
    if name not in batch.schema.names:
        return pa.nulls(batch.num_rows, typ)
    arr = batch.column(name)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr if arr.type == typ else pc.cast(arr, typ, safe=False)


def laion_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """One batch of our rows in LAION's schema (a missing score is null; LICENSE `?` as LAION wrote it)."""
    width = "original_width" if "original_width" in batch.schema.names else "width"
    height = "original_height" if "original_height" in batch.schema.names else "height"
    arrays = []
    for field in LAION_SCHEMA:
        if field.name in ("SAMPLE_ID", "hash"):
            arrays.append(uid_int64(_col(batch, "uid", pa.string())))
        elif field.name == "WIDTH":
            arrays.append(_col(batch, width, pa.int64()))
        elif field.name == "HEIGHT":
            arrays.append(_col(batch, height, pa.int64()))
        elif field.name == "LICENSE":
            arrays.append(pc.fill_null(_col(batch, "license", pa.string()), "?"))
        else:
            arrays.append(_col(batch, _LAION_FROM[field.name], field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=LAION_SCHEMA)


def iso_strings(arr: pa.Array) -> pa.Array:
    """Timestamps as ISO-8601 UTC strings (`2024-08-01T12:00:00Z`): every client reads a string alike."""
    if pa.types.is_timestamp(arr.type):  # whole seconds: %S alone would print the fraction too
        return pc.strftime(pc.cast(arr, pa.timestamp("s", tz="UTC"), safe=False), format="%Y-%m-%dT%H:%M:%SZ")
    return arr if arr.type == pa.string() else pc.cast(arr, pa.string())


def open_batch(batch: pa.RecordBatch, licenses: Iterable[str]) -> pa.RecordBatch:
    """Rows whose page license is in `licenses`, with their provenance columns."""
    allowed = pa.array(sorted(set(licenses)), pa.string())
    keep = pc.fill_null(pc.is_in(_col(batch, "license", pa.string()), value_set=allowed), False)
    batch = batch.filter(keep)
    names = [c for c in OPEN_COLUMNS if c in batch.schema.names]
    cols = [iso_strings(batch.column(c)) if c == "fetch_time" else batch.column(c) for c in names]
    return pa.RecordBatch.from_arrays(cols, names=names)


def size_category(n: int) -> str:
    """Hugging Face's `size_categories` tag for n rows."""
    for limit, tag in HF_SIZES:
        if n < limit:
            return tag
    return "n>10B" if n < 1_000_000_000_000 else "n>1T"


def concentration(counts: Mapping[str, int]) -> dict[str, float]:
    """Share of the rows held by the top 10 and top 100 keys, and the Herfindahl index (sum of squared shares).

    A "Pinterest soup" shows as a high top-10 share and an index far above 1/number-of-domains.
    """
    total = sum(counts.values())
    if not total:
        return {"top10": 0.0, "top100": 0.0, "hhi": 0.0}
    ranked = sorted(counts.values(), reverse=True)
    return {"top10": sum(ranked[:10]) / total, "top100": sum(ranked[:100]) / total,
            "hhi": sum((v / total) ** 2 for v in ranked)}


# -- the dataset card ---------------------------------------------------------------------


def _fmt(n: Any) -> str:
    if isinstance(n, float):
        return f"{n:,.3f}" if not n.is_integer() else f"{int(n):,}"
    return f"{n:,}" if isinstance(n, int) else str(n)


def _yaml_list(items: Iterable[str], indent: str = "") -> list[str]:
    return [f"{indent}- {i}" for i in items]


def header(name: str, license_tag: str, languages: list[str], rows: int, configs: Mapping[str, str]) -> str:
    """The YAML front matter Hugging Face reads: license, languages, size, tasks, and one config per folder."""
    lines = ["---", f"pretty_name: {name}", f"license: {license_tag}", "language:"]
    lines += _yaml_list([lang for lang in languages if lang and lang != "und"] or ["multilingual"], "  ")
    lines += ["size_categories:", f"  - {size_category(rows)}",
              "task_categories:", "  - text-to-image", "  - image-to-text", "  - zero-shot-image-classification",
              "tags:", "  - image-text pairs", "  - common crawl", "configs:"]
    for i, (config, files) in enumerate(configs.items()):
        lines += [f"  - config_name: {config}", "    data_files:", "      - split: train", f"        path: {files}"]
        if i == 0:
            lines.append("    default: true")
    lines.append("---")
    return "\n".join(lines)


def _settings_table(config: Mapping[str, Any], names: Iterable[str]) -> list[str]:
    rows = [f"| `{n}` | `{config[n]}` |" for n in names if n in config]
    return ["| setting | value |", "| --- | --- |", *rows] if rows else []


def _funnel(stage: str, doc: Mapping[str, Any]) -> list[str]:
    c = doc.get("counts", {})
    lines = [f"### {stage}", ""]
    first = next((c[k] for k in ("pairs_found", "rows_in") if k in c), None)
    last = next((c[k] for k in ("rows_out", "pairs_kept") if k in c), None)
    if first is not None or last is not None:
        lines.append(f"{_fmt(first) if first is not None else '?'} in, {_fmt(last) if last is not None else '?'} out.")
        lines.append("")
    dropped = doc.get("dropped", {})
    if dropped:
        lines += ["| dropped because | rows |", "| --- | --- |"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1])]
        lines.append("")
    errors = doc.get("errors", {})
    if errors:
        lines.append("Errors by kind: " + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(errors.items())) + ".")
        lines.append("")
    return lines


# Settings of each stage that decide which rows survive: shown beside the counts they caused.
FILTER_SETTINGS = {
    "extract": ("allowed_schemes", "max_url_length", "max_domain_length", "drop_extensions", "min_text_length",
                "max_text_length", "text_fallbacks", "lid_model", "lid_min_score", "max_record_bytes"),
    "dedup": ("dedup_uid", "dedup_url", "url_keep", "near_dup", "near_dup_scope", "threshold", "seen",
              "seen_by_url"),
    "download": ("respect_robots", "respect_noindex", "respect_ai_txt", "do_not_train", "url_blocklist",
                 "hash_blocklist", "ssrf_guard", "min_image_bytes", "min_side", "max_pixels", "image_size",
                 "resize_mode"),
    "score": ("model", "pretrained", "language_thresholds", "default_threshold", "nsfw_model", "punsafe_max",
              "watermark_model", "pwatermark_max", "aesthetic_model", "semantic_dup_threshold"),
}


def card(name: str, license_tag: str, rows: int, open_rows: int, languages: Mapping[str, int],
         image_domains: Mapping[str, int], page_domains: Mapping[str, int], crawls: Mapping[str, int],
         stages: Mapping[str, Mapping[str, Any]], models: Mapping[str, Mapping[str, str]],
         open_licenses: Iterable[str], configs: Mapping[str, str], source: str) -> str:
    """README.md of dataset/: the HF header and a datasheet built from counted facts only."""
    langs = sorted(languages, key=lambda k: -languages[k])
    top_img = sorted(image_domains.items(), key=lambda kv: -kv[1])
    conc = concentration(image_domains)
    out = [header(name, license_tag, langs, rows, configs), "", f"# {name}", "",
           f"{_fmt(rows)} image-text pairs (alt text of `<img>` tags and the image URL) from web crawls, "
           f"built with crawlpairs on {dt.date.today().isoformat()} from `{source}/`. "
           f"{_fmt(open_rows)} of them are on pages licensed {', '.join(sorted(open_licenses))} "
           "(the `open` config, with provenance).", "",
           "## Layout", "",
           "| config | folder | what |", "| --- | --- | --- |",
           "| `default` | `data/` | every published row, every column we filter on stored inside the files "
           "(`language` included) |",
           "| `laion` | `laion/` | the same rows in LAION-5B's column names and types; img2dataset reads it with "
           "`--input_format parquet --url_col URL --caption_col TEXT` |",
           f"| `open` | `open/` | rows whose page license is {', '.join(sorted(open_licenses))}: page URL, crawl, "
           "crawl file and byte offset, license URL, fetch time, image sha256 |", "",
           "`SAMPLE_ID` and `hash` in `laion/` are the first 8 bytes of our `uid` (sha256 of url TAB text) as a "
           "signed int64; `WIDTH`/`HEIGHT` are the original image's.", "",
           "## Sources", ""]
    if crawls:
        out += ["| crawl | rows |", "| --- | --- |"] + [f"| {k} | {_fmt(v)} |" for k, v in sorted(crawls.items())]
        out.append("")
    ex = stages.get("extract", {}).get("counts", {})
    if ex:
        out += [f"Input files committed: {_fmt(ex.get('files_committed', ex.get('files_read', 0)))}; "
                f"image links found: {_fmt(ex.get('pairs_found', 0))}.", ""]
    out += ["## How rows were selected", "",
            "Every stage counts what it drops and why; these are its counts and the settings that caused them.", ""]
    for stage in ("extract", "dedup", "download", "score"):
        doc = stages.get(stage)
        if not doc:
            out += [f"### {stage}", "", "Not run for this dataset.", ""]
            continue
        out += _funnel(stage, doc)
        table = _settings_table(doc.get("config", {}).get(stage, {}), FILTER_SETTINGS[stage])
        out += table + ([""] if table else [])
    out += ["## Models and files used", ""]
    if models:
        out += ["| role | file or name | sha256 |", "| --- | --- | --- |"]
        out += [f"| {role} | `{m.get('name', '')}` | `{m.get('sha256') or 'n/a'}` |" for role, m in models.items()]
    else:
        out.append("No model files were recorded.")
    out += ["", "## Opt-outs and blocklists", ""]
    dl = stages.get("download")
    if dl:
        status = {k: v for k, v in dl.get("counts", {}).items() if k.startswith("status_")}
        optouts = {k: v for k, v in dl.get("dropped", {}).items()
                   if any(w in k for w in ("opt", "robots", "ai_txt", "noai", "tdm", "blocklist", "ssrf", "dnt"))}
        out.append("Images were fetched only where the site allowed it: robots.txt, `X-Robots-Tag`/TDMRep "
                   "opt-outs, Spawning's ai.txt and the Do-Not-Train list were honoured before download, and "
                   "URL and image-hash blocklists applied; private and loopback addresses were never fetched.")
        out.append("")
        if status:
            out += ["| download status | rows |", "| --- | --- |"]
            out += [f"| {k.removeprefix('status_')} | {_fmt(v)} |" for k, v in sorted(status.items())]
            out.append("")
        if optouts:
            out += ["| refused because | rows |", "| --- | --- |"]
            out += [f"| {k} | {_fmt(v)} |" for k, v in sorted(optouts.items(), key=lambda kv: -kv[1])]
            out.append("")
    else:
        out += ["The images were not downloaded for this dataset: no opt-out beyond the seen-set was checked. "
                "Check robots.txt, TDMRep and ai.txt before using the URLs.", ""]
    out += ["## Known gaps and biases", ""]
    if rows:
        top_lang = langs[0] if langs else "und"
        out.append(f"- Languages: {len(langs)}; the most common, `{top_lang}`, holds "
                   f"{languages.get(top_lang, 0) / rows:.1%} of the rows. Language ID is fastText lid.176 on "
                   "short alt texts: expect errors on captions of a few words.")
        out.append(f"- Domain concentration: the top 10 image domains hold {conc['top10']:.1%} of the rows, the "
                   f"top 100 {conc['top100']:.1%}; Herfindahl index over image domains {conc['hhi']:.4f} "
                   "(1 = one domain).")
        if top_img:
            out.append("- Largest image domains: " + ", ".join(f"`{d}` {v / rows:.1%}" for d, v in top_img[:5]) + ".")
        if page_domains:
            top_page = sorted(page_domains.items(), key=lambda kv: -kv[1])[:5]
            out.append("- Largest page domains: " + ", ".join(f"`{d}` {v / rows:.1%}" for d, v in top_page) + ".")
    out += ["- Alt text is written for accessibility or search engines, not as a description: it is often "
            "short, generic, or about the page rather than the image.",
            "- What a crawl does not reach is missing: sites that block crawlers, pages behind logins, images "
            "loaded by scripts; opt-outs remove more from some kinds of site than from others.",
            "- Scores (similarity, punsafe, pwatermark, aesthetic) come from the models above and share "
            "their biases; thresholds are listed with the counts they caused.",
            "", "## Removal requests", "",
            "Send removal requests to the publisher of this copy. An item is found in every config by its "
            "`url` (`URL` in `laion/`) or its image `sha256`.", ""]
    return "\n".join(out)

