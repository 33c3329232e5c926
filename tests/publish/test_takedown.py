"""`crawlpairs takedown` on a whole run root built from the real crawl files.

The root: the session's extract + dedup of every real WARC/WAT (conftest `root`), then the
real download stage against the loopback server that serves aut-example.warc.gz's own
image responses, score with the packaged tiny random-weight CLIP (no CLIP weights can be had
offline: the vectors are real outputs of a real model, their meaning is not), the index and
publish. Each test works on its own copy.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from crawlpairs.config import Config
from crawlpairs.stage import run_stage
from crawlpairs.udfs.publish.takedown import CRASH_ENV


def read(folder: Path) -> pa.Table:
    """A table folder as any reader sees it: its Parquet files, `_`/`.` names skipped, Hive partitions kept."""
    files = [str(p) for p in sorted(folder.rglob("*.parquet"))
             if not any(x.startswith(("_", ".")) for x in p.relative_to(folder).parts)]
    return pads.dataset(files, format="parquet", partitioning="hive", partition_base_dir=str(folder)).to_table()


def build_rest(spark, shared: Path, root: Path) -> None:
    """download -> score -> index -> publish on a root that holds candidates/ and deduped/."""
    from crawlpairs.jobs.download import DownloadStage
    from crawlpairs.jobs.index import IndexStage
    from crawlpairs.jobs.publish import PublishStage
    from crawlpairs.jobs.score import ScoreStage
    from support.download import ImageServer

    server = ImageServer(shared).start()
    try:
        deduped = read(root / "deduped")
        served = pc.is_in(deduped.column("url"), pa.array(sorted(server.warc)))
        others = deduped.filter(pc.invert(served)).sort_by("uid").slice(0, 3)  # a few failures: 1 s timeouts each
        subset = root.parent / f"{root.name}-dl-input"
        subset.mkdir(exist_ok=True)
        pq.write_table(pa.concat_tables([deduped.filter(served), others]), subset / "part-0.parquet",
                       use_deprecated_int96_timestamps=True)  # as Spark wrote them
        cfg = Config(input=[str(subset)], output=str(root))
        d = cfg.download
        d.connect_timeout = d.total_timeout = 1.0
        d.read_timeout, d.backoff_base, d.per_host_rps, d.min_image_bytes = 1.0, 0.1, 0.0, 0
        d.respect_robots, d.image_size, d.shard_size = False, 64, 25
        d.allow_network, d.resolve_overrides = server.allow(), server.overrides()
        run_stage(DownloadStage, cfg, spark=spark)
    finally:
        server.stop()
    cfg = Config(input=[str(root / "images")], output=str(root))
    s = cfg.score
    s.model, s.pretrained, s.device, s.punsafe_max = "tiny-clip", None, "cpu", 1.01
    s.language_thresholds, s.default_threshold = {}, -1.0
    run_stage(ScoreStage, cfg, spark=spark)
    cfg = Config(input=[str(root / "embeddings")], output=str(root / "index"))
    cfg.index.max_index_memory_usage, cfg.index.current_memory_available = "512M", "2G"
    run_stage(IndexStage, cfg, spark=spark)
    cfg = Config(output=str(root))
    cfg.publish.rows_per_file = 20
    run_stage(PublishStage, cfg, spark=spark)


# -- fixtures: a full root, a clean takedown of it ---------------------------------------------

REPO = Path(__file__).resolve().parents[2]
PY = str(REPO / ".venv" / "bin" / "python")
ARTEFACTS = ("deduped", "images", "scored", "embeddings", "index", "dataset", *(f"{m}_meta" for m in
                                                                             ("deduped", "images", "scored",
                                                                              "dataset")))


@pytest.fixture(scope="module")
def full_root(spark, shared_data, root, tmp_path_factory) -> Path:
    """candidates/ + deduped/ of the real crawl files (conftest), then download .. publish."""
    out = tmp_path_factory.mktemp("takedown") / "root"
    out.mkdir()
    for name in ("candidates", "candidates_meta", "deduped", "deduped_meta"):
        if (root / name).exists():
            shutil.copytree(root / name, out / name)
    build_rest(spark, shared_data, out)
    return out


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def embedding_rows(root: Path) -> dict[str, np.ndarray]:
    """uid -> its image embedding, found through the metadata's own row order."""
    out = {}
    for meta in sorted((root / "embeddings" / "metadata").glob("metadata_*.parquet")):
        sid = meta.stem.removeprefix("metadata_")
        t = pq.read_table(meta).to_pydict()
        arr = np.load(root / "embeddings" / "img_emb" / f"img_emb_{sid}.npy")
        assert len(arr) == len(t["uid"]) and t["emb_row"] == list(range(len(arr)))  # aligned
        out.update({u: arr[i] for i, u in enumerate(t["uid"])})
    return out


