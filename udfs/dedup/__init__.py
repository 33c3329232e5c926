"""Stage 2: near-duplicate signatures, cluster sizes and the persistent seen-set."""
