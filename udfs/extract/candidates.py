"""Stage 1 on an executor: one WAT or WARC file -> Arrow batches of image-text candidates.

`extract_stream` is what the extract job calls per input file. It never raises for bad
input: unreadable or truncated files, broken JSON, undecodable HTML, absurd alt text
are counted in `Stats` (`errors` by kind with the file, `dropped` by reason) and the
rows found before the damage are still returned.

WAT or WARC is decided per record from its content, not the file name: a `metadata`
record with a JSON payload is a WAT record; a `response`/`resource` record with an
HTML payload is a WARC page. So a file may even mix both.

Speed: WAT files are 2/3 request/metadata records that cannot hold `IMG@` links; those
are skipped with a byte search before any JSON parse (in the compiled engine, inside the C
reader). The rest go through the C link loop (or orjson and the Python loop), and rows are
appended to columns (C buffers in Arrow's layout, or plain lists) that become one Arrow batch
every `batch_rows` rows (language ID runs once per batch).

`uid` = first 16 bytes (32 hex chars) of sha256(url + "\\t" + text) over UTF-8; the same
on every machine and run, so dedup can use it across files and crawls.
"""

from __future__ import annotations

import hashlib
import io
import re
import typing
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crawlpairs.config import ExtractConfig, StorageConfig
from crawlpairs.stats import Stats
from crawlpairs.udfs.extract import langid
from crawlpairs.udfs.extract.compiled import hot
from crawlpairs.udfs.extract.html import decode_body, decode_html, parse_html
from crawlpairs.udfs.extract.license import detect_license
from crawlpairs.udfs.extract.text import clean_text
from crawlpairs.udfs.extract.wat import WatLayoutError, decode_attr_url, parse_page, scan_extras, scan_page
from crawlpairs.udfs.urls import base_prefixes, host_of, normalize_url, resolve

_hot: typing.Any = hot  # the compiled per-link loop, or None (the Python loop runs)


def engine() -> str:
    """Which WAT loop runs in this process: `compiled` (the C extension) or `python`."""
    return "python" if _hot is None else "compiled"

