"""Spark jobs, one module per stage; each is also a spark-submit entry point."""
