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


class TrainingError(SparsecellError, RuntimeError):
    """Training stopped: a non-finite loss, or an interruption (SIGTERM, Ctrl-C).

    ``exit_code`` is what the command line exits with (130 for Ctrl-C, 143 for SIGTERM,
    1 otherwise)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class SlideError(SparsecellError, ValueError):
    """A whole-slide image is missing, unreadable, corrupt or lacks what a step needs
    (e.g. its resolution)."""
