"""Errors a user can act on: each prints as one line naming the file and the problem.

Library code raises them and knows nothing of the command line; the CLI layer
(``dvfl_cache.lazycli``) turns any ``DvflError`` into that one line on stderr and exit status 1.
"""

from __future__ import annotations


class DvflError(Exception):
    """Base of every user-facing dvfl error."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class VideoDecodeError(DvflError):
    """A video that cannot be opened or decoded."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"failed to decode {self.path}: {reason}")


class IndexFormatError(DvflError):
    """A dataset annotation or index file that is missing or malformed."""


class CheckpointError(DvflError):
    """A checkpoint that cannot be loaded safely or does not fit the model."""


class CacheError(DvflError):
    """A cache store that is missing, incomplete, corrupt or from another run."""
