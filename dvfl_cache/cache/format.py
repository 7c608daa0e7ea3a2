"""The on-disk schema of a teacher-logit cache: root attributes and the table of arrays.

The root attributes of the Zarr group are exactly `CacheMeta.to_dict()`: plain JSON, never
pickles, so anyone with `zarr` (and no dvfl) can read what was cached and how. Every field is
parsed by a small function whose error names the field, what was expected and what was found,
because a cache is often years older than the code reading it. See docs/cache-format.md.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dvfl_cache import __version__
from dvfl_cache.cache.codecs import TAUS, get_codec
from dvfl_cache.errors import CacheError

FORMAT_NAME = "dvfl-teacher-cache"
FORMAT_VERSION = 1

LOGIT_DTYPES = ("float16", "float32", "q8")
# Storage types whose logits/features go through a codec (cache/codecs.py) instead of a cast:
# field -> codec. Such a field is stored as one array per codec part, named "<field>_<part>".
CODED_DTYPES: dict[str, dict[str, str]] = {
    "q8": {"logits": "q8-logit", "features": "q8-affine"},
}
DEFAULT_VIEWS_PER_SHARD = 4096
DEFAULT_TAUS = TAUS

# Per-view records written by the data layer's views_to_arrays: name -> (dtype, trailing shape).
# "frames" is (T,), where T is CacheMeta.num_frames.
VIEW_ARRAYS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    "video": ("int32", ()),
    "view": ("int32", ()),
    "frames": ("int32", ("T",)),
    "crop": ("float32", (4,)),
    "flip": ("uint8", ()),
    "jitter": ("float32", (4,)),
    "gray": ("uint8", ()),
}
SHARD_DONE = "shard_done"
FAILURES_GROUP = "failures"

# Fields that may differ between two runs that produce the same cache contents.
PROVENANCE_ONLY = ("created", "dvfl_version")

# A digest is 64 lower-case hex characters, optionally prefixed "sha256:" (the data layer's
# index digest carries the prefix); it is stored and compared exactly as given.
_SHA256 = re.compile(r"(sha256:)?[0-9a-f]{64}")


# --- field parsers: each names the field, what was expected and what was found ---------------

def _bad(source: str, name: str, expected: str, found: Any) -> CacheError:
    shown = repr(found)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return CacheError(f"{source}: field '{name}': expected {expected}, found {shown}")


def _one_of(choices: Iterable[str]) -> str:
    return "one of " + ", ".join(map(repr, choices))


def _get(d: Mapping[str, Any], key: str, source: str, prefix: str) -> Any:
    if not isinstance(d, Mapping):
        raise _bad(source, prefix.rstrip(".") or "<root>", "a JSON object", d)
    if key not in d:
        raise CacheError(f"{source}: field '{prefix}{key}' is missing")
    return d[key]


def _check_keys(d: Mapping[str, Any], allowed: Iterable[str], source: str, prefix: str) -> None:
    extra = sorted(set(d) - set(allowed))
    if extra:
        raise CacheError(f"{source}: unexpected field(s) {', '.join(prefix + k for k in extra)}")


def _parse_str(v: Any, source: str, name: str, *, nonempty: bool = True) -> str:
    if not isinstance(v, str) or (nonempty and not v):
        raise _bad(source, name, "a non-empty string" if nonempty else "a string", v)
    return v


def _parse_int(v: Any, source: str, name: str, *, minimum: int | None = None) -> int:
    # bool is an int subclass; True as a view count is a bug, not a 1.
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(source, name, "an integer", v)
    if minimum is not None and v < minimum:
        raise _bad(source, name, f"an integer >= {minimum}", v)
    return v


def _parse_opt_int(v: Any, source: str, name: str, *, minimum: int) -> int | None:
    return None if v is None else _parse_int(v, source, name, minimum=minimum)


def _parse_sha256(v: Any, source: str, name: str, *, optional: bool) -> str | None:
    if v is None and optional:
        return None
    if not isinstance(v, str) or not _SHA256.fullmatch(v):
        raise _bad(source, name, "a sha256 digest (64 lower-case hex characters)"
                   + (" or null" if optional else ""), v)
    return v


def _parse_json_object(v: Any, source: str, name: str) -> dict[str, Any]:
    """A JSON object, normalised through a JSON round trip so tuples compare equal to lists."""
    if not isinstance(v, Mapping):
        raise _bad(source, name, "a JSON object", v)
    try:
        text = json.dumps(v, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise _bad(source, name, f"JSON-serialisable values ({e})", v) from None
    return json.loads(text)


def _parse_classes(v: Any, source: str, name: str) -> tuple[str, ...]:
    if not isinstance(v, (list, tuple)) or not v or not all(isinstance(c, str) and c for c in v):
        raise _bad(source, name, "a non-empty list of class-name strings", v)
    if len(set(v)) != len(v):
        raise _bad(source, name, "distinct class names", v)
    return tuple(v)


def _parse_split(v: Any, source: str, name: str) -> int | str:
    if isinstance(v, bool) or not isinstance(v, (int, str)) or v == "":
        raise _bad(source, name, "an integer or a non-empty string", v)
    return v


def _parse_created(v: Any, source: str, name: str) -> str:
    if not isinstance(v, str):
        raise _bad(source, name, "an ISO 8601 time string", v)
    try:
        _dt.datetime.fromisoformat(v)
    except ValueError:
        raise _bad(source, name, "an ISO 8601 time string", v) from None
    return v


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --- the schema ------------------------------------------------------------------------------

@dataclass(frozen=True)
class TeacherInfo:
    """Which network produced the logits; sha256 pins the exact weights file (None: no file)."""

    name: str
    config: dict[str, Any]
    weights_sha256: str | None

    def __post_init__(self) -> None:
        src = "TeacherInfo"
        _parse_str(self.name, src, "teacher.name")
        object.__setattr__(self, "config", _parse_json_object(self.config, src, "teacher.config"))
        _parse_sha256(self.weights_sha256, src, "teacher.weights_sha256", optional=True)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config, "weights_sha256": self.weights_sha256}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "cache") -> TeacherInfo:
        p = "teacher."
        _check_keys(d, ("name", "config", "weights_sha256"), source, p)
        return cls(name=_parse_str(_get(d, "name", source, p), source, p + "name"),
                   config=_parse_json_object(_get(d, "config", source, p), source, p + "config"),
                   weights_sha256=_parse_sha256(_get(d, "weights_sha256", source, p), source,
                                                p + "weights_sha256", optional=True))


@dataclass(frozen=True)
class DatasetInfo:
    """Which videos, in which order: the index digest pins paths, labels and order."""

    kind: str
    split: int | str
    subset: str
    index_digest: str
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        src = "DatasetInfo"
        _parse_str(self.kind, src, "dataset.kind")
        _parse_split(self.split, src, "dataset.split")
        _parse_str(self.subset, src, "dataset.subset")
        _parse_sha256(self.index_digest, src, "dataset.index_digest", optional=False)
        object.__setattr__(self, "classes", _parse_classes(self.classes, src, "dataset.classes"))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "split": self.split, "subset": self.subset,
                "index_digest": self.index_digest, "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "cache") -> DatasetInfo:
        p = "dataset."
        _check_keys(d, ("kind", "split", "subset", "index_digest", "classes"), source, p)
        return cls(
            kind=_parse_str(_get(d, "kind", source, p), source, p + "kind"),
            split=_parse_split(_get(d, "split", source, p), source, p + "split"),
            subset=_parse_str(_get(d, "subset", source, p), source, p + "subset"),
            index_digest=_parse_sha256(_get(d, "index_digest", source, p), source,
                                       p + "index_digest", optional=False),
            classes=_parse_classes(_get(d, "classes", source, p), source, p + "classes"))


@dataclass(frozen=True)
class SamplerInfo:
    """How views were drawn; with the seed, enough to redraw every view exactly."""

    name: str
    params: dict[str, Any]
    seed: int

    def __post_init__(self) -> None:
        src = "SamplerInfo"
        _parse_str(self.name, src, "sampler.name")
        object.__setattr__(self, "params", _parse_json_object(self.params, src, "sampler.params"))
        _parse_int(self.seed, src, "sampler.seed")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "cache") -> SamplerInfo:
        p = "sampler."
        _check_keys(d, ("name", "params", "seed"), source, p)
        return cls(name=_parse_str(_get(d, "name", source, p), source, p + "name"),
                   params=_parse_json_object(_get(d, "params", source, p), source, p + "params"),
                   seed=_parse_int(_get(d, "seed", source, p), source, p + "seed"))


@dataclass(frozen=True)
class CacheMeta:
    """Everything needed to know what a cache holds and to rebuild it bit for bit.

    Rows are views: row ``r * num_videos + v`` is view ``r`` of video ``v``. Logits have one
    column per dataset class, so ``num_classes == len(dataset.classes)``.
    """

    teacher: TeacherInfo
    dataset: DatasetInfo
    sampler: SamplerInfo
    num_videos: int
    views_per_video: int
    num_frames: int
    dtype: str = "float16"
    feature_dim: int | None = None
    views_per_shard: int = DEFAULT_VIEWS_PER_SHARD
    dvfl_version: str = __version__
    created: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        src = "CacheMeta"
        for name, typ in (("teacher", TeacherInfo), ("dataset", DatasetInfo),
                          ("sampler", SamplerInfo)):
            if not isinstance(getattr(self, name), typ):
                raise _bad(src, name, typ.__name__, getattr(self, name))
        _parse_int(self.num_videos, src, "num_videos", minimum=1)
        _parse_int(self.views_per_video, src, "views_per_video", minimum=1)
        _parse_int(self.num_frames, src, "num_frames", minimum=1)
        if self.dtype not in LOGIT_DTYPES:
            raise _bad(src, "dtype", _one_of(LOGIT_DTYPES), self.dtype)
        _parse_opt_int(self.feature_dim, src, "feature_dim", minimum=1)
        _parse_int(self.views_per_shard, src, "views_per_shard", minimum=1)
        _parse_str(self.dvfl_version, src, "dvfl_version")
        _parse_created(self.created, src, "created")

    # derived layout
    @property
    def num_classes(self) -> int:
        return len(self.dataset.classes)

    @property
    def num_rows(self) -> int:
        return self.num_videos * self.views_per_video

    @property
    def num_shards(self) -> int:
        return -(-self.num_rows // self.views_per_shard)

    def codec(self, name: str) -> str | None:
        """The codec storing field `name` ("logits", "features"), None when stored as is."""
        return CODED_DTYPES.get(self.dtype, {}).get(name)

    def value_arrays(self) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """Every per-row array as the writer takes it and the reader returns it: coded
        fields are float32 values here, one array each."""
        out: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
        raw = np.dtype("float32") if self.dtype in CODED_DTYPES else np.dtype(self.dtype)
        out["logits"] = (raw, (self.num_classes,))
        if self.feature_dim is not None:
            out["features"] = (raw, (self.feature_dim,))
        out["label"] = (np.dtype("int32"), ())
        out["valid"] = (np.dtype("uint8"), ())
        for name, (dt, trail) in VIEW_ARRAYS.items():
            out[name] = (np.dtype(dt), tuple(self.num_frames if t == "T" else t for t in trail))
        return out

    def coded_parts(self, name: str) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """Stored array name -> (dtype, trailing shape) of coded field `name`'s parts."""
        width = self.value_arrays()[name][1][0]
        return {f"{name}_{part}": spec
                for part, spec in get_codec(self.codec(name)).part_specs(width).items()}

    def row_arrays(self) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """Every per-row array as stored, name -> (dtype, trailing shape), in on-disk order.

        Equal to value_arrays() except that a coded field is replaced by its parts."""
        out: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
        for name, spec in self.value_arrays().items():
            if self.codec(name) is None:
                out[name] = spec
            else:
                out.update(self.coded_parts(name))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "teacher": self.teacher.to_dict(),
            "dataset": self.dataset.to_dict(),
            "sampler": self.sampler.to_dict(),
            "num_videos": self.num_videos,
            "views_per_video": self.views_per_video,
            "num_frames": self.num_frames,
            "num_classes": self.num_classes,
            "dtype": self.dtype,
            "feature_dim": self.feature_dim,
            "views_per_shard": self.views_per_shard,
            "dvfl_version": self.dvfl_version,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "cache") -> CacheMeta:
        """Parse root attributes; `source` (the store's path) is named in every error."""
        if not isinstance(d, Mapping):
            raise _bad(source, "<root attributes>", "a JSON object", d)
        fmt = d.get("format")
        if fmt != FORMAT_NAME:
            raise CacheError(f"{source}: not a dvfl teacher cache (attribute 'format' is "
                             f"{fmt!r}, expected {FORMAT_NAME!r})")
        version = _parse_int(_get(d, "format_version", source, ""), source, "format_version",
                             minimum=1)
        if version > FORMAT_VERSION:
            raise CacheError(f"{source}: written by a newer dvfl (cache format version {version}, "
                             f"this dvfl {__version__} reads up to {FORMAT_VERSION}); upgrade dvfl")
        _check_keys(d, ("format", "format_version", "teacher", "dataset", "sampler",
                        "num_videos", "views_per_video", "num_frames", "num_classes", "dtype",
                        "feature_dim", "views_per_shard", "dvfl_version", "created"), source, "")
        dataset = DatasetInfo.from_dict(_get(d, "dataset", source, ""), source=source)
        num_classes = _parse_int(_get(d, "num_classes", source, ""), source, "num_classes",
                                 minimum=1)
        if num_classes != len(dataset.classes):
            raise _bad(source, "num_classes", f"{len(dataset.classes)} (the number of "
                       "dataset.classes)", num_classes)
        dtype = _get(d, "dtype", source, "")
        if dtype not in LOGIT_DTYPES:
            raise _bad(source, "dtype", _one_of(LOGIT_DTYPES), dtype)
        return cls(
            teacher=TeacherInfo.from_dict(_get(d, "teacher", source, ""), source=source),
            dataset=dataset,
            sampler=SamplerInfo.from_dict(_get(d, "sampler", source, ""), source=source),
            num_videos=_parse_int(_get(d, "num_videos", source, ""), source, "num_videos",
                                  minimum=1),
            views_per_video=_parse_int(_get(d, "views_per_video", source, ""), source,
                                       "views_per_video", minimum=1),
            num_frames=_parse_int(_get(d, "num_frames", source, ""), source, "num_frames",
                                  minimum=1),
            dtype=dtype,
            feature_dim=_parse_opt_int(_get(d, "feature_dim", source, ""), source, "feature_dim",
                                       minimum=1),
            views_per_shard=_parse_int(_get(d, "views_per_shard", source, ""), source,
                                       "views_per_shard", minimum=1),
            dvfl_version=_parse_str(_get(d, "dvfl_version", source, ""), source, "dvfl_version"),
            created=_parse_created(_get(d, "created", source, ""), source, "created"),
        )

    def differences(self, other: CacheMeta, *,
                    ignore: Iterable[str] = PROVENANCE_ONLY) -> list[tuple[str, Any, Any]]:
        """(dotted field, self's value, other's value) for every field that differs."""
        skip = set(ignore)
        out: list[tuple[str, Any, Any]] = []

        def walk(prefix: str, a: Any, b: Any) -> None:
            if isinstance(a, dict) and isinstance(b, dict) and prefix.count(".") < 1:
                for k in sorted(set(a) | set(b)):
                    walk(f"{prefix}.{k}" if prefix else k, a.get(k), b.get(k))
            elif prefix not in skip and a != b:
                out.append((prefix, a, b))

        walk("", self.to_dict(), other.to_dict())
        return out

    def replace(self, **changes: Any) -> CacheMeta:
        return dataclasses.replace(self, **changes)


