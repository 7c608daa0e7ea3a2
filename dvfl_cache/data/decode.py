"""Decode chosen frames of a video with PyAV, with frame counts and indices one can trust.

Why not just trust the container: WebM stores no frame count, truncated AVI/MP4 files claim
frames they no longer hold, and variable-frame-rate files make `timestamp * fps` land on the
wrong frame. So opening a video demuxes it once (packets only, no decoding; a few ms) and
keeps, in presentation order, the timestamp of every packet that will produce a frame: empty
packets (AVI drop markers) and packets the demuxer flags corrupt (the cut-off tail of a
truncated file) are left out, and so are packets an MP4 edit list marks "discard": a clip cut
with `ffmpeg -ss S -i in.mp4 -c copy` keeps the GOP before its start point (negative
timestamps, decoded only as references), and players, `ffprobe -count_frames` and the decoder
itself skip them. Frame `i` is the `i`-th of those, which is also the `i`-th frame a decoder
outputs from the start (and the `i`-th frame `ffmpeg` shows), whatever the frame rate.

Frames come out as players show them: a display matrix (phone video: `rotate` 90/180/270) is
applied and `info` reports the displayed size. FFmpeg exposes the matrix on decoded frames
only, so opening a video decodes its first keyframe, alone, to read it.

To decode, we seek to the keyframe at or before the first wanted frame, decode forward, and
name each output frame by its timestamp. If a seek goes wrong (lands past its target, skips a
wanted frame, hits the end) we decode one pass from the start, still naming frames by
timestamp; if timestamps cannot name frames (missing, repeated, unknown) we decode from the
start and count.
Only the frames asked for are converted to RGB, with a single-threaded converter: PyAV's
default converter spreads each small frame over all cores, which is several times slower and
fights the DataLoader workers for CPUs.

Nothing is cached across calls; every `open_video` demuxes afresh.

`DECODER_VERSION` numbers what "frame i of this file" means. Version 1 (round 1) counted
edit-list discards as frames and ignored rotation; version 2 does neither. Only videos with an
edit list that drops frames or a rotation decode differently, so `numbering_changed` tells a
store built by version 1 which of its videos it can still trust (`stale_videos_error`).
"""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from dvfl_cache.errors import VideoDecodeError

log = logging.getLogger(__name__)

DECODER_VERSION = 2


def _side_data(frame) -> Iterator:
    """The frame's side-data entries, whichever API this PyAV offers.

    PyAV 17 iterates `frame.side_data` as a sequence of entries; PyAV 18 made it a mapping
    whose iteration yields the entry types (`av.sidedata.sidedata.Type`). A feature test on
    what iteration gives, not a version number, so a release that keeps either form works.
    """
    container = frame.side_data
    for item in container:
        yield item if hasattr(item, "type") else container[item]


@dataclass(frozen=True)
class VideoInfo:
    """What sampling needs to know: the decodable frame count, mean rate and displayed size.

    `rotation` (degrees counter-clockwise, 0/90/180/270) is already applied to `width`,
    `height` and every frame; `edit_skipped` counts the packets an edit list hides;
    `listed_frames` is the frame count the container's header states (0: none stated), more
    than `num_frames` in a truncated or damaged file.
    """

    num_frames: int
    fps: float
    width: int
    height: int
    rotation: int = 0
    edit_skipped: int = 0
    listed_frames: int = 0