CANDIDATE_SCHEMA = pa.schema(
    [
        pa.field("uid", pa.string(), nullable=False),
        pa.field("url", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("text_source", pa.string(), nullable=False),  # alt | title | figcaption
        pa.field("page_url", pa.string()),
        pa.field("page_domain", pa.string()),
        pa.field("image_domain", pa.string(), nullable=False),
        pa.field("language", pa.string()),
        pa.field("language_score", pa.float32()),
        pa.field("license", pa.string()),  # cc0 | pdm | cc-by | cc-by-sa | ... | null
        pa.field("license_url", pa.string()),
        pa.field("crawl", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_offset", pa.int64()),  # byte offset of the WARC record in the file as stored
        pa.field("fetch_time", pa.timestamp("us", tz="UTC")),
        pa.field("width", pa.int32()),  # <img width/height> attributes (WARC only)
        pa.field("height", pa.int32()),
    ]
)

_CRAWL_RE = re.compile(r"CC-MAIN-\d{4}-\d{2}(?!\d)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH

# WARC-Type values counted by name (records.<type>); any other is counted as "unknown".
_TYPES = frozenset({"warcinfo", "response", "resource", "request", "metadata", "revisit",
                    "conversion", "continuation"})


def make_uid(url: str, text: str) -> str:
    """Stable row id: sha256(url + TAB + text), first 16 bytes as hex."""
    return hashlib.sha256(f"{url}\t{text}".encode("utf-8", "surrogatepass")).hexdigest()[:32]


def crawl_from_path(path: str) -> str | None:
    """`.../crawl-data/CC-MAIN-2024-33/...` -> `CC-MAIN-2024-33` (crawlpairs.inputs uses it too)."""
    m = _CRAWL_RE.search(path)
    return m.group(0) if m else None


def _fatal(exc: BaseException) -> bool:
    """Exceptions we must not swallow. FastWARC's Rust panics arrive as pyo3's
    PanicException, a BaseException: those are input damage and are caught."""
    return isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError))


def _parse_warc_date(value: str | None) -> int | None:
    """WARC-Date -> microseconds since the epoch (None if absent or malformed)."""
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _US


def _timestamps(dates: list[str | None]) -> pa.Array:
    """WARC-Date strings -> timestamp[us, UTC]; vectorised, row by row only if one is odd."""
    ts = pa.timestamp("us", tz="UTC")
    try:
        return pa.array(dates, pa.string()).cast(ts)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([_parse_warc_date(d) for d in dates], pa.int64()).cast(ts)


def _warc_record(rec: typing.Any) -> typing.Any:
    """FastWARC's view (HTTP headers, charset) of one `warcread.RawRecord`, already cut out of its member."""
    from fastwarc.warc import ArchiveIterator

    data = io.BytesIO(b"".join((rec.header, b"\r\n\r\n", rec.payload, b"\r\n\r\n")))
    for hrec in ArchiveIterator(data, parse_http=True, quirks_mode=True,
                                auto_decode="none"):  # its decoding aborts on CC's pre-decoded bodies
        return hrec
    return None


class _Builder:
    """Column lists for one batch, the per-page filters, and batch assembly.

    Per-row Python work is what bounds extraction, so page-level values (page_url, license,
    offset, time, ...) are stored once per page and expanded with one Arrow `take` per batch.
    """

    def __init__(self, cfg: ExtractConfig, stats: Stats, source_file: str,
                 storage: StorageConfig | None = None) -> None:
        self.cfg = cfg
        self.stats = stats
        self.source_file = source_file
        self.storage = storage  # where the language-ID model is fetched from (s3:// endpoint)
        self.schemes = frozenset(s.lower() for s in cfg.allowed_schemes)
        exts = sorted({e.lower().lstrip(".") for e in cfg.drop_extensions if e.strip(".")})
        # same answer as `extension_of(url) in exts`, as one C-level match per URL
        self.drop_ext = (re.compile(r"^[^:/?#]+://[^/?#]*/[^?#]*\.(?:" + "|".join(map(re.escape, exts)) + r")(?:[?#]|$)",
                                    re.IGNORECASE).match if exts else None)
        # cheap necessary condition for drop_ext; ("",) (always true) if an extension is not ASCII
        self.ext_tails = tuple("." + e for e in exts) if all(e.isascii() for e in exts) else ("",)
        self.ext_span = max((len(t) for t in self.ext_tails), default=0)
        self.max_raw_text = cfg.max_text_length * 4 + 64  # longer raw text cannot clean down to max
        # the compiled loop's settings; None (Python loop) when it is not built or an
        # extension is not ASCII (its suffix test would differ from the IGNORECASE regex)
        self.hot = _hot if _hot is not None and "" not in self.ext_tails else None
        self.hot_cfg = (
            tuple(s.encode() for s in self.schemes if s.isascii()),
            tuple(t.encode() for t in self.ext_tails),
            cfg.max_url_length, cfg.max_domain_length, cfg.min_text_length, cfg.max_text_length,
            self.max_raw_text, cfg.max_links_per_page if cfg.max_links_per_page > 0 else 1 << 62,
            bool(cfg.exact_dedup),
        )
        self.found = 0
        self.drops: dict[str, int] = {}
        # the compiled loop writes the five per-row string columns in C (Arrow's layout);
        # the Python loop keeps them in the lists of _reset
        self.cols = self.hot.Columns() if self.hot is not None else None
        self._reset()

    def _reset(self) -> None:
        self.uid: list[str] = []
        self.url: list[str] = []
        self.text: list[str] = []
        self.source: list[str] = []
        self.image_domain: list[str] = []
        self.row_page: list[int] = []  # index into the page lists below
        self.width: list[int | None] = []  # filled only when some image has attributes (WARC)
        self.height: list[int | None] = []
        self.p_url: list[str | None] = []
        self.p_domain: list[str | None] = []
        self.p_license: list[str | None] = []
        self.p_license_url: list[str | None] = []
        self.p_offset: list[int | None] = []
        self.p_time: list[str | None] = []  # WARC-Date as written; parsed per batch by Arrow

    def __len__(self) -> int:
        return len(self.url) if self.cols is None else len(self.cols)

    def add_page(
        self,
        page_url: str | None,
        base: str,
        images: list,
        lic: tuple[str | None, str | None],
        offset: int | None,
        fetch_time: str | None,
        decode_urls: bool,
    ) -> None:
        """Filter one page's (raw url, [(raw text, text_source)...][, width, height]) and append survivors."""
        cfg = self.cfg
        drops = self.drops
        self.found += len(images)
        seen: set[tuple[str, str]] = set()
        prefixes = base_prefixes(base)
        dedup = cfg.exact_dedup
        n0 = len(self)
        if self.cols is None:
            uids, urls, texts, sources, domains = self.uid, self.url, self.text, self.source, self.image_domain
        else:  # this page's rows, then into the C columns
            uids, urls, texts, sources, domains = [], [], [], [], []
        with_dims = images and len(images[0]) > 2
        hosts: dict[str, str] = {}  # origin -> host: most images of a page share a few origins
        # href -> (url, drop reason or None, domain): a third of a page's IMG links repeat an
        # href (icons, spacers, the same picture twice), so resolve and judge each href once.
        judged: dict[str, tuple[str, str | None, str]] = {}
        judge, pick = self.judge, self.pick
        sha256 = hashlib.sha256
        for img in images:
            cands = img[1]
            if not cands:
                drops["empty_text"] = drops.get("empty_text", 0) + 1
                continue
            href = img[0]
            verdict = judged.get(href)
            if verdict is None:
                verdict = judged[href] = judge(href, base, prefixes, decode_urls, hosts)
            url, reason, domain = verdict
            if reason is not None:
                drops[reason] = drops.get(reason, 0) + 1
                continue
            text, reason, source = pick(cands)
            if reason is None and dedup:
                key = (url, text)
                if key in seen:
                    reason = "duplicate_in_page"
                else:
                    seen.add(key)
            if reason is not None:
                drops[reason] = drops.get(reason, 0) + 1
                continue
            uids.append(sha256(f"{url}\t{text}".encode("utf-8", "surrogatepass")).digest()[:16].hex())  # make_uid
            urls.append(url)
            texts.append(text)
            sources.append(source)
            domains.append(domain)
            if with_dims:
                self.width.append(img[2])
                self.height.append(img[3])
        if self.cols is not None and uids:
            self.cols.extend(uids, urls, texts, sources, domains)
        self._page_done(page_url, lic, offset, fetch_time, len(self) - n0, with_dims)

    def judge(self, href: str, base: str, prefixes: tuple[str, str] | None, decode_urls: bool,
              hosts: dict[str, str]) -> tuple[str, str | None, str]:
        """One raw href -> (url, drop reason or None, image domain): resolution, then the URL
        filters in order. `hosts` caches origin -> host for the page."""
        if decode_urls and "&" in href:
            href = decode_attr_url(href)
        url = resolve(base, href, prefixes)
        reason, domain = None, ""
        if not url:
            return url, "empty_url", domain
        colon = url.find(":")
        scheme = url[:colon].lower() if colon > 0 else ""
        if scheme not in self.schemes:
            return url, ("data_uri" if scheme == "data" else "scheme"), domain
        norm = normalize_url(url, self.schemes)
        if norm is None:
            return url, "bad_url", domain  # no browser could request it (urls.normalize_url)
        url = norm
        if len(url) > self.cfg.max_url_length:
            return url, "url_too_long", domain
        j = url.find("/", colon + 3)
        origin = url[:j] if j > 0 else url
        domain = hosts.get(origin)  # type: ignore[assignment]
        if domain is None:
            domain = hosts[origin] = host_of(origin)
        if not domain:
            reason = "no_domain"
        elif len(domain) > self.cfg.max_domain_length:
            reason = "domain_too_long"
        elif self.drop_ext is not None:
            # the regex can only match if the part before the query/fragment ends in `.ext`:
            # check a short slice first (most images are .jpg/.png). A non-ASCII tail goes to
            # the regex: IGNORECASE folds U+017F to "s".
            end = len(url)
            k = url.find("?")
            if k >= 0:
                end = k
            k = url.find("#", 0, end)
            if k >= 0:
                end = k
            tail = url[max(0, end - self.ext_span) : end]
            if (tail.lower().endswith(self.ext_tails) or not tail.isascii()) and self.drop_ext(url):
                reason = "extension"
        return url, reason, domain

    def pick(self, cands: list[tuple[str, str]]) -> tuple[str, str | None, str]:
        """(text, drop reason or None, text_source) from an image's candidate texts.

        alt first: if it has text, it decides (LAION). Fallbacks (only reached when alt is
        missing or cleans to nothing) are tried in order until one passes the length limits."""
        max_raw, min_len, max_len = self.max_raw_text, self.cfg.min_text_length, self.cfg.max_text_length
        text, reason, source = "", "empty_text", "alt"
        for raw, src in cands:
            if len(raw) > max_raw:  # cannot clean down to max_text_length: skip the cost
                reason = "text_too_long"
                if src == "alt":
                    break
                continue
            t = clean_text(raw)
            if not t:
                continue
            text, source = t, src
            if src == "alt" or min_len <= len(t) <= max_len:
                break
        if not text:
            return text, reason, source  # what the loop found: empty_text or text_too_long
        if len(text) < min_len:
            return text, "text_too_short", source
        if len(text) > max_len:
            return text, "text_too_long", source
        return text, None, source

    def add_wat_page(self, payload: bytes, with_title: bool, page_url: str | None, base: str,
                     lic: tuple[str | None, str | None], offset: int | None, fetch_time: str | None,
                     max_links: int) -> bool:
        """`add_page` over `scan_page(payload).images`, in the compiled loop; False (nothing
        added) when the loop declines the page (a link object it cannot prove it parses as
        orjson does): the caller then takes the Python path for the whole page."""
        prefixes = base_prefixes(base)
        o = d = None
        if prefixes is not None and prefixes[0].isascii() and prefixes[1].isascii():
            o, d = prefixes[0].encode(), prefixes[1].encode()
        hosts: dict[str, str] = {}
        judged: dict[str, tuple[str, str | None, str]] = {}
        judge = self.judge

        def judge_href(href: str) -> tuple[str, str | None, str]:
            verdict = judged.get(href)
            if verdict is None:
                verdict = judged[href] = judge(href, base, prefixes, True, hosts)
            return verdict

        n0 = len(self)
        r = self.hot.wat_links(payload, with_title, o, d, self.hot_cfg, judge_href, self.pick, self.cols,
                               self.drops)
        if r is None:
            return False
        n, kept = r
        if n > max_links:
            self.stats.drop("too_many_links", n - max_links)
            self.stats.incr("pairs_found", n - max_links)  # found = kept + dropped
            n = max_links
        self.found += n
        assert kept == len(self) - n0
        self._page_done(page_url, lic, offset, fetch_time, kept, False)
        return True

    def _page_done(self, page_url: str | None, lic: tuple[str | None, str | None], offset: int | None,
                   fetch_time: str | None, kept: int, with_dims: bool) -> None:
        """Per-page values of a page that kept `kept` rows (stored once, expanded in `build`)."""
        total = len(self)
        page_idx = len(self.p_url)
        if kept:
            self.row_page.extend([page_idx] * kept)
            if not with_dims and self.width:
                self.width.extend([None] * kept)
                self.height.extend([None] * kept)
            elif with_dims and len(self.width) < total:  # earlier pages had no dimensions
                missing = total - len(self.width)
                self.width[:0] = [None] * missing
                self.height[:0] = [None] * missing
            self.p_url.append(page_url)
            self.p_domain.append(host_of(page_url) if page_url else None)
            self.p_license.append(lic[0])
            self.p_license_url.append(lic[1])
            self.p_offset.append(offset)
            self.p_time.append(fetch_time)

    def flush_counts(self) -> None:
        for reason, n in self.drops.items():
            self.stats.drop(reason, n)
        self.drops = {}
        self.stats.incr("pairs_found", self.found)
        self.stats.incr("pairs_kept", 0)  # present even when nothing is kept
        self.found = 0

    def build(self, crawl: str) -> pa.RecordBatch | None:
        """The batch of rows collected so far (language-filtered); None if no row survives."""
        n = len(self)
        if n == 0:
            return None
        cfg = self.cfg
        if self.cols is not None:  # Arrow arrays over the C columns' buffers, no copy
            bufs = self.cols.take()
            uid_a, url_a, text_a, src_a, dom_a = (
                pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(o), pa.py_buffer(d)]) for o, d in bufs)
        else:
            bufs = None
            uid_a, url_a, text_a, src_a, dom_a = (pa.array(v, pa.string()) for v in (
                self.uid, self.url, self.text, self.source, self.image_domain))
        if cfg.lid_model:
            col = langid.predict_column(*bufs[2], n, cfg.lid_model, self.storage) if bufs is not None else None
            if col is not None:
                codes, labels, scores = col
                lang_arr = pa.array(codes, pa.string()).take(pa.array(labels, mask=labels < 0))
            else:
                texts = self.text if self.cols is None else text_a.to_pylist()
                langs, scores = langid.predict(texts, cfg.lid_model, self.storage)
                lang_arr = pa.array(langs, pa.string())
            score_arr = pa.array(scores, pa.float32())
        else:
            lang_arr = pa.nulls(n, pa.string())
            score_arr = pa.nulls(n, pa.float32())
        idx = pa.array(self.row_page, pa.int32())

        def per_page(values: list, typ: pa.DataType) -> pa.Array:
            return pa.array(values, typ).take(idx)

        if self.width:
            width, height = pa.array(self.width, pa.int32()), pa.array(self.height, pa.int32())
        else:
            width = height = pa.nulls(n, pa.int32())
        batch = pa.RecordBatch.from_arrays(
            [
                uid_a,
                url_a,
                text_a,
                src_a,
                per_page(self.p_url, pa.string()),
                per_page(self.p_domain, pa.string()),
                dom_a,
                lang_arr,
                score_arr,
                per_page(self.p_license, pa.string()),
                per_page(self.p_license_url, pa.string()),
                pa.array([crawl], pa.string()).take(pa.array(np.zeros(n, dtype=np.int32))),
                pa.array([self.source_file], pa.string()).take(pa.array(np.zeros(n, dtype=np.int32))),
                per_page(self.p_offset, pa.int64()),
                _timestamps(self.p_time).take(idx),
                width,
                height,
            ],
            schema=CANDIDATE_SCHEMA,
        )
        self._reset()
        if cfg.lid_model and cfg.lid_min_score > 0:
            keep = pc.greater_equal(score_arr, pa.scalar(cfg.lid_min_score, pa.float32()))
            batch = batch.filter(keep)
            self.stats.drop("low_language_score", n - batch.num_rows)
        self.stats.incr("pairs_kept", batch.num_rows)
        return batch if batch.num_rows else None


