"""Stage 1 on executors: crawl files (WARC/WAT) -> candidate (url, text) pairs."""