def pick_urls(root: Path) -> tuple[list[str], list[str]]:
    """10 real URLs: 4 with an image and an embedding, 6 that never got one. (urls, spellings)

    The real WARC serves 10 distinct images once dedup has run: 4 go, 6 stay for the index.
    """
    meta = read(root / "embeddings" / "metadata").sort_by("uid")
    with_image = sorted(set(meta.column("url").to_pylist()))[:4]
    images = read(root / "images")
    got = set(images.column("url").to_pylist())
    deduped = read(root / "deduped").sort_by("uid")
    without = [u for u in dict.fromkeys(deduped.column("url").to_pylist()) if u not in got][:6]
    urls = with_image + without
    assert len(urls) == 10
    # the list spells some of them differently: host case, a fragment, a default port
    spelled = [respell(u, i) for i, u in enumerate(urls)]
    assert spelled != urls
    return urls, spelled


def respell(url: str, i: int) -> str:
    """The same URL as a request might spell it: upper-case scheme and host, a fragment, the default port."""
    scheme, rest = url.split("://", 1)
    host, _, path = rest.partition("/")
    if i % 3 == 0:
        return f"{scheme.upper()}://{host.upper()}/{path}"
    if i % 3 == 1:
        return url + "#top"
    port = {"http": ":80", "https": ":443"}.get(scheme, "") if ":" not in host else ""
    return f"{scheme}://{host}{port}/{path}"


