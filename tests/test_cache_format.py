"""CacheMeta schema: round trips, a table of bad values, and the float16 rounding error."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from dvfl_cache.cache.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    CacheMeta,
    DatasetInfo,
    SamplerInfo,
    TeacherInfo,
    fp16_kl_error,
)
from dvfl_cache.data.mix import MixConfig
from dvfl_cache.errors import CacheError


def meta(**changes) -> CacheMeta:
    base = CacheMeta(
        teacher=TeacherInfo(name="vfn-tiny", config={"depths": (2, 2, 6, 2), "num_classes": 3},
                            weights_sha256="ab" * 32),
        dataset=DatasetInfo(kind="ucf101", split=1, subset="train",
                            index_digest="sha256:" + "0f" * 32, classes=("run", "jump", "swim")),
        sampler=SamplerInfo(name="segment", params={"num_frames": 4, "mode": "train"}, seed=7),
        num_videos=10, views_per_video=3, num_frames=4, feature_dim=16, views_per_shard=8,
        created="2026-01-02T03:04:05+00:00")
    return base.replace(**changes)


@pytest.mark.parametrize("m", [
    meta(),
    meta(feature_dim=None, dtype="float32"),
    meta(dataset=DatasetInfo(kind="hmdb51", split="official", subset="test",
                             index_digest="1" * 64, classes=("a", "b"))),
    meta(teacher=TeacherInfo(name="random", config={}, weights_sha256=None)),
    meta(mix=MixConfig(mixup=0.8, cutmix=1.0, prob=0.5, seed=2),
         teacher_precision={"device": "cuda", "autocast": "bfloat16"}, decoder_version="pyav-3",
         sampler=SamplerInfo(name="segment", params={"jitter_mode": "frame"}, seed=7)),
    meta(format_version=1),
])
def test_round_trip_through_json(m):
    d = json.loads(json.dumps(m.to_dict()))
    assert CacheMeta.from_dict(d) == m
    assert CacheMeta.from_dict(m.to_dict()) == m
    assert d["format"] == FORMAT_NAME and d["format_version"] == m.format_version
    if m.format_version == 1:  # a version-1 store keeps exactly its version-1 attributes
        assert "mix" not in d and "teacher_precision" not in d and "decoder_version" not in d


def test_version_2_columns_exist_only_when_used():
    base = set(meta().row_arrays())
    frame = meta(sampler=SamplerInfo(name="segment", params={"jitter_mode": "frame"}, seed=7))
    assert set(frame.row_arrays()) - base == {"frame_jitter", "jitter_order"}
    assert frame.row_arrays()["frame_jitter"] == (np.dtype("float32"), (4, 4))
    mixed = meta(mix=MixConfig(cutmix=1.0))
    extra = set(mixed.row_arrays()) - base
    assert extra == {"mix_op", "mix_lambda", "mix_box", "partner_video", "partner_frames",
                     "partner_crop", "partner_flip", "partner_jitter", "partner_gray"}
    assert meta(mix=MixConfig()).mix is None  # both alphas 0: no mixing
    assert meta().format_version == FORMAT_VERSION == 2
    with pytest.raises(CacheError, match="format_version"):
        meta(format_version=1, mix=MixConfig(mixup=1.0))


def test_config_tuples_are_normalised_so_round_trip_is_exact():
    m = meta()
    assert m.teacher.config["depths"] == [2, 2, 6, 2]
    assert CacheMeta.from_dict(json.loads(json.dumps(m.to_dict()))).teacher == m.teacher


def test_derived_layout():
    m = meta()
    assert (m.num_classes, m.num_rows, m.num_shards) == (3, 30, 4)
    arrays = m.row_arrays()
    assert list(arrays)[:4] == ["logits", "features", "label", "valid"]
    assert arrays["logits"] == (np.dtype("float16"), (3,))
    assert arrays["features"] == (np.dtype("float16"), (16,))
    assert arrays["frames"] == (np.dtype("int32"), (4,))
    assert arrays["crop"] == (np.dtype("float32"), (4,))
    assert arrays["flip"] == (np.dtype("uint8"), ())
    assert "features" not in meta(feature_dim=None).row_arrays()


def _set(d: dict, path: str, value) -> dict:
    d = copy.deepcopy(d)
    *parents, last = path.split(".")
    node = d
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return d


_DELETE = object()

BAD = [
    ("format", "zarr-thing", "not a dvfl teacher cache"),
    ("format_version", FORMAT_VERSION + 1, "written by a newer dvfl"),
    ("format_version", "1", "field 'format_version': expected an integer, found '1'"),
    ("format_version", 0, "field 'format_version': expected an integer >= 1, found 0"),
    ("teacher", _DELETE, "field 'teacher' is missing"),
    ("teacher.name", "", "field 'teacher.name': expected a non-empty string"),
    ("teacher.config", [1, 2], "field 'teacher.config': expected a JSON object, found [1, 2]"),
    ("teacher.weights_sha256", "abc", "field 'teacher.weights_sha256': expected a sha256 digest"),
    ("teacher.weights_sha256", "AB" * 32, "field 'teacher.weights_sha256'"),
    ("dataset.kind", 3, "field 'dataset.kind': expected a non-empty string, found 3"),
    ("dataset.split", True, "field 'dataset.split': expected an integer or a non-empty string"),
    ("dataset.classes", [], "field 'dataset.classes': expected a non-empty list"),
    ("dataset.classes", ["a", "a", "b"], "expected distinct class names"),
    ("dataset.index_digest", "sha256:xyz", "field 'dataset.index_digest'"),
    ("dataset.extra", 1, "unexpected field(s) dataset.extra"),
    ("sampler.seed", 1.5, "field 'sampler.seed': expected an integer, found 1.5"),
    ("sampler.params", "fast", "field 'sampler.params': expected a JSON object"),
    ("num_videos", 0, "field 'num_videos': expected an integer >= 1, found 0"),
    ("views_per_video", True, "field 'views_per_video': expected an integer, found True"),
    ("num_frames", None, "field 'num_frames': expected an integer, found None"),
    ("num_classes", 4, "field 'num_classes': expected 3 (the number of dataset.classes), found 4"),
    ("dtype", "int8", "field 'dtype': expected one of 'float16', 'float32', 'q8', found 'int8'"),
    ("feature_dim", -1, "field 'feature_dim': expected an integer >= 1, found -1"),
    ("views_per_shard", "4096", "field 'views_per_shard': expected an integer, found '4096'"),
    ("created", "yesterday", "field 'created': expected an ISO 8601 time string"),
    ("dvfl_version", _DELETE, "field 'dvfl_version' is missing"),
    ("surprise", 1, "unexpected field(s) surprise"),
    ("mix", {"mixup": 0.8}, "field 'mix': expected null or an object with mixup, cutmix"),
    ("mix", {"mixup": 0.8, "cutmix": 0, "prob": 2.0, "seed": 0}, "probability must be in"),
    ("mix", {"mixup": "a", "cutmix": 0, "prob": 1.0, "seed": 0}, "field 'mix.mixup'"),
    ("mix", {"mixup": 0, "cutmix": 0, "prob": 1.0, "seed": 0}, "null for a cache without"),
    ("teacher_precision", {"device": "cpu"}, "field 'teacher_precision'"),
    ("teacher_precision", {"device": "cuda", "autocast": "int8"},
     "field 'teacher_precision.autocast'"),
    ("decoder_version", -1, "field 'decoder_version': expected an integer >= 0 or a non-empty"),
    ("decoder_version", "", "field 'decoder_version'"),
    ("decoder_version", _DELETE, "field 'decoder_version' is missing"),
    ("sampler.params", {"jitter_mode": "pixel"}, "sampler.params.jitter_mode"),
]


@pytest.mark.parametrize("path,value,message", BAD, ids=[f"{p}={v!r}" for p, v, _ in BAD])
def test_bad_values_name_the_field(path, value, message):
    d = _set(meta().to_dict(), path, value)
    with pytest.raises(CacheError) as e:
        CacheMeta.from_dict(d, source="store.zarr")
    assert message in str(e.value)
    assert str(e.value).startswith("store.zarr: ")


def test_a_version_1_document_with_version_2_fields_is_refused():
    d = {**meta(format_version=1).to_dict(), "decoder_version": 0}
    with pytest.raises(CacheError, match="unexpected field"):
        CacheMeta.from_dict(d)


def test_newer_version_advises_upgrade():
    d = _set(meta().to_dict(), "format_version", FORMAT_VERSION + 1)
    with pytest.raises(CacheError, match="upgrade dvfl"):
        CacheMeta.from_dict(d)


@pytest.mark.parametrize("changes,field", [
    ({"dtype": "float64"}, "dtype"),
    ({"num_videos": 0}, "num_videos"),
    ({"created": "soon"}, "created"),
])
def test_constructor_validates(changes, field):
    with pytest.raises(CacheError, match=f"field '{field}'"):
        meta(**changes)


def test_differences_name_fields_and_ignore_provenance():
    a = meta()
    b = meta(created="2027-01-01T00:00:00+00:00", dvfl_version="9.9",
             sampler=SamplerInfo(name="segment", params={"num_frames": 4, "mode": "train"},
                                 seed=8))
    assert a.differences(b) == [("sampler.seed", 7, 8)]
    assert a.differences(a.replace(created="2020-01-01T00:00:00")) == []
    c = meta(teacher=TeacherInfo(name="vfn-tiny", config={"depths": [2, 2, 2, 2]},
                                 weights_sha256="ab" * 32))
    assert [f for f, _, _ in a.differences(c)] == ["teacher.config"]


# --- float16 rounding error ------------------------------------------------------------------

def _kl_two_class(a: float, b: float, tau: float) -> float:
    """KL between two-class softmaxes of logits (a, 0) and (b, 0), written out by hand."""
    p = 1 / (1 + math.exp(-a / tau))
    q = 1 / (1 + math.exp(-b / tau))
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def test_fp16_kl_matches_closed_form():
    a = 1 / 3 + 7.0   # not representable in float16: rounding error 2^-9 scale
    a16 = float(np.float16(np.float32(a)))
    assert a16 != float(np.float32(a))
    logits = np.array([[a, 0.0], [0.5, 0.0]], dtype=np.float32)  # row 2 is exact in fp16
    out = fp16_kl_error(logits, taus=(1, 5))
    assert set(out) == {1, 5}
    for tau in (1, 5):
        expected = _kl_two_class(float(np.float32(a)), a16, tau)
        assert expected > 0
        assert out[tau] == pytest.approx(expected, rel=1e-6)


def test_fp16_kl_is_zero_for_representable_logits_and_takes_the_worst_row():
    exact = np.array([[1.0, -2.5, 0.25, 8.0]] * 3, dtype=np.float32)
    assert fp16_kl_error(exact) == {1: 0.0, 5: 0.0, 10: 0.0, 20: 0.0}
    rng = np.random.default_rng(0)
    noisy = rng.normal(0, 5, (4, 4)).astype(np.float32)
    both = np.concatenate([exact, noisy])
    worst_rows = max(fp16_kl_error(noisy[i:i + 1], taus=(1,))[1] for i in range(4))
    assert fp16_kl_error(both, taus=(1,))[1] == pytest.approx(worst_rows, rel=1e-12)
    assert 0 < worst_rows < 1e-4


def test_fp16_kl_overflow_is_infinite_and_bad_input_is_refused():
    assert fp16_kl_error(np.array([[70000.0, 0.0]], dtype=np.float32), taus=(1,)) == \
        {1: math.inf}
    with pytest.raises(ValueError, match="shape"):
        fp16_kl_error(np.zeros(5, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN or inf"):
        fp16_kl_error(np.array([[np.nan, 0.0]], dtype=np.float32))
    with pytest.raises(ValueError, match="> 0"):
        fp16_kl_error(np.zeros((1, 2), dtype=np.float32), taus=(0,))
