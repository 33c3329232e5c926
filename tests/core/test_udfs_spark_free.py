"""The design card's rule, checked: every udfs module imports with pyspark unimportable."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import crawlpairs.udfs

BLOCK_PYSPARK = """
import importlib.abc, sys

class NoSpark(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pyspark" or name.startswith("pyspark."):
            raise ImportError(f"udfs must not import {name}")
        return None

sys.meta_path.insert(0, NoSpark())
import importlib
for name in sys.argv[1:]:
    importlib.import_module(name)
print("imported", len(sys.argv) - 1)
"""


def test_every_udfs_module_imports_without_pyspark():
    names = [m.name for m in pkgutil.walk_packages(crawlpairs.udfs.__path__, "crawlpairs.udfs.")]
    assert len(names) > 10
    done = subprocess.run([sys.executable, "-c", BLOCK_PYSPARK, *names], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"imported {len(names)}"


def test_the_guard_does_catch_a_pyspark_import():
    done = subprocess.run([sys.executable, "-c", BLOCK_PYSPARK, "pyspark.sql"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "udfs must not import pyspark" in done.stderr
