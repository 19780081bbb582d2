"""Errors sparsecell raises for bad input.

Every error names the file (or argument) and what is wrong in one line, so the
command line can print it as is, without a traceback.
"""


class SparsecellError(Exception):
    """Base class: a problem with the user's input, reported in one line."""


class AnnotationError(SparsecellError, ValueError):
    """A point-annotation file is missing, malformed or inconsistent."""


class ImageError(SparsecellError, ValueError):
    """An image is missing, unreadable or of an unsupported kind."""


class ConfigError(SparsecellError, ValueError):
    """A configuration value or command-line argument is invalid."""


class CheckpointError(SparsecellError, ValueError):
    """A checkpoint is missing, unreadable or not a sparsecell checkpoint."""
