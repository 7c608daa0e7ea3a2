"""Frames as players show them: MP4 edit lists and display rotation, checked against ffmpeg.

The files are made here with PyAV: an edit-list cut is a stream copy that starts at the
keyframe before the cut point and shifts timestamps so the cut frame is at 0 (what
`ffmpeg -ss S -i in.mp4 -c copy` does); a rotated file gets its display matrix in the MP4
track header, as phones write it. Where the ffmpeg command-line tools are installed (`.ci/run`
installs them), ffmpeg's own cut and decode are the oracle as well.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from conftest import counter_frame, counter_index, write_counter_video

from dvfl_cache.data.decode import (DECODER_VERSION, numbering_changed, open_video,
                                    stale_videos_error, video_info)
from dvfl_cache.data.probe import probe_video
from dvfl_cache.errors import VideoDecodeError

av = pytest.importorskip("av")
N = 30
GOPS = {"short-gop": {"g": "6", "bf": "2", "crf": "10"},  # cut 3 frames after a keyframe
        "long-gop": {"g": "250", "bf": "2", "crf": "10"}}  # one GOP: all before the cut hidden
FFMPEG = shutil.which("ffmpeg") and shutil.which("ffprobe")
needs_ffmpeg = pytest.mark.skipif(not FFMPEG, reason="ffmpeg/ffprobe command-line tools not "
                                  "installed (apt-get install ffmpeg; .ci/run installs them), so "
                                  "ffmpeg cannot serve as the oracle here")

pytestmark = pytest.mark.skipif("libx264" not in av.codecs_available,
                                reason="libx264 not in this PyAV build")


def cut_copy(src, dst, start: int) -> int:
    """Stream-copy `src` from its frame `start` on, the way `ffmpeg -ss -c copy` does.

    Packets from the keyframe at or before `start` are kept (the decoder needs them) with
    timestamps shifted so frame `start` is at 0; the MP4 muxer writes the negative part as an
    edit list. Returns how many kept frames the edit list hides.
    """
    with av.open(str(src)) as inp:
        stream = inp.streams.video[0]
        packets = [p for p in inp.demux(stream) if p.size]
        pts = sorted(p.pts for p in packets)
        t0 = pts[start]
        key = max(p.pts for p in packets if p.is_keyframe and p.pts <= t0)
        first_dts = min(p.dts for p in packets if p.pts >= key)
        with av.open(str(dst), "w") as out:
            copy = out.add_stream_from_template(stream)
            for p in packets:
                if p.dts >= first_dts:
                    p.pts, p.dts, p.stream = p.pts - t0, p.dts - t0, copy
                    out.mux(p)
    return sum(key <= t < t0 for t in pts)


def ffprobe_count(path) -> int:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                          "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip().strip(","))


def ffmpeg_frames(path, width: int, height: int) -> np.ndarray:
    """Every frame ffmpeg shows (autorotated, no frame-rate conversion), RGB."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-vsync", "passthrough",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


@pytest.fixture(scope="module", params=list(GOPS))
def source(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("el") / f"{request.param}.mp4"
    return write_counter_video(path, N, codec="libx264", options=GOPS[request.param])


# ---------------------------------------------------------------------------- edit lists


@pytest.mark.parametrize("start", [3, 23])
def test_edit_list_cut_numbers_only_the_shown_frames(source, tmp_path, start):
    cut = tmp_path / "cut.mp4"
    hidden = cut_copy(source, cut, start)
    assert hidden > 0  # the cut really carries an edit list that hides frames
    with open_video(cut) as v:
        assert v.info.num_frames == N - start
        assert v.info.edit_skipped == hidden
        n = v.info.num_frames
        assert [counter_index(f) for f in v.frames(range(n))] == list(range(start, N))
        idx = [n - 1, 0, n // 2, 1, 0]  # seeks, including into the first (hidden-key) GOP
        assert [counter_index(f) for f in v.frames(idx)] == [start + i for i in idx]
        by_count = v._by_counting(list(range(n)))
        assert [counter_index(by_count[i]) for i in range(n)] == list(range(start, N))


@needs_ffmpeg
@pytest.mark.parametrize("seconds", ["0.5", "0.13"])
def test_ffmpeg_copy_cut_matches_ffprobe_and_ffmpeg(source, tmp_path, seconds):
    cut = tmp_path / "cut.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-ss", seconds, "-i", str(source), "-t", "0.6",
                    "-c", "copy", str(cut)], check=True)
    shown = ffmpeg_frames(cut, 64, 48)
    assert ffprobe_count(cut) == len(shown)
    with open_video(cut) as v:
        assert v.info.edit_skipped > 0
        assert v.info.num_frames == len(shown)
        ours = v.frames(range(v.info.num_frames))
        assert [counter_index(f) for f in ours] == [counter_index(f) for f in shown]
        assert np.abs(ours.astype(int) - shown.astype(int)).mean() < 1.0
        np.testing.assert_array_equal(v.frames([len(shown) - 1, 2]), ours[[-1, 2]])


