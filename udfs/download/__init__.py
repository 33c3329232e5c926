"""Stage 3 on executors: fetch, vet and resize images into webdataset shards."""
