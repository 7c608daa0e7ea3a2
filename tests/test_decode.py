"""Decoding: frame counts and indices checked against what was written, on real files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import counter_frame, counter_index, write_counter_video

from dvfl_cache.data import decode as decode_mod
from dvfl_cache.data.decode import decode_frames, open_video, video_info
from dvfl_cache.errors import VideoDecodeError

av = pytest.importorskip("av")

FORMATS = [
    ("avi", "mpeg4", {"g": "6"}),
    ("mp4", "libx264", {"g": "6", "bf": "2", "crf": "10"}),
    ("webm", "libvpx-vp9", {"g": "6", "crf": "10", "b": "0", "deadline": "realtime",
                            "cpu-used": "8"}),
    ("mkv", "mpeg4", {"g": "5", "bf": "2"}),
]
N = 30


def _available(codec: str) -> bool:
    return codec in av.codecs_available


@pytest.fixture(scope="module", params=FORMATS, ids=[f[0] + "-" + f[1] for f in FORMATS])
def counter_video(request, tmp_path_factory):
    ext, codec, opts = request.param
    if not _available(codec):
        pytest.skip(f"{codec} not in this PyAV build")
    path = tmp_path_factory.mktemp("dec") / f"counter.{ext}"
    return write_counter_video(path, N, codec=codec, options=opts)


def test_frame_count_and_size_match_what_was_written(counter_video):
    info = video_info(counter_video)
    assert info.num_frames == N
    assert (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(25.0)


def test_random_indices_return_the_written_frames(counter_video):
    rng = np.random.default_rng(0)
    with open_video(counter_video) as v:
        for _ in range(12):
            idx = [int(i) for i in rng.integers(0, N, size=5)]  # unsorted, with repeats
            frames = v.frames(idx)
            assert frames.dtype == np.uint8 and frames.shape == (5, 48, 64, 3)
            assert [counter_index(f) for f in frames] == idx
        assert [counter_index(f) for f in v.frames(range(N))] == list(range(N))


def test_decoded_pixels_close_to_written(counter_video):
    frame = decode_frames(counter_video, [7])[0]
    err = np.abs(frame[:, :32].astype(int) - counter_frame(7)[:, :32].astype(int))
    assert err.mean() < 2.0


def test_seeking_decodes_less_than_the_whole_video(counter_video, monkeypatch):
    """The last frame is reached from the last keyframe, not by decoding from frame 0."""
    seen = []
    original = decode_mod.OpenVideo._decoded

    def counting(self, *, seek_pts):
        for frame in original(self, seek_pts=seek_pts):
            seen.append(frame.pts)
            yield frame

    monkeypatch.setattr(decode_mod.OpenVideo, "_decoded", counting)
    assert counter_index(decode_frames(counter_video, [N - 1])[0]) == N - 1
    assert 0 < len(seen) < N // 2


def test_seek_one_pass_and_counting_paths_agree(counter_video):
    want = list(range(0, N, 3))
    with open_video(counter_video) as v:
        by_seek = v._by_timestamp(want, seek=True)
        one_pass = v._by_timestamp(want, seek=False)
        by_count = v._by_counting(want)
    assert by_seek is not None and one_pass is not None
    assert sorted(by_seek) == sorted(one_pass) == sorted(by_count) == want
    for i in want:
        np.testing.assert_array_equal(by_seek[i], by_count[i])
        np.testing.assert_array_equal(one_pass[i], by_count[i])


def test_seek_landing_late_falls_back_to_one_pass(counter_video, monkeypatch):
    original = decode_mod.OpenVideo._decoded
    passes = []

    def late(self, *, seek_pts):
        passes.append(seek_pts)
        frames = original(self, seek_pts=seek_pts)
        if seek_pts is not None:  # as if the demuxer had landed 8 frames past the keyframe
            for _ in range(8):
                next(frames, None)
        yield from frames

    monkeypatch.setattr(decode_mod.OpenVideo, "_decoded", late)
    assert [counter_index(f) for f in decode_frames(counter_video, [20, 3, 27])] == [20, 3, 27]
    assert passes[-1] is None  # the answer came from a pass from the start


def test_fallback_used_when_timestamps_are_unusable(counter_video):
    with open_video(counter_video) as v:
        v._pts = None  # as for a file whose packets carry no timestamps
        assert [counter_index(f) for f in v.frames([9, 2, 25])] == [9, 2, 25]


@pytest.mark.skipif(not _available("libx264"), reason="libx264 not in this PyAV build")
def test_variable_frame_rate_indices_are_decode_positions(tmp_path):
    durations = [20, 40, 100, 10]  # ms, cycled: far from any constant rate
    path = write_counter_video(tmp_path / "vfr.mp4", 24, codec="libx264",
                               options={"g": "5", "bf": "2"}, durations_ms=durations)
    info = video_info(path)
    assert info.num_frames == 24
    idx = [23, 0, 11, 12, 5, 17]
    assert [counter_index(f) for f in decode_frames(path, idx)] == idx


@pytest.mark.parametrize("ext,codec,opts,keep", [
    ("avi", "mpeg4", {"g": "6"}, 0.7),
    ("mp4", "libx264", {"g": "6", "bf": "2", "movflags": "faststart"}, 0.6),
    ("webm", "libvpx-vp9", {"g": "6", "deadline": "realtime", "cpu-used": "8"}, 0.6),
])
def test_truncated_file_counts_only_decodable_frames(tmp_path, ext, codec, opts, keep):
    if not _available(codec):
        pytest.skip(f"{codec} not in this PyAV build")
    full = tmp_path / f"full.{ext}"
    if "movflags" in opts:  # index at the front, as in web videos: the cut keeps the header
        import av as _av

        opts = dict(opts)
        opts.pop("movflags")
        with _av.open(str(full), "w", options={"movflags": "faststart"}) as c:
            s = c.add_stream(codec, rate=25, options=opts)
            s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
            for i in range(N):
                for p in s.encode(_av.VideoFrame.from_ndarray(counter_frame(i), format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
    else:
        write_counter_video(full, N, codec=codec, options=opts)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: int(len(data) * keep)])
    info = video_info(cut)
    assert 0 < info.num_frames < N
    with open_video(cut) as v:
        got = [counter_index(f) for f in v.frames(range(info.num_frames))]
        assert got == list(range(info.num_frames))
        with pytest.raises(VideoDecodeError, match="out of range"):
            v.frames([info.num_frames])


def test_broken_files_raise_one_error_type_naming_the_file(tmp_path, counter_video):
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)
                        .tobytes())
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    head = tmp_path / "head.mp4"
    head.write_bytes(counter_video.read_bytes()[:300])
    for path in (garbage, empty, head, tmp_path / "missing.avi"):
        with pytest.raises(VideoDecodeError) as e:
            decode_frames(path, [0])
        assert str(path) in str(e.value) and e.value.path == str(path)
        assert e.value.reason


def test_index_out_of_range_is_an_error(counter_video):
    with pytest.raises(VideoDecodeError, match=f"frame index {N} out of range"):
        decode_frames(counter_video, [0, N])
    with pytest.raises(VideoDecodeError, match="out of range"):
        decode_frames(counter_video, [-1])


def test_empty_index_list(counter_video):
    assert decode_frames(counter_video, []).shape == (0, 48, 64, 3)


def test_path_with_spaces_and_odd_characters(tmp_path, counter_video):
    odd = tmp_path / "a dir (1)!" / "v [x] y.avi"
    odd.parent.mkdir()
    shutil.copy(counter_video, odd)
    assert counter_index(decode_frames(odd, [4])[0]) == 4