def test_decoder_that_outputs_discarded_frames_is_still_numbered_right(source, tmp_path,
                                                                         monkeypatch):
    """Older FFmpeg builds hand edit-list references to the caller; they are not frames."""
    cut = tmp_path / "cut.mp4"
    cut_copy(source, cut, 23)
    with open_video(cut) as v:
        hidden_first = sorted(v._discarded)
        original = type(v)._decoded

        class Fake:  # a frame with a discarded timestamp, as such a decoder would output
            def __init__(self, pts):
                self.pts = pts

        def leaky(self, *, seek_pts):
            if seek_pts is None:
                yield from (Fake(p) for p in hidden_first)
            yield from original(self, seek_pts=seek_pts)

        monkeypatch.setattr(type(v), "_decoded", leaky)
        assert [counter_index(f) for f in v.frames([0, 3, 6])] == [23, 26, 29]
        got = v._by_counting([0, 6])
        assert [counter_index(got[i]) for i in (0, 6)] == [23, 29]


# ---------------------------------------------------------------------------- rotation


def write_rotated(path, degrees: int, n: int = 8, *, hflip: bool = False):
    """An MP4 whose track header carries the display matrix of `degrees` (counter-clockwise),
    mirrored left-right after that if `hflip`.

    The matrix is written into the `tkhd` box (ISO/IEC 14496-12 8.3.2: nine big-endian 32-bit
    values, 16.16 fixed point but 2.30 for the last column), which is where phones put it and
    where FFmpeg reads it from; patching the box works with every PyAV version.
    """
    import math
    import struct

    write_counter_video(path, n, codec="libx264", options={"g": "4", "crf": "10"})
    rad = math.radians(degrees)
    cos, sin = round(math.cos(rad), 9), round(math.sin(rad), 9)
    a, b, c, d = cos, -sin, sin, cos  # FFmpeg's av_display_rotation_set layout
    if hflip:
        a, b = -a, -b
    matrix = [round(v * 65536) for v in (a, b)] + [0] + [round(v * 65536) for v in (c, d)] \
        + [0, 0, 0, 1 << 30]
    data = bytearray(path.read_bytes())
    at = data.index(b"tkhd")
    # after the type: version/flags, then times/id/duration (20 bytes in v0, 32 in v1), then
    # 8 reserved, layer, alternate group, volume, 2 reserved
    at += 4 + 4 + (32 if data[at + 4] == 1 else 20) + 16
    data[at:at + 36] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotated_video_is_returned_upright_with_displayed_size(tmp_path, degrees):
    path = write_rotated(tmp_path / f"rot{degrees}.mp4", degrees)
    turns = degrees // 90
    w, h = (48, 64) if turns % 2 else (64, 48)
    info = video_info(path)
    assert (info.width, info.height, info.rotation) == (w, h, degrees)
    probed = probe_video(path)
    assert probed.ok and (probed.width, probed.height) == (w, h)
    with open_video(path) as v:
        got = v.frames([5, 2])
    assert got.shape == (2, h, w, 3)
    for frame, i in zip(got, (5, 2)):
        # counter_frame's flat half, turned counter-clockwise as the display matrix says:
        # 90 puts the written left half at the bottom, 180 on the right, 270 at the top
        flat = np.zeros((48, 64), bool)
        flat[:, :32] = True
        flat = np.rot90(flat, turns)
        inner = np.zeros_like(flat)
        inner[4:-4, 4:-4] = True
        level = frame[flat & inner].astype(float)
        assert abs(level.mean() - counter_frame(i)[0, 0, 0]) < 2 and level.std() < 3
        assert frame[~flat & inner].std() > 30  # the noise half is on the other side


@pytest.mark.parametrize("degrees,hflip,says", [(45, False, "rotates by 45 degrees"),
                                                 (0, True, "mirrors the picture"),
                                                 (90, True, "mirrors the picture")])
def test_unsupported_display_matrix_is_one_clear_error(tmp_path, degrees, hflip, says):
    """Not silently the wrong way round: a mirror alone reads back as a 180 degree turn."""
    path = write_rotated(tmp_path / "odd.mp4", degrees, hflip=hflip)
    with pytest.raises(VideoDecodeError) as e:
        video_info(path)
    assert str(path) in str(e.value) and says in e.value.reason
    assert probe_video(path).error == e.value.reason


@needs_ffmpeg
@pytest.mark.parametrize("degrees", [90, 270])
def test_rotated_video_matches_ffmpeg(tmp_path, degrees):
    path = write_rotated(tmp_path / f"rot{degrees}.mp4", degrees)
    shown = ffmpeg_frames(path, 48, 64)
    with open_video(path) as v:
        assert v.info.num_frames == len(shown)
        ours = v.frames(range(len(shown)))
    assert np.abs(ours.astype(int) - shown.astype(int)).mean() < 1.0


# ---------------------------------------------------------------------------- numbering version


def test_numbering_changed_names_edit_lists_and_rotation_only(tmp_path, source):
    cut = tmp_path / "cut.mp4"
    hidden = cut_copy(source, cut, 23)
    rotated = write_rotated(tmp_path / "rot.mp4", 90)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    assert numbering_changed(source) is None
    assert numbering_changed(broken) is None  # fails as a video, not as a changed one
    assert numbering_changed(cut) == f"edit list hides {hidden} leading frames"
    assert numbering_changed(rotated) == "rotated 90 degrees for display"

    paths = [source, cut, broken, rotated]
    for old in (None, 1):
        line = stale_videos_error(old, paths)
        assert line.startswith("2 of 4 videos decode to other frames")
        assert str(cut) in line and str(rotated) in line and str(source) not in line
        assert "\n" not in line and "--repair" in line and "rebuild the store" in line
        assert stale_videos_error(old, paths, workers=2) == line
        assert stale_videos_error(old, [source, broken]) is None
    assert stale_videos_error(DECODER_VERSION, paths) is None
    assert "and 1 more" in stale_videos_error(1, paths, show=1)
