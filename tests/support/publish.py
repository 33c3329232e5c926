"""Helpers of the publish and report tests."""

from __future__ import annotations

from pathlib import Path

from crawlpairs.config import Config


def crawl_files(shared_data: Path) -> list[str]:
    """Every real WARC and WAT file in ../shared/data."""
    return sorted(str(p) for p in (shared_data / "warc").glob("*.warc.gz")) + \
        sorted(str(p) for p in (shared_data / "wat").glob("*.gz"))


def publish_cfg(root: Path, **kw) -> Config:
    """A publish run of `root` with [publish] settings `kw`."""
    cfg = Config(output=str(root))
    for k, v in kw.items():
        setattr(cfg.publish, k, v)
    return cfg
