"""Build configuration that pyproject.toml cannot express: the compiled extract loop.

`crawlpairs.udfs.extract._hotloop` (udfs/extract/_hotloop.c, plain C against the CPython API, no other
library) is built by `pip install .` / `pip install -e .` with the system C compiler.
It is optional: where it cannot be built the install still succeeds and extract runs its
pure-Python loop (same rows, slower; `_stats.json` says which engine ran).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "crawlpairs.udfs.extract._hotloop",
            sources=["udfs/extract/_hotloop.c"],
            extra_compile_args=["-O2", "-std=gnu11", "-ffp-contract=off"],  # language ID's floats as fastText's
            libraries=["m"],
            optional=True,
        )
    ]
)
