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


def storage_error(where: object, err: BaseException) -> CacheError:
    """One line for a failed storage call, naming the usual cause (never the options given)."""
    name = type(err).__name__
    text = str(err).splitlines()[0] if str(err) else name
    low = f"{name} {text}".lower()
    if "nocredentials" in low or "unable to locate credentials" in low \
            or "invalidaccesskeyid" in low or "signaturedoesnotmatch" in low \
            or "partialcredentials" in low:
        why = ("no valid credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
               "AWS_PROFILE, or pass --storage-option anon=true for a public bucket)")
    elif "nosuchbucket" in low or "bucket does not exist" in low:
        why = "the bucket does not exist (create it first)"
    elif "endpointconnectionerror" in low or "could not connect" in low \
            or "connection refused" in low or "clientconnectorerror" in low \
            or "cannot connect" in low or "name or service not known" in low:
        why = ("cannot reach the storage endpoint (check --storage-option endpoint_url=... or "
               "AWS_ENDPOINT_URL)")
    elif isinstance(err, PermissionError) or "accessdenied" in low or "forbidden" in low:
        why = f"access denied ({text})"
    elif isinstance(err, ImportError):
        why = f"this kind of URL needs an extra package ({text}); e.g. pip install 'dvfl[s3]'"
    else:
        why = f"{name}: {text}"
    return CacheError(f"{where}: {why}")
