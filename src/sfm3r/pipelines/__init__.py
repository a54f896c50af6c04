"""Stage composition: presets, run folder, resume, progress callbacks, timings."""