def takedown(root: Path, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess:
    """The real command, in its own process (so a crash point can SIGKILL it)."""
    # a native crash (a C++ abort at exit was seen once in CI) dumps every thread's Python stack to stderr
    env = {**os.environ, "PYSPARK_PYTHON": PY, "PYTHONFAULTHANDLER": "1"}
    env.pop(CRASH_ENV, None)
    if crash_at:
        env[CRASH_ENV] = crash_at
    return subprocess.run([PY, "-m", "crawlpairs.cli", "takedown", "--output", str(root), *args],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def clean(full_root, tmp_path_factory) -> dict:
    """One uninterrupted takedown of 10 URLs on a copy of the full root, with what it started from."""
    base = tmp_path_factory.mktemp("takedown-clean")
    root = copy_of(full_root, base / "root")
    urls, spelled = pick_urls(root)
    listing = base / "urls.txt"
    listing.write_text("# takedown request 42\n" + "\n".join(spelled) + "\n\n")
    before = embedding_rows(root)
    removed_uids = {u for u, url in zip(*(read(root / "deduped").column(c).to_pylist() for c in ("uid", "url")),
                                        strict=True) if url in set(urls)}
    proc = takedown(root, "--urls", str(listing))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root, "urls": set(urls), "uids": removed_uids, "listing": listing, "before": before,
            "stderr": proc.stderr}


# -- reading every artefact back ------------------------------------------------------------------


def everything(root: Path) -> dict[str, pa.Table]:
    """Every table artefact, read with the readers a user has (pyarrow datasets, tar, numpy)."""
    out = {name: read(root / name) for name in ("deduped", "scored", "embeddings/metadata", "index",
                                                 "dataset/data", "dataset/laion", "dataset/open")}
    out["images"] = pa.concat_tables([pq.read_table(p) for p in sorted((root / "images").glob("*.parquet"))],
                                     promote_options="default")
    shards = [p for d in ("scored_meta/shards", "_scored_shards") for p in sorted((root / d).glob("*.parquet"))]
    assert shards  # score's per-shard rows: a re-run of score reuses them
    out["score shards"] = pa.concat_tables([pq.read_table(p) for p in shards], promote_options="default")
    return out


def tar_urls(root: Path) -> set[str]:
    """The url inside every sample's .json of every shard: what img2dataset readers see."""
    urls = set()
    for p in sorted((root / "images").glob("*.tar")):
        with tarfile.open(p) as tar:
            for m in tar:
                if m.name.endswith(".json"):
                    urls.add(json.loads(tar.extractfile(m).read()).get("url"))
    return urls


def test_no_artefact_holds_a_taken_down_url(clean):
    root, urls, uids = clean["root"], clean["urls"], clean["uids"]
    assert len(uids) >= 10
    for name, t in everything(root).items():
        cols = t.column_names
        url_col = "url" if "url" in cols else "URL"
        assert t.num_rows > 0 or name == "dataset/open", name  # no CC0/PDM page among these rows
        assert not set(t.column(url_col).to_pylist()) & urls, name
        if "uid" in cols:
            assert not set(t.column("uid").to_pylist()) & uids, name
    laion_ids = set(read(root / "dataset" / "laion").column("SAMPLE_ID").to_pylist())
    assert not laion_ids & {int.from_bytes(bytes.fromhex(u[:16]), "big", signed=True) for u in uids}
    assert tar_urls(root) and not tar_urls(root) & urls
    # the shard Parquet, its tar and its stats agree: one sample per success row
    for p in sorted((root / "images").glob("*.parquet")):
        t = pq.read_table(p).to_pydict()
        ok = {k for k, s in zip(t["key"], t["status"], strict=True) if s == "success"}
        with tarfile.open(p.with_suffix(".tar")) as tar:
            keys = {n.split(".")[0] for n in tar.getnames()}
        assert keys == ok, p.name
        stats = json.loads((p.parent / f"{p.stem}_stats.json").read_text())
        assert stats["successes"] == len(ok) and stats["count"] == len(t["key"])
    # the journal says what was asked and what went where
    journal = [json.loads(p.read_text()) for p in (root / "takedowns").glob("*.json") if not p.name.startswith("_")]
    assert len(journal) == 1 and journal[0]["status"] == "done"
    assert journal[0]["request"]["urls"] == sorted(urls)  # spellings normalised
    removed = journal[0]["rows_removed"]
    assert removed["deduped"] == len(uids) and removed["embeddings"] == 4 and removed["images"] >= 4
    assert removed["dataset"] >= 4 and journal[0]["files_changed"]["images"]
    assert not list((root / "takedowns").glob("*.staging"))


def test_embeddings_stay_aligned_and_the_index_forgets_them(clean, full_root):
    root, before = clean["root"], clean["before"]
    after = embedding_rows(root)  # asserts len(npy) == metadata rows and emb_row == 0..n-1
    gone = set(before) - set(after)
    assert len(gone) == 4 and not gone - clean["uids"]
    for uid, vec in after.items():  # every survivor still sits beside its own vector
        assert np.array_equal(vec, before[uid])
    scored = read(root / "scored").to_pydict()
    meta = {(s, k): e for s, k, e in zip(*(read(root / "embeddings" / "metadata").column(c).to_pylist()
                                           for c in ("shard", "key", "emb_row")), strict=True)}
    assert all(meta[(s, k)] == e for s, k, e in zip(scored["shard"], scored["key"], scored["emb_row"], strict=True))
    from crawlpairs.udfs.index.knn import query

    urls_of = {u: url for u, url in zip(*(read(full_root / "embeddings" / "metadata").column(c).to_pylist()
                                          for c in ("uid", "url")), strict=True)}
    for uid in gone:
        old = query(str(full_root / "index"), vector=before[uid], k=1)
        assert old[0]["url"] == urls_of[uid]  # before: the image's own vector finds the image
        hits = query(str(root / "index"), vector=before[uid], k=20)
        assert hits and not {h.get("url") for h in hits} & clean["urls"]
        assert uid not in {h.get("uid") for h in hits}


def snapshot(root: Path) -> dict[str, object]:
    """Content of every artefact, comparable across runs (tables as rows, tars as members, json minus ids)."""
    out: dict[str, object] = {}
    for name in ARTEFACTS:
        for p in sorted((root / name).rglob("*")) if (root / name).exists() else []:
            rel = p.relative_to(root).as_posix()
            if not p.is_file() or name == "index" and p.suffix != ".parquet":
                continue
            if p.suffix == ".parquet":
                out[rel] = pq.read_table(p).to_pylist()
            elif p.suffix == ".tar":
                with tarfile.open(p) as tar:
                    out[rel] = [(m.name, tar.extractfile(m).read()) for m in tar]
            elif p.suffix == ".npy":
                out[rel] = np.load(p).tobytes()
            elif p.suffix == ".json":
                doc = json.loads(p.read_text())
                if isinstance(doc, dict):
                    doc.get("extra", {}).pop("takedowns", None)
                    for k in ("seconds", "started_at", "built_at", "updated_at"):
                        doc.pop(k, None)
                out[rel] = doc if "_stats" in p.name else None
            else:
                out[rel] = p.read_bytes()
    return out


def test_rerun_is_a_noop_and_says_so(clean, tmp_path):
    root = copy_of(clean["root"], tmp_path / "root")
    first = snapshot(root)
    journals = sorted(p.name for p in (root / "takedowns").iterdir())
    proc = takedown(root, "--urls", str(clean["listing"]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nothing more to remove" in proc.stderr
    assert snapshot(root) == first
    assert sorted(p.name for p in (root / "takedowns").iterdir() if p.name != "_stats.json") == \
        [j for j in journals if j != "_stats.json"]


def test_dedup_of_the_original_candidates_never_brings_them_back(clean, spark, tmp_path):
    from crawlpairs.jobs.dedup import DedupStage

    root = copy_of(clean["root"], tmp_path / "root")
    cfg = Config(input=[str(root / "candidates")], output=str(root))  # --seen unset: ROOT/seen's blocks apply
    cfg.dedup.near_dup = False
    stats = run_stage(DedupStage, cfg, spark=spark)
    t = read(root / "deduped")
    assert not set(t.column("url").to_pylist()) & clean["urls"]
    assert not set(t.column("uid").to_pylist()) & clean["uids"]
    cand = read(root / "candidates")
    named = sum(1 for u in cand.column("url").to_pylist() if u in clean["urls"])
    assert stats.dropped["blocked"] == named >= 10


@pytest.mark.parametrize("point", ["rename:images:1", "index"])
def test_crash_half_way_then_rerun_equals_a_clean_takedown(clean, full_root, tmp_path, point):
    root = copy_of(full_root, tmp_path / "root")
    proc = takedown(root, "--urls", str(clean["listing"]), crash_at=point)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    journal = [json.loads(p.read_text()) for p in (root / "takedowns").glob("*.json") if not p.name.startswith("_")]
    assert len(journal) == 1 and journal[0]["status"] != "done"
    if point == "index":  # the embeddings were done, the index not yet rebuilt: still the old one
        assert journal[0]["artefacts"]["embeddings"] == "done" and journal[0]["artefacts"]["images"] == "todo"
    else:  # the images were staged and half renamed; everything before them done
        assert journal[0]["artefacts"]["images"] == "staged" and journal[0]["artefacts"]["deduped"] == "todo"
    proc = takedown(root, "--urls", str(clean["listing"]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert snapshot(root) == snapshot(clean["root"])
    journal = [json.loads(p.read_text()) for p in (root / "takedowns").glob("*.json") if not p.name.startswith("_")]
    want = [json.loads(p.read_text()) for p in (clean["root"] / "takedowns").glob("*.json")
            if not p.name.startswith("_")]
    assert len(journal) == 1 and journal[0]["status"] == "done"
    assert journal[0]["rows_removed"] == want[0]["rows_removed"]
    assert sorted(read(root / "index").column("uid").to_pylist()) == \
        sorted(read(clean["root"] / "index").column("uid").to_pylist())


def test_domains_and_image_hashes_end_to_end(full_root, tmp_path):
    """`--domains` covers subdomains of image and page hosts; `--sha256` finds the image by its bytes."""
    root = copy_of(full_root, tmp_path / "root")
    images = read(root / "images").to_pydict()
    ok = [i for i, s in enumerate(images["download_status"]) if s == "success"]
    pick = next(i for i in ok if "archive.org" in images["url"][i])
    published = read(root / "dataset" / "data").column("url").to_pylist()
    assert images["url"][pick] in published and any("creativecommons.org/" in u for u in published)
    (tmp_path / "domains.txt").write_text("creativecommons.org\n")  # the images are on i.creativecommons.org
    (tmp_path / "sha.txt").write_text(images["sha256"][pick].upper() + "\n")
    (root / "report").mkdir()  # stands in for a report page (its sample grid inlines images: it must go)
    (root / "report" / "index.html").write_text("<html></html>")
    proc = takedown(root, "--domains", str(tmp_path / "domains.txt"), "--sha256", str(tmp_path / "sha.txt"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, t in everything(root).items():
        urls = t.column("url" if "url" in t.column_names else "URL").to_pylist()
        assert not [u for u in urls if u and "creativecommons.org/" in u], name
        assert images["url"][pick] not in urls, name
    embedding_rows(root)  # still aligned
    assert not (root / "report").exists()
    assert not tar_urls(root) & {images["url"][pick]}


@pytest.mark.integration
def test_on_an_s3_root_it_ends_as_on_a_local_one(clean, full_root, s3_server, tmp_path):
    """The same takedown on a copy of the root in a real S3 server (SeaweedFS) ends with the same artefacts."""
    from crawlpairs import storage
    from crawlpairs.jobs.takedown import TakedownStage
    from crawlpairs.stage import main

    uri = s3_server.uri("takedown-test", "root")
    fs, _ = storage.filesystem(uri, s3_server.storage)
    for name in (*ARTEFACTS, "candidates_meta"):  # the card quotes extract's stats too
        if (full_root / name).exists():
            fs.put(str(full_root / name) + "/", f"{uri.removeprefix('s3://')}/{name}/", recursive=True)
    rc = main(TakedownStage, ["--output", uri, "--urls", str(clean["listing"]),
                              "--s3-endpoint", s3_server.storage.s3_endpoint], prog="crawlpairs takedown")
    assert rc == 0
    back = tmp_path / "back"
    fs.get(uri.removeprefix("s3://") + "/", str(back) + "/", recursive=True)
    assert snapshot(back) == snapshot(clean["root"])
    journal = [json.loads(p.read_text()) for p in (back / "takedowns").glob("*.json") if not p.name.startswith("_")]
    assert journal[0]["status"] == "done" and journal[0]["root"] == uri
    assert storage.exists(uri + "/seen/_commits", s3_server.storage)


def test_unreadable_urls_file_is_a_usage_error_before_any_work(full_root, tmp_path, capsys):
    from crawlpairs.jobs.takedown import TakedownStage
    from crawlpairs.stage import main

    rc = main(TakedownStage, ["--output", str(full_root), "--urls", str(tmp_path / "missing.txt")],
              prog="crawlpairs takedown")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("crawlpairs takedown: error: --urls ")
    assert not (full_root / "takedowns").exists() and not (full_root / "seen").exists()


# -- matching rules (pure) ------------------------------------------------------------------------


def test_domains_cover_subdomains_and_urls_match_in_any_spelling():
    from crawlpairs.udfs.publish import takedown as td

    domains, bad = td.parse_domains(["Example.COM.", "*.photos.test", "https://Bücher.example/x", "not a domain"])
    assert domains == {"example.com", "photos.test", "xn--bcher-kva.example"} and bad == ["not a domain"]
    urls, _ = td.parse_urls(["HTTP://A.Example.org:80/x.jpg#frag"])
    req = td.Request(frozenset(urls), frozenset(domains), frozenset({"ab" * 32}))
    t = pa.table({"url": ["http://a.example.org/x.jpg", "http://cdn.example.com/1.jpg", "http://notexample.com/2.jpg",
                          "http://x.photos.test/3.jpg", "http://bücher.example/4.jpg", "http://other.test/5.jpg",
                          "http://other.test/6.jpg"],
                  "page_url": [None, None, None, None, None, "http://www.example.com/page", None],
                  "sha256": [None, None, None, None, None, None, "AB" * 32]})
    mask, why = td.match_rows(t, req)
    assert mask.tolist() == [True, True, False, True, True, True, True]
    assert why == ["url", "domain", None, "domain", "domain", "domain", "sha256"]
    keys = set(td.blocked_keys(req, pa.table({"uid": ["u1"], "url": ["http://other.test/6.jpg"],
                                              "why": ["sha256"]})).column("key").to_pylist())
    assert td.is_blocked("u1", None, None, keys)
    assert td.is_blocked("new", "http://a.example.org/x.jpg", None, keys)
    assert td.is_blocked("new", "http://img.cdn.example.com/y.jpg", None, keys)
    assert td.is_blocked("new", "http://other.test/z.jpg", "http://example.com/", keys)
    assert td.is_blocked("new", "http://other.test/6.jpg", None, keys)  # served the taken-down image
    assert not td.is_blocked("new", "http://notexample.com/y.jpg", "http://other.test/", keys)
