"""Compact storage for teacher logits and features: pure numpy codecs and the error they cost.

A codec turns float32 rows (N, W) into a few fixed-width arrays ("parts": 8-bit codes plus
per-row float32 parameters) and back. Encoding and decoding use only IEEE-754 basic
operations (subtract, multiply, divide, compare) on a fixed integer table, never exp/log, so
the codes are bit-identical on every machine and a resumed build rewrites a shard exactly.

**q8-logit** (logits; W + 8 bytes a row, 109 bytes at 101 classes). What a KD target sees is
softmax(l / tau) for tau in 1..20, which depends only on l - max(l). Write z = max(l) - l >= 0.
A rounding error d_i on class i costs at most KL <= sum_i p_i (e^(d_i/tau) - 1 - d_i/tau)
(from log y <= y - 1), i.e. about p_i d_i^2 / (2 tau^2) per class, and p_i <= e^(-z_i/tau).
Over tau >= 1 the weight e^(-z/tau) / tau^2 peaks at e^-z for z <= 2 and at 4 e^-2 / z^2 (at
tau = z/2) beyond: the error a class may carry grows like its distance z from the top. So z is
quantised with steps proportional to z, like G.711 mu-law: 8 segments of 32 levels, the step
doubling from one segment to the next. Level k = 32 j + m (j = 0..7, m = 0..31) is

    z_k = S * T_k,  T_k = 2^j (m + 32) - 32      (integers 0, 1, ..., 31, 32, 34, ..., 8032)

with the per-row scale S = min(max(z), 400) / 8032, so the row's range fits and the top class
is exact (T_0 = 0). Steps run from S near the top to 128 S at the bottom. A class more than
400 below the top decodes to the last level (about top - 400): at tau <= 20 its probability is
below e^-20 of the top's either way, and without the cap one far outlier (a logit 1000 below
the rest) would coarsen the whole row (measured worst KL at tau 1: 1.2e-3 without the cap).
Stored parts: `codes` uint8 (N, W) = the level nearest to z / S (ties to the lower level; 255
beyond the last), `params` float32 (N, 2) = (max(l), S). Decoding: l = max - S * T[code].
Measured (tools/bench_codecs.py): worst KL <= 2.8e-4 at every tau in {1, 5, 10, 20} for std 3,
10, 30 and 100 Gaussian logits and for a trained softmax classifier's logits (4.4e-4 with one
class 1000 below the rest), where per-row 8-bit affine gives 3.1e-3 at std 10 and 1.9e-2 at
std 30 (tau 1). Fewer segments (4 x 64) reach 9e-4 at std 30; more (16 x 16) lose
precision near the top (7e-4 on trained logits).

**q8-affine** (features; W + 8 bytes a row, 1032 at 1024-d, ~half of float16). Features feed
an MSE/cosine loss where every coordinate counts alike: per-row affine 8-bit, code =
round((x - min) / S) with S = (max - min) / 255 (round half to even), parts `codes` uint8
(N, W) and `params` float32 (N, 2) = (min, S); decoding x = min + S * code.

**float16**, **float32**: a plain cast (part `values`), here so the same error report covers
the raw storage types.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Callable

import numpy as np

TAUS = (1, 5, 10, 20)

# Rows per block inside encode/decode: bounds the float64 temporaries at millions of rows.
_BLOCK_ROWS = 1 << 15

_SEGMENTS, _LEVELS = 8, 32
# Logits further than this below their row's top share the last level (see the docstring).
LOGIT_RANGE_CAP = 400.0
_k = np.arange(_SEGMENTS * _LEVELS)
# T_k = 2^j (m + 32) - 32: exact integers in float64 (the largest is 8032).
LOGIT_TABLE = (np.ldexp(1.0, _k // _LEVELS) * (_k % _LEVELS + _LEVELS) - _LEVELS)
# Decision thresholds between neighbouring levels: exact half-integers.
_LOGIT_MIDS = (LOGIT_TABLE[1:] + LOGIT_TABLE[:-1]) / 2
del _k
# The thresholds are half-integers, so h = floor(2u) (exact) fixes the code of every u in
# (h/2, (h+1)/2): a lookup instead of a binary search (3-4x faster). At u == h/2 exactly, a
# threshold there gives the lower level (ties to the lower level, as searchsorted "left").
_HALVES = np.arange(2 * int(LOGIT_TABLE[-1]) + 2) / 2
_CODE_ABOVE = np.searchsorted(_LOGIT_MIDS, _HALVES, side="right").astype(np.uint8)
_IS_MID = np.isin(_HALVES, _LOGIT_MIDS)


class CodecError(ValueError):
    """Bad input to a codec (unknown name, wrong shape, non-finite values)."""


@dataclass(frozen=True)
class Codec:
    """One storage form: its stored parts as name -> (dtype, columns given the row width)."""

    name: str
    parts: Mapping[str, tuple[str, Callable[[int], int]]]
    _encode: Callable[[np.ndarray], dict[str, np.ndarray]]
    _decode: Callable[[Mapping[str, np.ndarray]], np.ndarray]
    doc: str

    def part_specs(self, width: int) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """Each stored part's dtype and trailing shape for rows of `width` values."""
        return {p: (np.dtype(dt), (cols(width),)) for p, (dt, cols) in self.parts.items()}

    def bytes_per_row(self, width: int) -> int:
        return sum(dt.itemsize * shape[0] for dt, shape in self.part_specs(width).values())


