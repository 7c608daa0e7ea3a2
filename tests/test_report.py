"""docs/benchmarks.md's tables are generated from benchmarks/results/*.json (tools/report.py):
a committed table that differs from its JSON fails here."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import load_tool

report = load_tool("report")


def test_committed_tables_match_their_json():
    doc = report.DOC.read_text()
    results = report.load_results()
    assert report.MARK.search(doc), "docs/benchmarks.md has no generated tables"
    bad = report.differences(doc, results)
    assert not bad, f"tables differ from their JSON (run python tools/report.py): {bad}"
    assert report.main(["--check"]) == 0


def test_every_result_file_is_in_the_report():
    doc = report.DOC.read_text()
    results = report.load_results()
    for name in results:
        assert f"[{name}.json](../benchmarks/results/{name}.json)" in doc, name


def test_check_fails_when_a_number_changes(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(report.RESULTS, results)
    doc = tmp_path / "benchmarks.md"
    doc.write_text(report.DOC.read_text())
    assert report.main(["--check", "--doc", str(doc), "--results", str(results)]) == 0
    path = results / "train-step.json"
    data = json.loads(path.read_text())
    data["rows"][0][data["columns"][1][0]] = 999.5
    path.write_text(json.dumps(data))
    assert report.main(["--check", "--doc", str(doc), "--results", str(results)]) == 1
    assert report.main(["--doc", str(doc), "--results", str(results)]) == 0
    assert "999.5" in doc.read_text()
    assert report.main(["--check", "--doc", str(doc), "--results", str(results)]) == 0


def test_a_new_result_file_appears_under_other_results(tmp_path):
    """Other tools (and helpers) add result files; the report takes them without a marker."""
    results = tmp_path / "results"
    shutil.copytree(report.RESULTS, results)
    (results / "decode-once-2026-12-08.json").write_text(json.dumps({
        "kind": "bench_decode_once", "title": "decode once", "source": "tool",
        "conditions": {"cpu_model": "Test CPU", "cores": 2, "openmp_env": {"OMP_WAIT_POLICY": None},
                       "load_before": [0.5, 0.4, 0.3], "load_after": [1.5, 1.0, 0.5]},
        "speedup": 1.75, "per_stage": {"decode_s": 3.25}}))
    (results / "raw-list.json").write_text(json.dumps([{"videos": 60, "rows": 180}]))
    doc = tmp_path / "benchmarks.md"
    doc.write_text(report.DOC.read_text())
    assert report.main(["--check", "--doc", str(doc), "--results", str(results)]) == 1
    assert report.main(["--doc", str(doc), "--results", str(results)]) == 0
    other = doc.read_text().split("<!-- results:other -->")[1]
    assert "**raw-list: raw-list**" in other and "| values.0.rows | 180 |" in other
    assert "bench_decode_once" in other and "| speedup | 1.75 |" in other
    assert "| per_stage.decode_s | 3.25 |" in other
    assert "Test CPU, 2 cores" in other and "libgomp default (spinning)" in other
    assert "load average 0.5 -> 1.5" in other


def test_a_marker_without_a_file_is_refused(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("<!-- results:nothing-here -->\n<!-- /results:nothing-here -->\n")
    with pytest.raises(SystemExit, match="nothing-here"):
        report.main(["--doc", str(doc)])


def test_the_summary_table_is_generated_from_the_headlines(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(report.RESULTS, results)
    path = results / "sweep-2026-12-07.json"
    data = json.loads(path.read_text())
    data["headline"][0]["result"] = "50% at 1 thread"
    path.write_text(json.dumps(data))
    doc = tmp_path / "benchmarks.md"
    doc.write_text(report.DOC.read_text())
    assert report.differences(doc.read_text(), report.load_results(results)) == ["summary"]
    report.main(["--doc", str(doc), "--results", str(results)])
    summary = doc.read_text().split("<!-- results:summary -->")[1].split("<!-- /results")[0]
    assert "| >= 90% of predicted | 50% at 1 thread | 2026-12-07," in summary
