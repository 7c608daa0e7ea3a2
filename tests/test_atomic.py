"""dvfl_cache.atomic: a file is replaced whole or not at all; dvfl_train.runfiles reads logs."""

from __future__ import annotations

import json

import pytest

from dvfl_cache.atomic import atomic_path, tmp_path_for, write_atomic, write_json_atomic


def test_write_replaces_the_whole_file(tmp_path):
    path = tmp_path / "a.json"
    write_atomic(path, "old")
    write_json_atomic(path, {"x": "é"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"x": "é"}
    write_atomic(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01" and not tmp_path_for(path).exists()


def test_an_error_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "a.txt"
    write_atomic(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert path.read_text() == "old" and not tmp_path_for(path).exists()


def test_a_kill_leaves_the_temporary_beside_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    write_atomic(path, "old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            tmp.write_text("new")
            raise KeyboardInterrupt  # as a kill between the write and the rename
    assert path.read_text() == "old" and tmp_path_for(path).read_text() == "new"


def test_read_metrics_skips_a_torn_line_and_filters_by_type(tmp_path):
    from dvfl_cache.errors import DvflError
    from dvfl_train.runfiles import METRICS, read_metrics

    lines = [{"type": "step", "epoch": 1}, {"type": "epoch", "epoch": 1, "val_top1": 0.5}]
    (tmp_path / METRICS).write_text("".join(json.dumps(r) + "\n" for r in lines)
                                    + '{"type": "epoch", "ep', encoding="utf-8")
    assert read_metrics(tmp_path) == lines
    assert read_metrics(tmp_path, kind="epoch") == lines[1:]
    assert read_metrics(tmp_path / "missing") == []
    (tmp_path / METRICS).write_text('{"type": "epoch"}\n', encoding="utf-8")
    with pytest.raises(DvflError, match=r"metrics.jsonl:1: not a metrics record"):
        read_metrics(tmp_path)
