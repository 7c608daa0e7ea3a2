"""Profiling: exact MAC counts against a closed form, the profile record, and the CLI."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dvfl_cache.models import count_gmacs, count_params, create_model
from dvfl_train.cli import main
from dvfl_train.profile import profile_model

TOY = dict(embed_dim=8, num_classes=5, num_frames=2)



def _closed_form_macs(cfg: dict, *, frames: int, size: int) -> int:
    """Multiply-accumulates of the matmuls and convolutions, written out from the spec."""
    dim, chans, patch = cfg["embed_dim"], cfg["in_chans"], cfg["patch_size"]
    side = size // patch
    macs = frames * side * side * dim * chans * patch * patch  # stem
    for i, depth in enumerate(cfg["depths"]):
        d, levels, window = dim * 2 ** i, cfg["focal_levels"][i], cfg["focal_windows"][i]
        kernels = [2 * level + window for level in range(levels)]
        tokens = frames * side * side
        per_token = (d * (2 * d + levels + 1)  # f
                     + d * sum(k * k for k in kernels)  # depthwise spatial convs
                     + d * d  # h
                     + d * (d + levels + 1)  # f_temporal
                     + d * d * sum(kernels)  # dense temporal convs
                     + d * d  # h_temporal
                     + d * d  # proj
                     + 2 * d * int(d * cfg["mlp_ratio"]))  # mlp
        macs += depth * tokens * per_token
        if i < len(cfg["depths"]) - 1:
            side //= 2
            macs += frames * side * side * (2 * d) * d * 4  # 2x2 stride-2 downsampling
    return macs + dim * 2 ** (len(cfg["depths"]) - 1) * cfg["num_classes"]  # head


@pytest.mark.parametrize("options", [{}, {"focal_levels": [1, 3, 2, 2],
                                          "focal_windows": [3, 5, 1, 3], "mlp_ratio": 2.0}])
def test_gmacs_equal_closed_form(options):
    model = create_model("vfl-nano", **TOY, **options)
    expected = _closed_form_macs(model.config, frames=2, size=64)
    assert count_gmacs(model, frames=2, size=64) * 1e9 == pytest.approx(expected, rel=1e-12)
    assert count_gmacs(model, frames=2, size=64, batch=3) == pytest.approx(
        3 * expected / 1e9, rel=1e-12)


def test_profile_model_record():
    result = profile_model("vfl-nano", frames=2, size=32, num_classes=5, warmup=1, runs=2,
                           overrides={"embed_dim": 8})
    model = create_model("vfl-nano", **TOY)
    assert result["params"] == count_params(model)
    assert result["gmacs"] == pytest.approx(count_gmacs(model, frames=2, size=32))
    assert result["latency_ms"] > 0
    assert (result["model"], result["device"], result["frames"]) == ("vfl-nano", "cpu", 2)

    given = create_model("vfl-nano", **TOY).train()
    again = profile_model(given, frames=2, size=32, batch_size=2, warmup=0, runs=1)
    assert given.training and again["params"] == result["params"]
    with pytest.raises(ValueError, match="takes 2 frames"):
        profile_model(given, frames=4, size=32)


def test_peak_memory_holds_an_activation_and_clips_per_s_is_a_measured_rate():
    """On CPU the peak is the resident high-water mark above the baseline, so it must hold at
    least the stem's output of the batch (B x T x C x H/4 x W/4 float32, which every block
    reads); and clips/s comes from a forward timed inside the call, so batch / clips_per_s is a
    time shorter than the whole call."""
    import time

    batch, frames, size, dim = 8, 2, 128, 32
    start = time.perf_counter()
    result = profile_model("vfl-nano", frames=frames, size=size, num_classes=5,
                           batch_size=batch, warmup=1, runs=1,
                           overrides={"embed_dim": dim, "depths": [1, 1, 1, 1]})
    wall = time.perf_counter() - start
    stem_mib = batch * frames * dim * (size // 4) ** 2 * 4 / 2**20  # 2 MiB
    if result["peak_mem_kind"].startswith("rss peak above baseline"):
        assert result["peak_mem_mib"] >= stem_mib, result
    assert 0 < batch / result["clips_per_s"] < wall


def test_profile_command_table_and_json():
    runner = CliRunner()
    args = ["profile", "--model", "vfl-nano", "--size", "32", "--frames", "2", "--num-classes",
            "5", "--model-opt", "embed_dim=8", "--model-opt", "depths=1,1,1,1", "--warmup", "0",
            "--runs", "1"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["model", "params", "(M)"]
    params = count_params(create_model("vfl-nano", **TOY, depths=[1, 1, 1, 1]))
    assert lines[2].split()[:2] == ["vfl-nano", f"{params / 1e6:.2f}"]

    result = runner.invoke(main, ["profile", "--model", "all", "--size", "32", "--frames", "2",
                                  "--model-opt", "embed_dim=4", "--warmup", "0", "--runs", "1",
                                  "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["model"] for r in rows] == ["vfl-nano", "vfn-tiny", "vfn-small", "vfn-base"]
    # each variant keeps its own depths: the rows are the four networks, not one shape four times
    for r in rows:
        assert r["params"] == count_params(create_model(r["model"], embed_dim=4, num_classes=101,
                                                        num_frames=2))
    assert rows[0]["params"] < rows[1]["params"] < rows[2]["params"]
    assert all(r["latency_ms"] > 0 for r in rows)


@pytest.mark.parametrize("bad,message", [("embed_dim", "expected KEY=VALUE"),
                                         ("embed_dims=8", "unknown option"),
                                         ("depths={", "not a JSON value")])
def test_profile_command_rejects_bad_options(bad, message):
    result = CliRunner().invoke(main, ["profile", "--model", "vfl-nano", "--model-opt", bad])
    assert result.exit_code == 2 and message in result.output


@pytest.mark.parametrize("device, message", [("tpu9", "use auto, cpu, cuda, cuda:N or mps"),
                                             ("cuda", "CUDA is not available")])
def test_profile_command_refuses_a_missing_device_in_one_line(device, message):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = CliRunner().invoke(main, ["profile", "--model", "vfl-nano", "--device", device])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert f"--device {device}: " in result.output and message in result.output
