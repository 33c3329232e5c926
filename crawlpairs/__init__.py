"""crawlpairs: PySpark jobs that turn web crawls into an open image-text dataset."""

__version__ = "0.1.0"
