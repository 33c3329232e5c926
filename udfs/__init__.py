"""Executor-side functions over plain Python values and Arrow batches; no SparkSession here."""