def _check_rows(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] < 1:
        raise CodecError(f"codec {name}: expected rows of shape (N, W >= 1), got {x.shape}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise CodecError(f"codec {name}: values contain NaN or inf")
    return x


def _blocks(n: int) -> Iterable[slice]:
    for start in range(0, n, _BLOCK_ROWS):
        yield slice(start, min(start + _BLOCK_ROWS, n))


# --- q8-logit ----------------------------------------------------------------------------------

def _logit_encode(x: np.ndarray) -> dict[str, np.ndarray]:
    n, w = x.shape
    codes = np.empty((n, w), np.uint8)
    params = np.empty((n, 2), np.float32)
    for b in _blocks(n):
        xb = x[b].astype(np.float64)
        top = xb.max(axis=1, keepdims=True)
        z = top - xb  # exact: a difference of two float32 values fits a float64
        span = np.minimum(z.max(axis=1, keepdims=True), LOGIT_RANGE_CAP)
        scale = (span / LOGIT_TABLE[-1]).astype(np.float32).astype(np.float64)
        # Decoding uses the stored (float32) scale, so encoding divides by the same number.
        u = np.divide(z, scale, out=np.zeros_like(z), where=scale > 0)
        codes[b] = _nearest_level(u)
        params[b, 0] = top[:, 0]
        params[b, 1] = scale[:, 0]
    return {"codes": codes, "params": params}


def _nearest_level(u: np.ndarray) -> np.ndarray:
    """Code of the level nearest to u >= 0 (ties to the lower): searchsorted(mids, u, "left")."""
    v = np.minimum(u * 2, len(_HALVES) - 1)  # beyond the top level (S rounded down): 255
    h = v.astype(np.int64)  # floor, as v >= 0
    codes = _CODE_ABOVE[h]
    codes[_IS_MID[h] & (v == h)] -= 1
    return codes


def _logit_decode(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    codes, params = np.asarray(arrays["codes"]), np.asarray(arrays["params"])
    out = np.empty(codes.shape, np.float32)
    for b in _blocks(len(codes)):
        p = params[b].astype(np.float64)
        out[b] = p[:, :1] - p[:, 1:2] * LOGIT_TABLE[codes[b]]
    return out


# --- q8-affine ---------------------------------------------------------------------------------

def _affine_encode(x: np.ndarray) -> dict[str, np.ndarray]:
    n, w = x.shape
    codes = np.empty((n, w), np.uint8)
    params = np.empty((n, 2), np.float32)
    for b in _blocks(n):
        xb = x[b].astype(np.float64)
        lo, hi = xb.min(axis=1, keepdims=True), xb.max(axis=1, keepdims=True)
        scale = ((hi - lo) / 255).astype(np.float32).astype(np.float64)
        u = np.divide(xb - lo, scale, out=np.zeros_like(xb), where=scale > 0)
        codes[b] = np.clip(np.rint(u), 0, 255)
        params[b, 0] = lo[:, 0]
        params[b, 1] = scale[:, 0]
    return {"codes": codes, "params": params}


def _affine_decode(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    codes, params = np.asarray(arrays["codes"]), np.asarray(arrays["params"])
    out = np.empty(codes.shape, np.float32)
    for b in _blocks(len(codes)):
        p = params[b].astype(np.float64)
        out[b] = p[:, :1] + p[:, 1:2] * codes[b]
    return out


# --- raw casts ---------------------------------------------------------------------------------

def _cast(dtype: str) -> tuple[Callable, Callable]:
    def enc(x: np.ndarray) -> dict[str, np.ndarray]:
        with np.errstate(over="ignore"):
            v = x.astype(dtype)
        if not np.isfinite(v).all():
            raise CodecError(f"codec {dtype}: values beyond the {dtype} range")
        return {"values": v}

    def dec(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(arrays["values"]).astype(np.float32)
    return enc, dec


def _same(w: int) -> int:
    return w


def _plus_two(w: int) -> int:
    return 2


CODECS: dict[str, Codec] = {
    "q8-logit": Codec("q8-logit", {"codes": ("uint8", _same), "params": ("float32", _plus_two)},
                      _logit_encode, _logit_decode,
                      "8-bit log-step levels below the row max (for logits)"),
    "q8-affine": Codec("q8-affine", {"codes": ("uint8", _same),
                                     "params": ("float32", _plus_two)},
                       _affine_encode, _affine_decode, "per-row affine 8-bit (for features)"),
    "float16": Codec("float16", {"values": ("float16", _same)}, *_cast("float16"), "cast"),
    "float32": Codec("float32", {"values": ("float32", _same)}, *_cast("float32"), "cast"),
}
CODEC_NAMES = tuple(CODECS)


def get_codec(name: str) -> Codec:
    try:
        return CODECS[name]
    except (KeyError, TypeError):
        raise CodecError(f"unknown codec {name!r}; known: {', '.join(CODEC_NAMES)}") from None


def encode(name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """The stored parts of float32 rows `x` (N, W) under codec `name`."""
    codec = get_codec(name)
    return codec._encode(_check_rows(name, x))


def decode(name: str, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """float32 rows (N, W) from the parts `encode` returned (or read back from a store)."""
    codec = get_codec(name)
    missing = sorted(set(codec.parts) - set(arrays))
    if missing:
        raise CodecError(f"codec {name}: missing part(s) {missing}")
    return codec._decode(arrays)


def bytes_per_row(name: str, width: int) -> int:
    return get_codec(name).bytes_per_row(width)


# --- the error a codec costs -------------------------------------------------------------------

def _log_softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def kl_error(reference: np.ndarray, decoded: np.ndarray, taus: Iterable[float] = TAUS
             ) -> dict[str, dict[str, float]]:
    """Worst and mean over rows of KL(softmax(ref/tau) || softmax(decoded/tau)), per tau.

    Why KL at these temperatures: it is exactly what a KD target loses to storage. Computed in
    float64 so the number is the codec's, not ours. Keys are the temperatures as "%g" strings
    (JSON object keys, equal across shards).
    """
    ref = np.asarray(reference, np.float64)
    dec = np.asarray(decoded, np.float64)
    if ref.shape != dec.shape or ref.ndim != 2 or ref.shape[0] == 0:
        raise CodecError(f"kl_error needs two equal (rows >= 1, classes) arrays, got "
                         f"{ref.shape} and {dec.shape}")
    worst: dict[str, float] = {}
    mean: dict[str, float] = {}
    for tau in taus:
        if not tau > 0:
            raise CodecError(f"kl_error: temperatures must be > 0, got {tau}")
        lp, lq = _log_softmax(ref / tau), _log_softmax(dec / tau)
        # KL >= 0; a -1e-18 is float64 noise, not information.
        kl = np.maximum((np.exp(lp) * (lp - lq)).sum(axis=1), 0.0)
        worst[f"{float(tau):g}"] = float(kl.max())
        mean[f"{float(tau):g}"] = float(kl.mean())
    return {"kl_worst": worst, "kl_mean": mean}


def cosine_error(reference: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
    """Worst and mean over rows of 1 - cos(ref, decoded); a zero row decoded as zero costs 0."""
    ref = np.asarray(reference, np.float64)
    dec = np.asarray(decoded, np.float64)
    if ref.shape != dec.shape or ref.ndim != 2 or ref.shape[0] == 0:
        raise CodecError(f"cosine_error needs two equal (rows >= 1, W) arrays, got "
                         f"{ref.shape} and {dec.shape}")
    na, nb = np.linalg.norm(ref, axis=1), np.linalg.norm(dec, axis=1)
    dot = (ref * dec).sum(axis=1)
    both_zero = (na == 0) & (nb == 0)
    cos = np.where(both_zero, 1.0, dot / np.where(na * nb > 0, na * nb, 1.0))
    cos = np.where(~both_zero & (na * nb == 0), 0.0, cos)
    err = np.clip(1.0 - cos, 0.0, 2.0)
    return {"cos_worst": float(err.max()), "cos_mean": float(err.mean())}


def logit_error(name: str, logits: np.ndarray, taus: Iterable[float] = TAUS
                ) -> dict[str, dict[str, float]]:
    """kl_error of storing float32 `logits` with codec `name` (encode, decode, compare)."""
    x = _check_rows(name, logits)
    return kl_error(x, decode(name, encode(name, x)), taus)


def feature_error(name: str, features: np.ndarray) -> dict[str, float]:
    """cosine_error of storing float32 `features` with codec `name`."""
    x = _check_rows(name, features)
    return cosine_error(x, decode(name, encode(name, x)))
