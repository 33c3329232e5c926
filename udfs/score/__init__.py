"""Stage 4 on executors: CLIP embeddings, similarity and the small safety/quality heads."""