# --- float16 rounding error ------------------------------------------------------------------

def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1, keepdims=True)
    z = x - m
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def fp16_kl_error(logits_f32: np.ndarray, taus: Iterable[float] = DEFAULT_TAUS
                  ) -> dict[float, float]:
    """Worst-row KL(softmax(l/tau) || softmax(fp16(l)/tau)) for each temperature tau.

    Why: the cache stores float16 logits by default; this is the exact price of that rounding
    as the student's KD target sees it, measured on real teacher outputs by the build and
    recorded in the store. Computed in float64 so the number is the rounding's, not ours.
    Logits beyond the float16 range (|l| > 65504) give an infinite error.
    """
    x = np.asarray(logits_f32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] < 2:
        raise ValueError(f"fp16_kl_error needs logits of shape (rows >= 1, classes >= 2), "
                         f"got {x.shape}")
    x32 = x.astype(np.float32)
    if not np.isfinite(x32).all():
        raise ValueError("fp16_kl_error: logits contain NaN or inf")
    with np.errstate(over="ignore"):  # overflow is reported below as an infinite error
        x16 = x32.astype(np.float16).astype(np.float64)
    x64 = x32.astype(np.float64)
    overflow = ~np.isfinite(x16).all(axis=1)
    out: dict[float, float] = {}
    for tau in taus:
        if not tau > 0:
            raise ValueError(f"fp16_kl_error: temperatures must be > 0, got {tau}")
        if overflow.any():
            out[tau] = math.inf
            continue
        lp = _log_softmax(x64 / tau)
        lq = _log_softmax(x16 / tau)
        kl = (np.exp(lp) * (lp - lq)).sum(axis=1)
        # KL >= 0; a -1e-18 is float64 noise, not information.
        out[tau] = float(max(kl.max(), 0.0))
    return out
