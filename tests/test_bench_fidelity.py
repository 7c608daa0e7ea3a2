"""tools/bench_fidelity.py (a draft): its statistics, and that --quick runs with a fair baseline."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

TOOL = Path(__file__).resolve().parent.parent / "tools" / "bench_fidelity.py"


def _load():
    spec = importlib.util.spec_from_file_location("dvfl_bench_fidelity", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["dvfl_bench_fidelity"] = module
    spec.loader.exec_module(module)
    return module


bench = _load()


def test_paired_interval_closed_form():
    # differences 1, 2, 3: mean 2, sample std 1, t(0.975, 2) = 4.303
    mean, lo, hi = bench.paired_interval([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    half = 4.303 / math.sqrt(3)
    assert (mean, lo, hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    one = bench.paired_interval([1.0], [0.5])
    assert one[0] == 0.5 and math.isnan(one[1]) and math.isnan(one[2])
    with pytest.raises(ValueError):
        bench.paired_interval([1.0, 2.0], [1.0])


def test_mix_adds_every_arm_mixed_alike_and_each_arm_is_a_valid_config():
    from dvfl_train.config import FitConfig

    caches = {"1": "c1.zarr", "4": "c4.zarr", "mix-1": "m1.zarr", "mix-4": "m4.zarr"}
    plain = bench.arm_settings({"": {}}, [1, 4], alpha=0.9, teacher="t.pt", caches=caches)
    assert list(plain) == ["ce", "online", "cached-1", "cached-4"]
    both = bench.arm_settings({"": {}, "mix-": bench.MIXING}, [1, 4], alpha=0.9,
                              teacher="t.pt", caches=caches)
    assert list(both) == [*plain, "ce-mix", "online-mix", "cached-mix-1", "cached-mix-4"]
    assert both["online-mix"] == {"alpha": 0.9, "teacher_weights": "t.pt", "mixup": 0.8,
                                  "cutmix": 1.0}
    assert both["cached-mix-4"] == {"alpha": 0.9, "cache": "m4.zarr"}  # mixing from the cache
    for arm in both.values():
        FitConfig(dataset="ucf101", data_root="d", out_dir="o", **arm).validate()


@pytest.mark.slow
def test_quick_runs_and_cached_every_epoch_equals_online(tmp_path, capsys):
    result = bench.main(["--quick", "--work", str(tmp_path), "--keep"])
    assert [r["arm"] for r in result["rows"]] == ["ce", "online", "cached-1", "cached-4"]
    assert "QUICK CHECK" in capsys.readouterr().out

    def weights(arm):
        return torch.load(tmp_path / arm / "seed0" / "last.pt", weights_only=True)["model"]

    def gap(a, b):
        return max((a[k].float() - b[k].float()).abs().max().item() for k in a)

    online = weights("online")
    # a cache of one view per epoch replays exactly the online arm's views: same student
    assert gap(online, weights("cached-4")) < 1e-5
    assert gap(online, weights("cached-1")) > 1e-4  # fewer views do change the student
    assert gap(online, weights("ce")) > 1e-4
