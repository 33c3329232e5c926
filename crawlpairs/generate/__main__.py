"""`python -m crawlpairs.generate ...`: the same as `crawlpairs generate ...`."""

from crawlpairs.generate.stage import GenerateStage
from crawlpairs.stage import main

raise SystemExit(main(GenerateStage))
