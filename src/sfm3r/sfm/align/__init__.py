"""The alignment engine: edge verification, canonical depths, initial poses, coarse 3D alignment, 2D refinement, tracks, bundle adjustment, camera groups."""
