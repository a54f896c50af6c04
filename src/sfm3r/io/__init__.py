"""Formats and storage: image files, the HDF5 cache, COLMAP models, PLY, the 3DGS folder."""
