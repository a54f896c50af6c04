"""Algorithms and networks: pure functions on arrays and tensors. Never imports io/, pipelines/ or cli/."""
