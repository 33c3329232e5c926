"""DedupStage on local Spark: hand-checked exact and near-duplicate cases from real captions."""

from __future__ import annotations

import pyarrow.parquet as pq

from support.dedup import row, write_candidates

# Real alt texts from captions/test_10000.parquet and hand-made near-duplicate variants
# (exact shingle-3 Jaccard in comments). Hand-checked: the "near" pairs describe the same
# image listing; the "far" pairs are different things that share words.
DRAGONFLY = "Banded Dragonfly, Guyana, South America"
DRAGONFLY_V = "Banded Dragonfly Guyana South America"  # 1.0 after normalisation
GRANITE = "Dark granite or marble texture abstract background."
GRANITE_V = "Dark granite or marble texture abstract background. Stock Photo"  # 0.80
TABLE = "Coffee Table with Tray Top Color: Gray"
TABLE_V = "Coffee Table with Tray Top Color: White"  # 0.80, same product page, other colour
FAR_A, FAR_B = "Real Hip Hop by Various Artists", "Greatest Love Songs by Various Artists"
FAR_C, FAR_D = "Beachy coffee table", "Glenni Coffee Table"


def test_exact_and_near_duplicates(tmp_path, run_dedup):
    rows = [
        # exact uid: same url + text three times; the earliest fetch survives
        row("https://img.example.com/a.jpg", "Tavern Brawl by velinov", minutes=30, offset=3),
        row("https://img.example.com/a.jpg", "Tavern Brawl by velinov", minutes=10, offset=2),
        row("https://img.example.com/a.jpg", "Tavern Brawl by velinov", minutes=20, offset=1),
        # exact url, different texts: earliest wins by default
        row("https://img.example.com/b.jpg", "Stir Fry Mango Chicken", minutes=5),
        row("https://img.example.com/b.jpg", "Mango chicken stir fry with rice and peppers", minutes=1),
        # near-duplicate captions, same image domain, different image urls
        row("https://shop.example.org/p/1.jpg", DRAGONFLY, minutes=2),
        row("https://shop.example.org/p/2.jpg", DRAGONFLY_V, minutes=1),
        row("https://shop.example.org/p/3.jpg", GRANITE, minutes=1),
        row("https://shop.example.org/p/4.jpg", GRANITE_V, minutes=2),
        row("https://shop.example.org/p/5.jpg", TABLE, minutes=3),
        row("https://shop.example.org/p/6.jpg", TABLE_V, minutes=3),
        # different captions sharing words: all kept
        row("https://shop.example.org/m/1.jpg", FAR_A), row("https://shop.example.org/m/2.jpg", FAR_B),
        row("https://shop.example.org/m/3.jpg", FAR_C), row("https://shop.example.org/m/4.jpg", FAR_D),
        # a near-duplicate caption on another image domain: kept (scope image_domain)
        row("https://cdn.other.net/x.jpg", DRAGONFLY_V, minutes=0),
    ]
    inp = write_candidates(tmp_path / "candidates", rows, files=3)
    # defaults: exact rules only; near-duplicate captions of other images are other pictures
    kept0, stats0 = run_dedup(inp, tmp_path / "out0")
    assert stats0["dropped"] == {"exact_uid": 2, "exact_url": 1}
    assert stats0["extra"]["shuffle_partitions"] == 4  # the session's explicit setting wins over sizing
    assert len(kept0) == 13 and "near_dup" not in stats0.get("extra", {})

    kept, stats = run_dedup(inp, tmp_path / "out", near_dup=True)
    texts = sorted((r["url"], r["text"]) for r in kept)
    assert stats["counts"] == {"rows_in": 16, "rows_out": 10}
    assert stats["dropped"] == {"exact_uid": 2, "exact_url": 1, "near_dup": 3}
    a = [r for r in kept if r["url"].endswith("/a.jpg")]
    assert len(a) == 1 and a[0]["source_offset"] == 2  # earliest of the three copies
    assert ("https://img.example.com/b.jpg", "Mango chicken stir fry with rice and peppers") in texts
    shop = {r["text"] for r in kept if r["image_domain"] == "shop.example.org"}
    assert shop == {DRAGONFLY_V, GRANITE, TABLE_V, FAR_A, FAR_B, FAR_C, FAR_D}  # earliest; ties -> longer
    assert ("https://cdn.other.net/x.jpg", DRAGONFLY_V) in texts
    # every column of the candidates table is passed through, nothing internal leaks
    assert set(kept[0]) >= {"uid", "url", "text", "text_source", "page_url", "page_domain", "image_domain",
                            "language", "language_score", "license", "license_url", "crawl", "source_file",
                            "source_offset", "fetch_time", "width", "height"}
    assert not any(k.startswith("_") or k == "batch" for k in kept[0])
    nd = stats["extra"]["near_dup"]  # three pairs of two: dragonfly, granite, table
    assert nd["clusters"] == 3 and nd["rows_in_clusters"] == 6 and nd["verified_pairs"] == 3
    assert nd["size_histogram"]["2"] == {"clusters": 3, "rows": 6}
    assert sum(h["clusters"] for h in nd["size_histogram"].values()) == 3
    assert {(c["size"], c["image_domain"]) for c in nd["largest"]} == {(2, "shop.example.org")}
    assert {c["kept_text"] for c in nd["largest"]} == {DRAGONFLY_V, GRANITE, TABLE_V}

    # the other survivor rule and the global scope
    kept2, stats2 = run_dedup(inp, tmp_path / "out2", url_keep="longest_text", near_dup_scope="global",
                               near_dup=True)
    assert stats2["dropped"] == {"exact_uid": 2, "exact_url": 1, "near_dup": 4}
    b = [r["text"] for r in kept2 if r["url"].endswith("/b.jpg")]
    assert b == ["Mango chicken stir fry with rice and peppers"]
    assert {r["text"] for r in kept2 if "Dragonfly" in r["text"]} == {DRAGONFLY}  # longest text wins
    assert {r["text"] for r in kept2 if "Coffee Table with" in r["text"]} == {TABLE_V}


