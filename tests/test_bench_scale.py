"""tools/bench_scale.py --quick: the scale benchmark's phases run end to end on a tiny index."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "bench_scale.py"


def test_quick_runs_every_phase(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("dvfl_bench_scale", TOOL)
    bench = importlib.util.module_from_spec(spec)
    sys.modules["dvfl_bench_scale"] = bench
    spec.loader.exec_module(bench)
    out = tmp_path / "r.json"
    assert bench.main(["--quick", "--videos", "60", "--out", str(tmp_path / "s"),
                       "--json", str(out)]) == 0
    import json

    (r,) = json.loads(out.read_text())
    assert r["rows"] == 180
    assert {"index+plan", "write", "read epoch block", "verify", "extend +2"} <= set(r)
    assert "| 60 | 180 |" in capsys.readouterr().out
