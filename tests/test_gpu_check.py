"""tools/gpu_check.py: the pure parts exactly, a real section end to end on the CPU, and (slow)
the whole rehearsal that the GPU run repeats at full size."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import load_tool

gpu_check = load_tool("gpu_check")


def _parity_or_skip() -> Path:
    try:
        return gpu_check.find_parity()
    except SystemExit:
        pytest.skip("the shared parity file is absent")


def test_predicted_sweep_closed_form():
    # Device-bound: online 9 * 2 * (T + S); cached 2 T + 2 * 9 S.
    p = gpu_check.predicted_sweep(decode_s=0.1, workers=10, teacher_s=0.02, step_s=0.002,
                                  runs=9, views=2, epochs=2)
    assert p["online_s_per_clip"] == pytest.approx(9 * 2 * 0.022)
    assert p["cached_s_per_clip"] == pytest.approx(2 * 0.02 + 2 * 0.018)
    assert p["speedup"] == pytest.approx(0.396 / 0.076)
    # Decode-bound (one worker at 0.1 s per clip): every stage costs the decode.
    slow = gpu_check.predicted_sweep(decode_s=0.1, workers=1, teacher_s=0.02, step_s=0.001,
                                     runs=9, views=2, epochs=2)
    assert slow["speedup"] == pytest.approx(9 * 2 * 0.1 / (2 * 0.1 + 2 * 0.1))
    # A measured side-by-side group step replaces N S.
    grouped = gpu_check.predicted_sweep(decode_s=0.1, workers=10, teacher_s=0.02, step_s=0.002,
                                        runs=9, views=2, epochs=2, group_step_s=0.015)
    assert grouped["cached_s_per_clip"] == pytest.approx(2 * 0.02 + 2 * 0.015)
    # ... but never below what the decoders can feed (w = 10: 0.01 s per clip).
    fed = gpu_check.predicted_sweep(decode_s=0.1, workers=10, teacher_s=0.02, step_s=0.002,
                                    runs=9, views=2, epochs=2, group_step_s=0.005)
    assert fed["cached_s_per_clip"] == pytest.approx(2 * 0.02 + 2 * 0.01)


def test_kl_tau_closed_form():
    a = torch.tensor([[0.0, math.log(3.0)]])   # p = (1/4, 3/4)
    b = torch.zeros(1, 2)                      # q = (1/2, 1/2)
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert gpu_check.kl_tau(a, b, 1.0) == pytest.approx(expected)
    assert gpu_check.kl_tau(a, a, 10.0) == 0.0
    # tau 2: p = softmax((0, ln 3)/2) = (1, sqrt 3)/(1 + sqrt 3), scaled by tau^2 = 4.
    p = torch.tensor([1.0, 3 ** 0.5], dtype=torch.float64) / (1 + 3 ** 0.5)
    assert gpu_check.kl_tau(a, b, 2.0) == pytest.approx(4 * float((p * (p / 0.5).log()).sum()))


def test_sections_and_their_needs():
    assert gpu_check.resolve_sections(None) == gpu_check.SECTIONS
    assert gpu_check.resolve_sections("build,parity") == ("parity", "teacher_forward", "decode",
                                                           "build")
    with pytest.raises(SystemExit, match="unknown section.*bogus"):
        gpu_check.resolve_sections("parity,bogus")


def test_wheels_and_parity_lookup(tmp_path):
    with pytest.raises(SystemExit, match="no wheels"):
        gpu_check.wheel_install_command(tmp_path, tmp_path / "site")
    (tmp_path / "zarr-3.1.6-py3-none-any.whl").write_bytes(b"")
    cmd = gpu_check.wheel_install_command(tmp_path, tmp_path / "site")
    assert cmd[1:4] == ["-m", "pip", "install"] and "--no-index" in cmd and "--no-deps" in cmd
    assert cmd[cmd.index("--target") + 1] == str(tmp_path / "site")
    assert cmd[-1].endswith("zarr-3.1.6-py3-none-any.whl")
    with pytest.raises(SystemExit, match="parity file not found"):
        gpu_check.find_parity(str(tmp_path / "missing.pt"))


def test_parity_section_end_to_end(tmp_path):
    """The CLI with one section: the files are written, the figure is real, nothing else ran."""
    _parity_or_skip()
    assert gpu_check.main(["--dry-run", "--sections", "parity", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["errors"] == {} and result["dry_run"] and not result["cuda"]
    assert result["parity"]["device_vs_cpu_max_abs"] == 0.0  # the same CPU computed both
    assert result["parity"]["cpu_vs_reference_max_abs"] < 1e-4
    assert "bf16" not in result and "build" not in result
    table = (tmp_path / "gpu_check.md").read_text()
    assert "parity: float32 device vs CPU" in table and "NCCL | not measured: 0 GPU(s)" in table


def test_failed_section_is_reported_and_fails_the_run(tmp_path, monkeypatch):
    _parity_or_skip()

    def broken(*args, **kwargs):
        raise RuntimeError("no device memory")

    monkeypatch.setattr(gpu_check, "check_parity", broken)
    assert gpu_check.main(["--dry-run", "--sections", "parity", "--out", str(tmp_path)]) == 1
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["errors"] == {"parity": "RuntimeError: no device memory"}
    assert "**parity FAILED** | RuntimeError: no device memory" in \
        (tmp_path / "gpu_check.md").read_text()


@pytest.mark.slow
def test_full_dry_run(tmp_path):
    """The whole script on the CPU at toy sizes: every section, every figure, no error."""
    _parity_or_skip()
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "gpu_check.json").read_text())
    assert r["errors"] == {}
    sizes = gpu_check.DRY
    assert set(r["bf16"]) == {"teacher", "student"}
    assert all(0 <= kl[k] < 1e-2 for kl in r["bf16"].values() for k in ("kl_tau1", "kl_tau10"))
    assert set(r["teacher_forward"]) == {str(b) for b in sizes.forward_batches}
    assert set(r["build"]) == {str(w) for w in sizes.workers}
    for row in r["build"].values():
        assert row["views"] == r["videos"]["train"] * sizes.build_views
        assert row["steady_views_s"] > 0 and row["bound_views_s"] > 0
    assert set(r["student_step"]) == {"1", str(sizes.students)}
    assert r["feeding"]["workers_needed"] >= 1
    assert r["sweep_predicted"]["speedup"] > 1
    assert r["sweep_measured"]["runs"] == sizes.students and r["sweep_measured"]["speedup"] > 0
    table = (tmp_path / "gpu_check.md").read_text()
    for text in ("teacher forward clips/s", "cache build views/s", "decode clips/s per CPU",
                 "sweep speed-up, predicted", "sweep speed-up, measured", "9 side by side"):
        assert text in table
