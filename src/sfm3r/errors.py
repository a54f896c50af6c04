"""Errors caused by user input. The CLI prints their message on one line and exits non-zero.

Raise these (never `assert`) for anything the user can fix: a bad path, an unreadable image, a wrong
checkpoint, an inconsistent cache. The message says what failed, on which input, and what to do next.
Programming errors stay ordinary exceptions (and show a traceback).
"""


class Sfm3rError(Exception):
    """Base class of every error the user can fix."""


class InputError(Sfm3rError):
    """Bad input folder, file or option."""


class ImageReadError(InputError):
    """An image file cannot be decoded (empty, truncated, not an image)."""


class CheckpointError(Sfm3rError):
    """A model checkpoint is missing, truncated or of the wrong architecture."""


class CacheError(Sfm3rError):
    """The cache folder is unusable (written by another schema, corrupted, not writable)."""


class ReconstructionError(Sfm3rError):
    """The scene cannot be reconstructed from these images (too few matches, disconnected, degenerate)."""
