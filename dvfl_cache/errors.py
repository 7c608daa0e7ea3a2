"""Errors a user can act on: each prints as one line naming the file and the problem.

They subclass click.ClickException so the CLI shows the message without a traceback while
library callers can still catch them by type.
"""

from __future__ import annotations

import click


class DvflError(click.ClickException):
    """Base of every user-facing dvfl error."""

    def __init__(self, message: str):
        super().__init__(message)

    def __str__(self) -> str:  # ClickException.__str__ is fine, but keep it explicit
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
