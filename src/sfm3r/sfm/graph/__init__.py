"""Which pairs to match: image retrieval (ASMK) and scene graphs."""
