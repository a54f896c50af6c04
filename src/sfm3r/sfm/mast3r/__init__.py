"""The MASt3R backend: network, checkpoint reading, batched inference, retrieval head, dense reciprocal matching, and one pair's PairResult + DenseViews."""