class FileDedup:
    """Extract's per-file exact dedup: a row whose uid (url, text) the file already wrote is
    dropped, so the first in file order survives. The uids are kept in C where the extension
    is built (32-byte keys, no Python object per row), else in a set."""

    def __init__(self) -> None:
        self.c = _hot.UidSet() if _hot is not None else None
        self.seen: set[str] = set()

    def keep(self, uids: pa.Array) -> pa.Array | None:
        """Boolean mask of the rows to keep, or None when every uid is new."""
        if self.c is not None:
            _, offsets, data = uids.buffers()
            mask = np.frombuffer(self.c.keep(offsets, data, uids.offset, len(uids)), dtype=np.bool_)
            return None if mask.all() else pa.array(mask)
        seen = self.seen
        keep = [u not in seen and not seen.add(u) for u in uids.to_pylist()]  # type: ignore[func-returns-value]
        return None if all(keep) else pa.array(keep)


def _wat_base_license(page_url: str | None, page_base: str | None,
                      license_links: list[tuple[str, str | None]]) -> tuple[str, tuple[str | None, str | None]]:
    """A WAT page's base URL (Head.Base resolved against the page, if it gives http(s)) and license."""
    base = page_url or ""
    if page_base:
        try:
            rb = resolve(base, decode_attr_url(page_base))
        except Exception:  # noqa: BLE001
            rb = ""
        if rb[:4].lower() == "http":
            base = rb
    lic: tuple[str | None, str | None] = (None, None)
    if license_links:
        lic = detect_license((resolve(base, decode_attr_url(u)), r) for u, r in license_links)
    return base, lic


