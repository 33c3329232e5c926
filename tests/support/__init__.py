"""Real servers the tests start on loopback: SeaweedFS (S3) and a standalone Spark cluster."""