class OpenVideo:
    """A video opened by `open_video`; valid only inside its `with` block."""

    def __init__(self, path: str, container, *, threads: int):
        import av

        self.path = path
        self._av = av
        self._container = container
        if not container.streams.video:
            raise VideoDecodeError(path, "no video stream")
        self._stream = container.streams.video[0]
        ctx = self._stream.codec_context
        if ctx is None or not ctx.width or not ctx.height:
            raise VideoDecodeError(path, "video stream without decodable codec parameters "
                                         "(file truncated before its header ended?)")
        ctx.thread_count = threads
        self._meta_frames = int(self._stream.frames or 0)
        self._scan()

    # -- demux pass: the frame index -------------------------------------------------------

    def _scan(self) -> None:
        pts, keys, n_corrupt, n_empty = [], [], 0, 0
        discarded: set = set()
        first_key = None
        ok_ts = True
        try:
            for pkt in self._container.demux(self._stream):
                if pkt.size == 0:
                    n_empty += pkt.pts is not None or pkt.dts is not None
                    continue
                if pkt.is_corrupt:
                    n_corrupt += 1
                    continue
                if first_key is None and pkt.is_keyframe:
                    first_key = pkt
                if pkt.is_discard:  # before an edit list's start: a reference, never shown
                    discarded.add(pkt.pts)
                    continue
                if pkt.pts is None:
                    ok_ts = False
                pts.append(pkt.pts)
                if pkt.is_keyframe:
                    keys.append(pkt.pts)
        except self._av.error.FFmpegError as e:
            # A file cut mid-packet can end the demux with an error: what came before stands.
            log.debug("%s: demux stopped early: %s", self.path, e)
        if not pts:
            raise VideoDecodeError(self.path, "no decodable video frames")
        self._discarded = discarded
        if ok_ts and len(set(pts)) == len(pts):
            self._pts = sorted(pts)
            self._index_of = {p: i for i, p in enumerate(self._pts)}
            # decoding from the very start is always possible, flagged keyframe or not
            self._keys = sorted({self._index_of[k] for k in keys} | {0})
        else:
            self._pts = None  # timestamps cannot name frames: count decoded frames instead
            self._index_of = {}
            self._keys = [0]
        if self._meta_frames and self._meta_frames != len(pts):
            log.debug("%s: container says %d frames, %d are decodable (%d corrupt, %d empty, "
                      "%d edit-list discarded packets)", self.path, self._meta_frames, len(pts),
                      n_corrupt, n_empty, len(discarded))
        rotation = self._read_rotation(first_key)
        self._rot = rotation // 90
        w, h = int(self._stream.codec_context.width), int(self._stream.codec_context.height)
        if self._rot % 2:
            w, h = h, w
        self.info = VideoInfo(num_frames=len(pts), fps=self._fps(len(pts)), width=w, height=h,
                              rotation=rotation, edit_skipped=len(discarded),
                              listed_frames=self._meta_frames)

    def _read_rotation(self, key_packet) -> int:
        """The display rotation (counter-clockwise degrees, a multiple of 90) of the stream.

        The display matrix reaches PyAV only as side data of decoded frames, so decode one:
        a copy of the first keyframe packet, alone and drained at once (a copy, because an
        edit list may mark the packet "discard" and the decoder would drop its frame; alone,
        because waiting for the B-frame delay costs several frames). Only if that gives no
        frame, decode from the start. ffmpeg applies the same rotation (`autorotate`).
        """
        frame = None
        if key_packet is not None:
            ctx = self._stream.codec_context
            alone = self._av.Packet(bytes(key_packet))
            alone.pts, alone.dts, alone.time_base = (key_packet.pts, key_packet.dts,
                                                     key_packet.time_base)
            alone.is_keyframe = True
            try:
                frame = next(iter([*ctx.decode(alone), *ctx.decode(None)]), None)
            except self._av.error.FFmpegError as e:
                log.debug("%s: first keyframe alone did not decode: %s", self.path, e)
            ctx.flush_buffers()
        if frame is None:
            frames = self._decoded(seek_pts=None)
            frame = next(frames, None)
            frames.close()
        if frame is None:  # frames() will say what is wrong with this video
            log.debug("%s: no frame decodes; rotation taken as 0", self.path)
            return 0
        for side in _side_data(frame):
            if side.type.name == "DISPLAYMATRIX":
                a, b, _, c, d = np.frombuffer(bytes(side), np.int32)[:5].astype(np.int64)
                if a * d - b * c < 0:  # players mirror such video; frames would come out wrong
                    raise VideoDecodeError(self.path, "display matrix mirrors the picture; only "
                                                      "rotations by multiples of 90 degrees are "
                                                      "supported")
        degrees = float(frame.rotation)
        turns = round(degrees / 90)
        if abs(degrees - 90 * turns) > 1:
            raise VideoDecodeError(self.path, f"display matrix rotates by {degrees:g} degrees; "
                                              f"only multiples of 90 are supported")
        return (90 * turns) % 360

    def _fps(self, n: int) -> float:
        for rate in (self._stream.average_rate, self._stream.guessed_rate,
                     self._stream.base_rate):
            if rate:
                return float(rate)
        dur = self._container.duration  # microseconds
        return float(n / (dur / 1e6)) if dur else 0.0

    # -- decoding ----------------------------------------------------------------------------

    def _decoded(self, *, seek_pts: int | None) -> Iterator:
        """Frames in output order from `seek_pts` (a keyframe timestamp) or from the start."""
        stream = self._stream
        if seek_pts is None:
            self._container.seek(0, backward=True, any_frame=False)
        else:
            self._container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
        for pkt in self._container.demux(stream):
            if pkt.size == 0 and pkt.pts is None and pkt.dts is None:
                yield from stream.decode(None)  # end of stream: drain delayed frames
                return
            if pkt.size == 0 or pkt.is_corrupt:
                continue
            yield from stream.decode(pkt)

    def _to_rgb(self, frame) -> np.ndarray:
        rgb = frame.to_ndarray(format="rgb24", threads=1)
        if self._rot:  # np.rot90 turns counter-clockwise, as the display matrix does
            rgb = np.ascontiguousarray(np.rot90(rgb, self._rot))
        return rgb

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        """RGB frames at `indices` (any order, repeats allowed) as uint8 (T, H, W, 3)."""
        indices = [int(i) for i in indices]
        n = self.info.num_frames
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            raise VideoDecodeError(self.path, f"frame index {bad[0]} out of range "
                                              f"(the video has {n} decodable frames)")
        if not indices:
            return np.zeros((0, self.info.height, self.info.width, 3), np.uint8)
        want = sorted(set(indices))
        try:
            got = None
            if self._pts is not None:
                got = self._by_timestamp(want, seek=True)
                if got is None:  # a seek went wrong: one pass from the start, still by timestamp
                    log.debug("%s: decoding from the start instead of seeking", self.path)
                    got = self._by_timestamp(want, seek=False)
            if got is None:
                got = self._by_counting(want)
        except self._av.error.FFmpegError as e:
            raise VideoDecodeError(self.path, f"{type(e).__name__}: {e}") from None
        missing = [i for i in indices if i not in got]
        if missing:
            raise VideoDecodeError(self.path, f"frame {missing[0]} could not be decoded "
                                              f"(the decoder stopped before it)")
        return np.stack([got[i] for i in indices])

    def _by_timestamp(self, want: list[int], *, seek: bool) -> dict[int, np.ndarray] | None:
        """Name decoded frames by timestamp; None means 'unsure': try another way.

        seek=True jumps to the keyframe before each wanted frame (and again whenever a
        keyframe lies between the current and the next wanted frame); seek=False decodes one
        pass from the start, and a wanted frame the decoder never outputs stays missing.
        """
        got: dict[int, np.ndarray] = {}
        pos = 0  # position in `want` of the next frame to get
        while pos < len(want):
            target = want[pos]
            key = self._keys[bisect.bisect_right(self._keys, target) - 1] if seek else 0
            first = True
            for frame in self._decoded(seek_pts=self._pts[key] if key > 0 else None):
                idx = self._index_of.get(frame.pts)
                if idx is None and frame.pts in self._discarded:
                    continue  # a decoder that outputs edit-list references: not a frame
                if idx is None:
                    log.debug("%s: decoded a frame with unknown pts %s", self.path, frame.pts)
                    return None
                if idx < key:
                    continue  # leading frames of an open GOP may reference the previous GOP
                if first and key > 0 and idx > target:
                    log.debug("%s: seek for frame %d landed on %d", self.path, target, idx)
                    return None
                first = False
                if idx > want[pos]:
                    if seek:
                        return None  # skipped over a wanted frame: not what we expected
                    pos = bisect.bisect_left(want, idx)
                    if pos == len(want):
                        return got
                if idx == want[pos]:
                    got[idx] = self._to_rgb(frame)
                    pos += 1
                    if pos == len(want):
                        return got
                if seek:
                    next_key = self._keys[bisect.bisect_right(self._keys, want[pos]) - 1]
                    if next_key > idx + 1:
                        break  # cheaper to seek than to decode up to the next wanted frame
            else:
                # End of stream before a wanted frame: after a seek that is a surprise (try one
                # pass); in one pass, what is missing is reported by the caller.
                return None if seek else got
        return got

    def _by_counting(self, want: list[int]) -> dict[int, np.ndarray]:
        got: dict[int, np.ndarray] = {}
        wanted = set(want)
        shown = (f for f in self._decoded(seek_pts=None)
                 if f.pts is None or f.pts not in self._discarded)
        for idx, frame in enumerate(shown):
            if idx in wanted:
                got[idx] = self._to_rgb(frame)
                if len(got) == len(wanted):
                    break
        return got


