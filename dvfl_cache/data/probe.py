"""Open every video of an index before a long run, so broken files show up in minutes.

Probing a video opens it (demuxing every packet, which gives the decodable frame count) and
decodes its first, middle and last frame through the same seek path training uses. Results go
into `VideoEntry.probe` and are saved with the index.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

from dvfl_cache.data.decode import open_video
from dvfl_cache.data.index import DatasetIndex, ProbeResult
from dvfl_cache.errors import VideoDecodeError

log = logging.getLogger(__name__)


def probe_video(path: str | os.PathLike) -> ProbeResult:
    """Frame count, fps and size of one video, or the reason it cannot be decoded."""
    info = None
    try:
        with open_video(path) as v:
            info = v.info
            n = info.num_frames
            v.frames(sorted({0, n // 2, n - 1}))
    except VideoDecodeError as e:
        if info is None:
            return ProbeResult(error=e.reason)
        return ProbeResult(num_frames=info.num_frames, fps=info.fps, width=info.width,
                           height=info.height, error=e.reason)
    return ProbeResult(num_frames=info.num_frames, fps=round(info.fps, 6), width=info.width,
                       height=info.height)


def iter_probe(paths: list[str], *, workers: int = 1) -> Iterator[ProbeResult]:
    """Probe results in the order of `paths`; `workers` > 1 uses that many processes."""
    if workers <= 1 or len(paths) < 2:
        yield from map(probe_video, paths)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(probe_video, paths, chunksize=max(1, min(16, len(paths) //
                                                                     (4 * workers))))


def probe_index(index: DatasetIndex, *, workers: int = 1,
                progress: Callable[[int], None] | None = None) -> DatasetIndex:
    """The index with `probe` filled for every video; failures are logged, not raised.

    `progress(k)` is called after each video (for a progress bar in the CLI).
    """
    paths = [index.abspath(i) for i in range(len(index))]
    results = []
    for r in iter_probe(paths, workers=workers):
        results.append(r)
        if progress is not None:
            progress(1)
    videos = tuple(replace(v, probe=r) for v, r in zip(index.videos, results))
    bad = [(v.path, v.probe.error) for v in videos if v.probe.error is not None]
    if bad:
        log.warning("%d of %d videos failed to decode:\n%s", len(bad), len(videos),
                    "\n".join(f"  {p}: {e}" for p, e in bad))
    return index.with_videos(videos)
