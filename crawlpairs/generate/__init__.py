"""Realistic synthetic Common Crawl files (WAT and WARC) with known ground truth.

Real full-size WAT files cannot be had offline, yet the extract stage, the demo, the
dedup tests and the benchmarks all need tens of thousands of realistic records and
must know how many image-text pairs a correct extractor should find. This package
writes such files deterministically from a seed:

* WAT files exactly in Common Crawl's layout: one gzip member per record, a
  `warcinfo` record, a `metadata` record describing the WARC's warcinfo, then per
  page the request / response / metadata triplet, each a JSON document
  (Container -> Gzip-Metadata/Offset of the described WARC record; Envelope ->
  WARC-Header-Metadata, Payload-Metadata -> HTTP-Response-Metadata -> HTML-Metadata
  -> Head {Title, Base, Metas, Link, Scripts} and Links with the `path` values
  ia-web-commons emits: `IMG@/src`, `A@/href`, `FORM@/action`, ...). Attribute
  values are copied raw (entities not decoded), as ia-web-commons does.
* WARC files with the same pages: warcinfo, then request / response / metadata per
  page, real HTTP headers, real HTML. The WAT's Container offsets, lengths and CRCs
  are those of the WARC written from the same arguments.
* A ground-truth table (`_truth.parquet`, one row per `<img>` tag) and counts.

Every generated image is built with at most one "fault" (a reason LAION's default
filters drop it), so counts per drop reason do not depend on the order in which an
extractor applies its filters. Texts are kept away from the length limits so that
any reasonable cleanup (entity decoding, control-character removal, whitespace
collapsing, ftfy) agrees on which ones pass. See docs/generate.md.

The package, one concern per module (docs/development.md's code map):

* `truth.py`     the rules the truth applies (LAION's defaults) and attribute escaping/cleanup
* `vocab.py`     captions, the built-in word list and the synthetic web; the lists are package
                 data in `data/*.json`
* `rand.py`      the seeded draws every part shares
* `pages.py`     sites, `<img>` tags with their single fault, HTML pages and their link metadata
* `warcwrite.py` WARC records and the WAT records describing them, one gzip member each
* `run.py`       `generate()`: one job per file, merged counts and truth, listings
* `stage.py`     the `crawlpairs generate` subcommand
"""

from crawlpairs.generate.pages import SLOT_WEIGHTS
from crawlpairs.generate.run import KINDS, GenerateResult, crawl_week_start, file_stem, generate
from crawlpairs.generate.stage import GenerateStage
from crawlpairs.generate.truth import (
    DROP_EXTENSIONS,
    FAULTS,
    MAX_DOMAIN_LENGTH,
    MAX_TEXT_LENGTH,
    MAX_URL_LENGTH,
    MIN_TEXT_LENGTH,
    clean_text,
    url_extension,
)
from crawlpairs.generate.vocab import N_DOMAINS, ZIPF_S, find_captions, load_captions
from crawlpairs.generate.warcwrite import gzip_member

__all__ = [
    "DROP_EXTENSIONS",
    "FAULTS",
    "KINDS",
    "MAX_DOMAIN_LENGTH",
    "MAX_TEXT_LENGTH",
    "MAX_URL_LENGTH",
    "MIN_TEXT_LENGTH",
    "N_DOMAINS",
    "SLOT_WEIGHTS",
    "ZIPF_S",
    "GenerateResult",
    "GenerateStage",
    "clean_text",
    "crawl_week_start",
    "file_stem",
    "find_captions",
    "generate",
    "gzip_member",
    "load_captions",
    "url_extension",
]