@contextmanager
def open_video(path: str | os.PathLike, *, threads: int = 1) -> Iterator[OpenVideo]:
    """Open a video for decoding; use as `with open_video(p) as v: v.info, v.frames([...])`.

    `threads` is the decoder's thread count (1 suits DataLoader workers; 0 lets FFmpeg choose).
    Any failure, at opening or later inside the block, raises `VideoDecodeError`.
    """
    import av

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "file not found")
    try:
        container = av.open(path, mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise VideoDecodeError(path, f"cannot open: {e.strerror or e}") from None
    try:
        with container:
            video = OpenVideo(path, container, threads=threads)
            yield video
    except av.error.FFmpegError as e:
        raise VideoDecodeError(path, f"{type(e).__name__}: {e.strerror or e}") from None


def decode_frames(path: str | os.PathLike, indices: Sequence[int], *,
                  threads: int = 1) -> np.ndarray:
    """Frames `indices` of one video as uint8 (T, H, W, 3)."""
    with open_video(path, threads=threads) as v:
        return v.frames(indices)


def video_info(path: str | os.PathLike) -> VideoInfo:
    with open_video(path) as v:
        return v.info


def short_video(path: str | os.PathLike, info: VideoInfo, frames: int) -> str | None:
    """Why ``path`` cannot give a clip of ``frames`` distinct frames as its container promises,
    as one line, or None.

    Every view is sampled over the decodable frames (the build's rule too: a video shorter than
    the clip repeats frames, a truncated file is what is left of it), so nothing fails; commands
    on one file say so, because their result may rest on a few frames repeated.
    """
    problems = []
    if info.listed_frames > info.num_frames:
        problems.append(f"only {info.num_frames} of the {info.listed_frames} frames its "
                        "container lists can be decoded (truncated or damaged?)")
    if info.num_frames < frames:
        problems.append(f"{info.num_frames} decodable frame(s) for a {frames}-frame clip: "
                        "frames are repeated")
    return f"{path}: {'; '.join(problems)}" if problems else None


def numbering_changed(path: str | os.PathLike) -> str | None:
    """Why frame i of this video differs between decoder version 1 and this one, or None.

    Version 1 counted edit-list discards as frames (shifting every index) and ignored the
    display rotation. A video that cannot be opened has no numbering: None (its rows fail
    anyway and are counted as failures).
    """
    try:
        with open_video(path) as v:
            info = v.info
    except VideoDecodeError:
        return None
    reasons = []
    if info.edit_skipped:
        reasons.append(f"edit list hides {info.edit_skipped} leading frames")
    if info.rotation:
        reasons.append(f"rotated {info.rotation} degrees for display")
    return ", ".join(reasons) or None


def stale_videos_error(store_version: int | None, paths: Sequence[str | os.PathLike], *,
                       workers: int = 1, show: int = 5) -> str | None:
    """One error line if a store decoded by `store_version` would be replayed on other pixels.

    `store_version` is the DECODER_VERSION recorded in the store (None or 1: built before it
    was recorded). Stores of this version cost nothing; older ones open every video in
    `paths` (a demux and one frame each; `workers` processes) and name those whose
    numbering changed, with the fix.
    """
    if (store_version or 1) >= DECODER_VERSION:
        return None
    paths = [os.fspath(p) for p in paths]
    if workers > 1 and len(paths) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            reasons = list(pool.map(numbering_changed, paths,
                                    chunksize=max(1, min(16, len(paths) // (4 * workers)))))
    else:
        reasons = [numbering_changed(p) for p in paths]
    stale = [(p, r) for p, r in zip(paths, reasons) if r is not None]
    if not stale:
        return None
    named = "; ".join(f"{p} ({r})" for p, r in stale[:show])
    more = f" and {len(stale) - show} more" if len(stale) > show else ""
    return (f"{len(stale)} of {len(paths)} videos decode to other frames than when this store "
            f"was built (decoder version {store_version or 1}, now {DECODER_VERSION}): "
            f"{named}{more}; rebuild their rows with `dvfl-cache build ... --repair` or "
            f"rebuild the store")