def extract_stream(
    fileobj: typing.BinaryIO,
    source_file: str,
    cfg: ExtractConfig,
    stats: Stats,
    crawl: str | None = None,
    batch_rows: int = 20000,
    storage: StorageConfig | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream one WAT/WARC file (gzip or plain) and yield candidate batches (CANDIDATE_SCHEMA).

    `storage` reaches `cfg.lid_model` when it is an s3:// URI on a configured endpoint.

    Records are read one gzip member at a time (`udfs.extract.warcread`): bad data costs only its
    own record (errors by kind: gzip, truncated_record, bad_length, not_warc, too_large,
    member_too_large, wat_json, wat_layout, record), and reading goes on at the next member.

    Counters: files_read, records.<type>, pairs_found, pairs_kept, skipped.<why>;
    drops by reason; errors by kind with `source_file` and the record's offset.
    """
    from crawlpairs.udfs.extract.warcread import Caps, header_value, iter_records

    crawl_id = crawl or cfg.crawl or crawl_from_path(source_file)
    fmt = (cfg.input_format or "auto").lower()
    want_wat = fmt in ("auto", "wat")
    want_warc = fmt in ("auto", "warc")
    with_title = "title" in cfg.text_fallbacks
    max_links = cfg.max_links_per_page if cfg.max_links_per_page > 0 else 1 << 62
    b = _Builder(cfg, stats, source_file, storage)
    hot = b.hot
    stats.incr("files_read")
    stats.incr(f"engine.{'compiled' if hot is not None else 'python'}")  # files read by each loop
    if cfg.lid_model:
        stats.incr(f"lid_engine.{langid.engine(cfg.lid_model, storage)}")  # files whose language ID ran in C
    n_hot = 0
    caps = Caps(cfg.max_record_bytes, cfg.max_inflate_bytes)
    type_counts: dict[str, int] = {}
    n_wat = n_html = 0
    # the compiled reader drops WAT records without IMG@ itself (counted in type_counts)
    skip_plain = type_counts if hot is not None and want_wat else None
    for rec in iter_records(fileobj, source_file, caps, stats, skip_plain):
        if len(b) >= batch_rows:  # before the next record: every path above `continue`s
            batch = b.build(crawl_id or "unknown")
            if batch is not None:
                yield batch
        rtype = rec.rtype if rec.rtype in _TYPES else "unknown"
        type_counts[rtype] = type_counts.get(rtype, 0) + 1
        try:
            if rtype == "metadata":
                if not want_wat:
                    continue
                payload = rec.payload  # bytes, or a memoryview of the member (warcread's fast path)
                if hot is None:
                    if payload.__class__ is memoryview:  # the reader ran in C, the page loop does not
                        payload = bytes(payload)
                    if b"IMG@" not in payload:
                        continue
                else:
                    # IMG@, "Base", creativecommons.org and the closing brace, in C
                    flags, base_at = (rec.flags, rec.base_at) if rec.flags >= 0 else hot.flags(payload)
                    if not flags & 1:
                        continue
                    if flags & 8:
                        try:
                            pre = (scan_extras(bytes(payload), bool(flags & 2), bool(flags & 4), base_at)
                                   if flags & 6 else (None, []))
                        except ValueError:
                            pre = None  # scan_page would fail the same way: the Python path decides
                        if pre is not None:
                            page_url = header_value(rec.header, "WARC-Target-URI")
                            fetch_time = header_value(rec.header, "WARC-Date")
                            base, lic = _wat_base_license(page_url, pre[0], pre[1])
                            if b.add_wat_page(payload, with_title, page_url, base, lic, rec.offset, fetch_time,
                                              max_links):
                                n_wat += 1
                                n_hot += 1
                                continue
                    payload = bytes(payload)
                try:
                    page = None
                    if payload[-8:].rstrip().endswith(b"}"):
                        try:  # fast path: parse only the IMG link objects
                            page = scan_page(payload, with_title)
                        except ValueError:
                            page = None
                    if page is None:
                        page = parse_page(payload, with_title)
                except WatLayoutError as exc:
                    stats.error("wat_layout", input=source_file, message=f"offset {rec.offset}: {exc}")
                    continue
                except ValueError as exc:  # orjson.JSONDecodeError
                    if not rec.truncated:  # a cut record was counted as truncated_record
                        stats.error("wat_json", input=source_file, message=f"offset {rec.offset}: {exc}")
                    continue
                if page is None:
                    continue
                n_wat += 1
                page_url = page.page_url or header_value(rec.header, "WARC-Target-URI")
                base, lic = _wat_base_license(page_url, page.base, page.license_links)
                images = page.images
                if len(images) > max_links:
                    stats.drop("too_many_links", len(images) - max_links)
                    stats.incr("pairs_found", len(images) - max_links)  # found = kept + dropped
                    images = images[:max_links]
                b.add_page(page_url, base, images, lic, rec.offset, header_value(rec.header, "WARC-Date"), True)
            elif rtype in ("response", "resource"):
                if not want_warc:
                    continue
                hrec = _warc_record(rec)
                if hrec is None:
                    stats.error("record", input=source_file, message=f"offset {rec.offset}: unreadable WARC record")
                    continue
                ctype = (hrec.http_content_type if hrec.is_http else hrec.headers.get("Content-Type")) or ""
                if "html" not in ctype.lower():
                    stats.incr("skipped.non_html")
                    continue
                body = hrec.reader.read()
                if hrec.is_http:
                    hh = hrec.http_headers
                    te, ce = hh.get("Transfer-Encoding"), hh.get("Content-Encoding")
                    if te or ce:
                        body = decode_body(body, te, ce, cfg.max_record_bytes)
                if not body:
                    continue
                n_html += 1
                page_url = (hrec.headers.get("WARC-Target-URI") or "").strip().strip("<>")
                html = decode_html(body, hrec.http_charset if hrec.is_http else None)
                page = parse_html(html, page_url, cfg.text_fallbacks)
                lic = detect_license(page.license_links) if page.license_links else (None, None)
                images = page.images
                if len(images) > max_links:
                    stats.drop("too_many_links", len(images) - max_links)
                    stats.incr("pairs_found", len(images) - max_links)  # found = kept + dropped
                    images = images[:max_links]
                b.add_page(page_url or None, page.base, images, lic, rec.offset,
                           hrec.headers.get("WARC-Date"), False)
            elif rtype == "warcinfo" and crawl_id is None:
                m = re.search(rb"isPartOf:\s*(\S+)", rec.payload)
                if m:
                    crawl_id = m.group(1).decode("utf-8", "replace")
        except BaseException as exc:  # noqa: BLE001 - one bad record never fails the file
            if _fatal(exc):
                raise
            stats.error("record", input=source_file, message=f"offset {rec.offset}: {exc!r}")
            continue
    for t, n in type_counts.items():
        stats.incr(f"records.{t}", n)
    if n_wat:
        stats.incr("pages.wat", n_wat)
    if hot is not None:
        stats.incr("pages.wat_compiled", n_hot)  # the rest of pages.wat fell back to the Python loop
    if n_html:
        stats.incr("pages.html", n_html)
    b.flush_counts()
    batch = b.build(crawl_id or "unknown")
    if batch is not None:
        yield batch


def extract_file(
    uri: str,
    crawl: str | None,
    cfg: ExtractConfig,
    storage: StorageConfig | None,
    stats: Stats,
    batch_rows: int = 20000,
) -> Iterator[pa.RecordBatch]:
    """Open one crawl file (local path, s3://, https://) and yield its candidate batches.

    The one entry point the extract job calls per input file. Bad data is counted in
    `stats` and skipped (reading resumes at the next gzip member). Transient I/O is
    retried with back-off and the read resumes where it stopped (`storage.open_input`),
    so no row is yielded twice; `crawlpairs.errors.TransientIOError` means the failures
    outlasted `io_retries` and the caller must not commit the file. `FileNotFoundError`
    for a missing input propagates (before anything is yielded).
    """
    from crawlpairs import storage as _storage

    reader = _storage.open_input(uri, storage)
    try:
        yield from extract_stream(reader, uri, cfg, stats, crawl=crawl, batch_rows=batch_rows, storage=storage)
    finally:
        if reader.retries:
            stats.incr("io.retries", reader.retries)
            stats.incr("io.backoff_ms", int(reader.waited * 1000))
        reader.close()
