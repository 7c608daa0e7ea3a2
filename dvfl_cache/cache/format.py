"""The on-disk schema of a teacher-logit cache: root attributes and the table of arrays.

The root attributes of the Zarr group are exactly `CacheMeta.to_dict()`: plain JSON, never
pickles, so anyone with `zarr` (and no dvfl) can read what was cached and how. Every field is
parsed by a small function whose error names the field, what was expected and what was found,
because a cache is often years older than the code reading it. See docs/cache-format.md.

Parsing happens once, the zarr way: the constructors parse their fields (``__post_init__``)
and ``from_dict`` only finds the fields in the JSON and hands them over, with ``source`` (the
store's path) for the errors to name.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import InitVar, dataclass, field
from typing import Any

import numpy as np

from dvfl_cache import __version__
from dvfl_cache.cache.codecs import TAUS, get_codec
from dvfl_cache.data.mix import MixConfig, mix_arrays_spec
from dvfl_cache.errors import CacheError

FORMAT_NAME = "dvfl-teacher-cache"
# 2: mixed rows (mix_* / partner_* columns), per-frame jitter columns, and the root fields
# mix, teacher_precision and decoder_version. Version-1 stores are still read (and written
# back, e.g. by import, as version 1).
FORMAT_VERSION = 2
FORMAT_VERSIONS = (1, 2)
UNVERSIONED_DECODER = 0  # decoder_version of frames decoded before the decoder was versioned

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
# Per-frame jitter columns (sampler jitter_mode "frame"): name -> (dtype, trailing shape).
FRAME_JITTER_ARRAYS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    "frame_jitter": ("float32", ("T", 4)),
    "jitter_order": ("uint8", ("T", 4)),
}
SHARD_DONE = "shard_done"
FAILURES_GROUP = "failures"

# Fields that may differ between two runs that produce the same cache contents.
PROVENANCE_ONLY = ("created", "dvfl_version")
_V1_KEYS = ("format", "format_version", "teacher", "dataset", "sampler", "num_videos",
            "views_per_video", "num_frames", "num_classes", "dtype", "feature_dim",
            "views_per_shard", "dvfl_version", "created")
_V2_KEYS = (*_V1_KEYS, "mix", "teacher_precision", "decoder_version")
AUTOCAST_DTYPES = ("bfloat16", "float16")

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


def _parse_mix(v: Any, source: str, name: str) -> MixConfig | None:
    if v is None:
        return None
    if not isinstance(v, Mapping) or set(v) != {"mixup", "cutmix", "prob", "seed"}:
        raise _bad(source, name, "null or an object with mixup, cutmix, prob and seed", v)
    for k in ("mixup", "cutmix", "prob"):
        if isinstance(v[k], bool) or not isinstance(v[k], (int, float)):
            raise _bad(source, f"{name}.{k}", "a number", v[k])
    _parse_int(v["seed"], source, f"{name}.seed")
    try:
        cfg = MixConfig(**v)
    except ValueError as e:
        raise _bad(source, name, str(e), v) from None
    if not cfg.enabled:
        raise _bad(source, name, "null for a cache without mixing", v)
    return cfg


def _parse_precision(v: Any, source: str, name: str) -> dict[str, Any] | None:
    """{"device": "cpu"|"cuda"|..., "autocast": null|"bfloat16"|"float16"}; null: unrecorded."""
    if v is None:
        return None
    if not isinstance(v, Mapping) or set(v) != {"device", "autocast"}:
        raise _bad(source, name, "null or an object with device and autocast", v)
    _parse_str(v["device"], source, f"{name}.device")
    if v["autocast"] is not None and v["autocast"] not in AUTOCAST_DTYPES:
        raise _bad(source, f"{name}.autocast", "null, 'bfloat16' or 'float16'", v["autocast"])
    return {"device": v["device"], "autocast": v["autocast"]}


def _parse_decoder_version(v: Any, source: str, name: str) -> int | str:
    """An integer >= 0 or a non-empty string: whatever decode.DECODER_VERSION is."""
    if isinstance(v, str) and v:
        return v
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise _bad(source, name, "an integer >= 0 or a non-empty string", v)
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
    source: InitVar[str] = "TeacherInfo"

    def __post_init__(self, source: str) -> None:
        _parse_str(self.name, source, "teacher.name")
        object.__setattr__(self, "config", _parse_json_object(self.config, source,
                                                              "teacher.config"))
        _parse_sha256(self.weights_sha256, source, "teacher.weights_sha256", optional=True)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config, "weights_sha256": self.weights_sha256}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "cache") -> TeacherInfo:
        p = "teacher."
        _check_keys(d, ("name", "config", "weights_sha256"), source, p)
        return cls(**{k: _get(d, k, source, p) for k in ("name", "config", "weights_sha256")},
                   source=source)


@dataclass(frozen=True)
class DatasetInfo:
    """Which videos, in which order: the index digest pins paths, labels and order."""

    kind: str
    split: int | str
    subset: str
    index_digest: str
    classes: tuple[str, ...]
    source: InitVar[str] = "DatasetInfo"

    def __post_init__(self, source: str) -> None:
        _parse_str(self.kind, source, "dataset.kind")
        _parse_split(self.split, source, "dataset.split")
        _parse_str(self.subset, source, "dataset.subset")
        _parse_sha256(self.index_digest, source, "dataset.index_digest", optional=False)
        object.__setattr__(self, "classes", _parse_classes(self.classes, source,
                                                           "dataset.classes"))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "split": self.split, "subset": self.subset,
                "index_digest": self.index_digest, "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "cache") -> DatasetInfo:
        p = "dataset."
        keys = ("kind", "split", "subset", "index_digest", "classes")
        _check_keys(d, keys, source, p)
        return cls(**{k: _get(d, k, source, p) for k in keys}, source=source)


@dataclass(frozen=True)
class SamplerInfo:
    """How views were drawn; with the seed, enough to redraw every view exactly."""

    name: str
    params: dict[str, Any]
    seed: int
    source: InitVar[str] = "SamplerInfo"

    def __post_init__(self, source: str) -> None:
        _parse_str(self.name, source, "sampler.name")
        object.__setattr__(self, "params", _parse_json_object(self.params, source,
                                                              "sampler.params"))
        _parse_int(self.seed, source, "sampler.seed")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "cache") -> SamplerInfo:
        p = "sampler."
        _check_keys(d, ("name", "params", "seed"), source, p)
        return cls(**{k: _get(d, k, source, p) for k in ("name", "params", "seed")},
                   source=source)


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
    # version 2 fields (a version-1 store reads back with these defaults)
    mix: MixConfig | None = None
    teacher_precision: dict[str, Any] | None = None
    decoder_version: int | str = UNVERSIONED_DECODER
    format_version: int = FORMAT_VERSION
    source: InitVar[str] = "CacheMeta"

    def __post_init__(self, source: str) -> None:
        src = source
        for name, typ in (("teacher", TeacherInfo), ("dataset", DatasetInfo),
                          ("sampler", SamplerInfo)):
            if not isinstance(getattr(self, name), typ):
                raise _bad(src, name, typ.__name__, getattr(self, name))
        if self.jitter_mode not in ("clip", "frame"):
            raise _bad(src, "sampler.params.jitter_mode", "'clip' or 'frame'", self.jitter_mode)
        if self.format_version not in FORMAT_VERSIONS:
            raise _bad(src, "format_version", f"one of {FORMAT_VERSIONS}", self.format_version)
        if self.mix is not None and not isinstance(self.mix, MixConfig):
            raise _bad(src, "mix", "a MixConfig or None", self.mix)
        if self.mix is not None and not self.mix.enabled:
            object.__setattr__(self, "mix", None)  # both alphas 0: a cache without mixing
        object.__setattr__(self, "teacher_precision",
                           _parse_precision(self.teacher_precision, src, "teacher_precision"))
        _parse_decoder_version(self.decoder_version, src, "decoder_version")
        if self.format_version == 1 and (self.mix is not None or self.jitter_mode != "clip"
                                         or self.teacher_precision is not None
                                         or self.decoder_version != UNVERSIONED_DECODER
                                         or self.dtype in CODED_DTYPES):
            raise _bad(src, "format_version", "2 for mixing, per-frame jitter, a teacher "
                       "precision, a decoder version or a coded dtype", 1)
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

    @property
    def jitter_mode(self) -> str:
        """"clip" or "frame": declared once, in the sampler's parameters (absent: "clip")."""
        return self.sampler.params.get("jitter_mode", "clip")

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
        per_frame = self.jitter_mode == "frame"
        if per_frame:
            for name, (dt, trail) in FRAME_JITTER_ARRAYS.items():
                out[name] = (np.dtype(dt),
                             tuple(self.num_frames if t == "T" else t for t in trail))
        if self.mix is not None:
            for name, (dt, trail) in mix_arrays_spec(self.num_frames,
                                                     per_frame=per_frame).items():
                out[name] = (np.dtype(dt), trail)
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
        d = {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
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
        if self.format_version >= 2:
            d.update(mix=None if self.mix is None else self.mix.to_dict(),
                     teacher_precision=self.teacher_precision,
                     decoder_version=self.decoder_version)
        return d

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
        _check_keys(d, _V1_KEYS if version == 1 else _V2_KEYS, source, "")
        dataset = DatasetInfo.from_dict(_get(d, "dataset", source, ""), source=source)
        num_classes = _parse_int(_get(d, "num_classes", source, ""), source, "num_classes",
                                 minimum=1)
        if num_classes != len(dataset.classes):
            raise _bad(source, "num_classes", f"{len(dataset.classes)} (the number of "
                       "dataset.classes)", num_classes)
        scalars = ("num_videos", "views_per_video", "num_frames", "dtype", "feature_dim",
                   "views_per_shard", "dvfl_version", "created")
        v2: dict[str, Any] = {}
        if version >= 2:
            v2 = {"mix": _parse_mix(_get(d, "mix", source, ""), source, "mix"),
                  "teacher_precision": _get(d, "teacher_precision", source, ""),
                  "decoder_version": _get(d, "decoder_version", source, "")}
        return cls(
            teacher=TeacherInfo.from_dict(_get(d, "teacher", source, ""), source=source),
            dataset=dataset,
            sampler=SamplerInfo.from_dict(_get(d, "sampler", source, ""), source=source),
            **{k: _get(d, k, source, "") for k in scalars}, format_version=version, **v2,
            source=source)

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