def test_chained_near_duplicates_form_one_cluster(tmp_path, run_dedup):
    """A~B and B~C with A !~ C: one survivor (connected components, not pairs)."""
    a = "Albany Abelie Texture Gold Wallpaper - Product code: 35333"
    b = "Albany Abelie Texture Gold Wallpaper"
    c = "Albany Abelie Texture Gold Wallpaper - Free Shipping"
    rows = [row(f"https://w.example.com/{i}.jpg", t, minutes=i) for i, t in enumerate([a, b, c])]
    kept, stats = run_dedup(write_candidates(tmp_path / "c", rows), tmp_path / "o", near_dup=True)
    assert [r["text"] for r in kept] == [a]
    assert stats["dropped"] == {"near_dup": 2}
    assert stats["extra"]["near_dup"]["size_histogram"]["3-9"] == {"clusters": 1, "rows": 3}


def test_seen_set_by_url_across_runs(tmp_path, run_dedup):
    """--seen-by-url drops a published url even under a new caption; the seen-set keeps each key once."""
    from crawlpairs.udfs.dedup.seen import SeenSet

    seen = tmp_path / "seen"
    a, b, c = (f"https://img.example.com/{x}.jpg" for x in "abc")
    opts = {"near_dup": False}  # the default; said here because this test is about the seen-set
    first = [row(a, "Tavern Brawl by velinov"), row(b, "Stir Fry Mango Chicken")]
    run_dedup(write_candidates(tmp_path / "c1", first), tmp_path / "o1", seen, seen_by_url=True, **opts)
    second = [row(a, "Tavern Brawl by velinov"),  # published uid
              row(b, "Mango chicken stir fry with rice"),  # published url, new caption
              row(c, DRAGONFLY)]  # new
    kept, stats = run_dedup(write_candidates(tmp_path / "c2", second), tmp_path / "o2", seen, seen_by_url=True, **opts)
    assert [r["url"] for r in kept] == [c]
    assert stats["dropped"] == {"seen_uid": 1, "seen_url": 1}
    assert stats["extra"]["seen"]["appended"] == {"uid": 1, "url": 1}
    # without --seen-by-url a new caption of a published url is kept, even against an earlier copy of the
    # published pair (a dropped row never wins a later rule), and its url key is not appended again
    third = [row(a, "Tavern Brawl by velinov", minutes=0), row(a, GRANITE, minutes=5)]
    kept3, stats3 = run_dedup(write_candidates(tmp_path / "c3", third), tmp_path / "o3", seen, **opts)
    assert [r["text"] for r in kept3] == [GRANITE]
    assert stats3["dropped"] == {"seen_uid": 1}
    assert stats3["extra"]["seen"]["appended"] == {"uid": 1, "url": 0}

    s = SeenSet(str(seen))
    commits = s.commits()
    assert len(commits) == 3
    for kind, n in (("uid", 4), ("url", 3)):
        keys = [k for p in s.paths(kind, commits, None)
                for k in pq.read_table(p, columns=["key"]).column("key").to_pylist()]
        assert len(keys) == len(set(keys)) == n, kind
