"""The classic backend: SIFT features, two-view geometry (pycolmap), focal self-calibration."""
