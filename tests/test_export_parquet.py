"""`dvfl-cache export STORE OUT.parquet`: one row per cached view, read back with pyarrow and
compared value for value with the store; a suffix no exporter writes is refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_cache_build import build_args, run_cli

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def store(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("parquet") / "c.zarr"
    args = build_args(synth_root, out, "--features", "--mixup", "0.8", "--cutmix", "1.0",
                      "--mix-prob", "0.6")
    args[args.index("float32")] = "float16"  # half floats come out as float32
    run_cli(args)
    return out


def test_every_row_and_logit_reads_back_with_pyarrow(store, synth_root, synth_index, tmp_path):
    from dvfl_cache.cache.store import CacheReader
    from dvfl_cache.data.mix import OPS

    out = tmp_path / "c.parquet"
    res = run_cli(["export", str(store), str(out), "--format", "parquet", "--root",
                   str(synth_root)])
    assert "16 rows" in res.output and "no video paths" not in res.output
    reader = CacheReader(store)
    f = pq.ParquetFile(out)
    assert f.metadata.num_row_groups == reader.num_shards  # written shard by shard
    meta = json.loads(f.schema_arrow.metadata[b"dvfl"])
    assert meta == reader.meta.to_dict()
    t = f.read()
    n = reader.num_rows
    assert t.num_rows == n == 16
    np.testing.assert_array_equal(t["row"].to_numpy(), np.arange(n))
    logits = np.stack(t["logits"].to_numpy(zero_copy_only=False))
    assert t.schema.field("logits").type.value_type == pa.float32()
    np.testing.assert_array_equal(logits, reader.read("logits", 0, n).astype(np.float32))
    features = np.stack(t["features"].to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(features, reader.read("features", 0, n).astype(np.float32))
    for name in ("label", "view", "mix_lambda"):
        np.testing.assert_array_equal(t[name].to_numpy(), reader.read(name, 0, n), name)
    video = reader.read("video", 0, n)
    np.testing.assert_array_equal(t["video_index"].to_numpy(), video)
    assert t["video"].to_pylist() == [synth_index.videos[v].path for v in video]
    frames = np.stack(t["frames"].to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(frames, reader.read("frames", 0, n))
    crop = np.stack(t["crop"].to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(crop, reader.read("crop", 0, n))
    assert t["flip"].to_pylist() == reader.read("flip", 0, n).astype(bool).tolist()
    ops = reader.read("mix_op", 0, n)
    assert t["mix_op"].to_pylist() == [OPS[o] for o in ops]
    assert {"mixup", "cutmix", "none"} <= set(t["mix_op"].to_pylist())
    partner = reader.read("partner_video", 0, n)
    assert t["partner_path"].to_pylist() == [
        synth_index.videos[p].path if o else None for p, o in zip(partner, ops)]
    box = np.stack(t["mix_box"].to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(box, reader.read("mix_box", 0, n))


def test_index_names_the_videos_and_without_one_there_are_no_paths(store, synth_index,
                                                                   tmp_path):
    from dvfl_cache.data.index import save_index

    save_index(synth_index, tmp_path / "train.json")
    run_cli(["export", str(store), str(tmp_path / "a.pq"), "--index",
             str(tmp_path / "train.json")])
    t = pq.read_table(tmp_path / "a.pq")
    assert t["video"].to_pylist()[:8] == [v.path for v in synth_index.videos]
    res = run_cli(["export", str(store), str(tmp_path / "b.parquet")])
    assert "no video paths" in res.output
    assert "video" not in pq.read_table(tmp_path / "b.parquet").column_names


def test_the_suffix_and_format_must_agree(store, tmp_path):
    from click.testing import CliRunner

    from dvfl_cache.cli import main

    runner = CliRunner()
    for args, why in (
            ([str(tmp_path / "c.parquet"), "--format", "hdf5"], "--format hdf5 writes .h5"),
            ([str(tmp_path / "c.csv")], "the suffix '.csv' names none of them"),
            ([str(tmp_path / "c")], "the suffix '(none)' names none of them"),
            ([str(tmp_path / "c.h5"), "--root", str(tmp_path)], "--root/--index name video")):
        res = runner.invoke(main, ["export", str(store), *args])
        assert res.exit_code != 0 and why in res.output, res.output
        assert "Traceback" not in res.output
    assert not list(tmp_path.iterdir())  # nothing written under any of those names
    # the suffix alone picks the format: .parquet is Parquet (it was HDF5 before)
    run_cli(["export", str(store), str(tmp_path / "d.parquet")])
    assert (tmp_path / "d.parquet").read_bytes()[:4] == b"PAR1"
    run_cli(["export", str(store), str(tmp_path / "d.h5")])
    assert (tmp_path / "d.h5").read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"
