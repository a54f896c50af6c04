"""sfm3r: COLMAP-compatible Structure-from-Motion built around the MASt3R family of 3D networks."""

__version__ = "0.1.0"
