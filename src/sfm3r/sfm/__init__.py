"""Algorithms and networks: pure functions on arrays (never imports io, pipelines or cli).

geometry/     the shared kernel: similarity fits, Sim(3) RANSAC, projection, LM loop, camera model
mast3r/       MASt3R: network, checkpoints, inference, retrieval head, dense matching, pair results
classic/      SIFT, two-view geometry, focal self-calibration
graph/        which pairs: image retrieval (ASMK) and scene graphs
align/        the alignment engine: verification, init, coarse, refinement, tracks, BA, camera groups
evaluation.py pose accuracy against ground truth
"""
