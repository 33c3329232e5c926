"""Stage 5 (driver side): kNN indices in clip-retrieval's layout, built and queried."""
