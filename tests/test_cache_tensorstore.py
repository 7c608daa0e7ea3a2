"""An independent Zarr v3 implementation (tensorstore, C++) reads every array bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from dvfl_cache.cache.store import CacheReader, CacheWriter
from test_cache_store import make_meta, write_all


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_tensorstore_reads_every_array_like_cache_reader(tmp_path, dtype):
    import tensorstore as ts

    path = tmp_path / "c.zarr"
    write_all(CacheWriter.create(path, make_meta(feature_dim=3, dtype=dtype)))
    reader = CacheReader(path)
    names = [*reader.meta.row_arrays(), "shard_done"]
    assert {"logits", "features", "frames", "crop", "jitter"} <= set(names)
    for name in names:
        arr = ts.open({"driver": "zarr3",
                       "kvstore": {"driver": "file", "path": str(path / name)}},
                      open=True, read=True).result()
        theirs = np.asarray(arr.read().result())
        ours = (np.asarray(reader.array(name)[:]) if name == "shard_done"
                else reader.read(name, 0, reader.num_rows))
        assert theirs.dtype == ours.dtype and theirs.shape == ours.shape, name
        assert theirs.tobytes() == ours.tobytes(), name
