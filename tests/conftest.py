"""Shared fixtures: a tiny synthetic dataset on disk and small videos whose frames name themselves.

`synth_root` is session-scoped: one generation (16 real videos, < 1 s) serves every test file.
"""

from __future__ import annotations

import fractions
from pathlib import Path

import numpy as np
import pytest
import torch

# Toy models gain nothing from intra-op threads, and on a loaded 2-core machine extra threads
# make each tiny forward many times slower. Subprocesses get OMP_NUM_THREADS=1 from the tests.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _keep_one_thread():
    """CLI commands set torch's thread count (dvfl_cache.runtime); keep tests at one."""
    yield
    torch.set_num_threads(1)

# The tiny dataset: 4 classes x 4 videos (split 1: 2 train + 2 test per class), 32x32, 16 frames.
SYNTH_TINY = dict(classes=4, videos_per_class=4, width=32, height=32, frames=16, seed=0)

COUNTER_BASE, COUNTER_STEP = 16, 7  # 16..219 over 30 frames


def load_tool(name: str):
    """tools/NAME.py as a module (``dvfl_NAME``): the tools are scripts, not a package."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parent.parent / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"dvfl_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"dvfl_{name}"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def free_port() -> str:
    """A TCP port free on 127.0.0.1 right now, for a torchrun rendezvous: a fixed port made two
    test suites running at once on one machine fail with EADDRINUSE."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def counter_frame(i: int, *, width: int = 64, height: int = 48) -> np.ndarray:
    """Frame i: left half flat at COUNTER_BASE + COUNTER_STEP * i (readable after lossy coding),
    right half a seeded noise texture so the encoder has real work (motion, B-frames)."""
    a = np.empty((height, width, 3), np.uint8)
    a[:, : width // 2] = COUNTER_BASE + COUNTER_STEP * i
    rng = np.random.default_rng(i)
    a[:, width // 2:] = rng.integers(0, 256, (height, width - width // 2, 3), dtype=np.uint8)
    return a


def counter_index(frame: np.ndarray) -> int:
    """Which counter frame a decoded RGB frame is."""
    w = frame.shape[1]
    level = frame[4:-4, 4: w // 2 - 4].astype(np.float64).mean()
    return int(round((level - COUNTER_BASE) / COUNTER_STEP))


def write_counter_video(path: Path, n: int, *, codec: str, options: dict | None = None,
                        durations_ms: list[int] | None = None, width: int = 64,
                        height: int = 48) -> Path:
    """Encode n counter frames; `durations_ms` (cycled) makes the frame rate variable."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=25, options=dict(options or {}))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.bit_rate = 4_000_000  # near-lossless for MPEG-4 part 2
        if durations_ms:
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        t = 0
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(counter_frame(i, width=width, height=height),
                                               format="rgb24")
            if durations_ms:
                frame.pts, frame.time_base = t, fractions.Fraction(1, 1000)
                t += durations_ms[i % len(durations_ms)]
            for pkt in stream.encode(frame):
                container.mux(pkt)
        for pkt in stream.encode():
            container.mux(pkt)
    return path


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A tiny synthetic action dataset in UCF101 layout (UCF-101/, ucfTrainTestlist/)."""
    from dvfl_cache.data.synth import SynthConfig, write_synth

    root = tmp_path_factory.mktemp("synth")
    write_synth(root, SynthConfig(**SYNTH_TINY))
    return root


@pytest.fixture(scope="session")
def synth_index(synth_root):
    """`DatasetIndex` of the tiny dataset's split 1 train subset (8 videos)."""
    from dvfl_cache.data.readers import build_index

    return build_index("ucf101", synth_root, split=1, subset="train")


@pytest.fixture(scope="session")
def synth_test_index(synth_root):
    """`DatasetIndex` of the tiny dataset's split 1 test subset (8 videos)."""
    from dvfl_cache.data.readers import build_index

    return build_index("ucf101", synth_root, split=1, subset="test")


# --- a real S3-compatible server on 127.0.0.1 (moto's server mode) ---------------------------

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="session")
def s3_endpoint():
    """http://127.0.0.1:PORT of a moto S3 server for the whole session.

    The standard variables (AWS_ENDPOINT_URL and test credentials) point every s3:// address
    of this process and of the subprocesses it starts at it; IMDS lookups are disabled so a
    missing credential never makes botocore reach for another address.
    """
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as sock:  # a free port on the loopback interface
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Its own process (not a thread of this one), so the server and the tests do not share
    # one interpreter lock; moto.server is the package's documented stand-alone server.
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the local S3 server (moto) did not start within 60 s")
            time.sleep(0.1)
    env = {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def bucket(s3_endpoint) -> str:
    """s3://<a fresh bucket> on the session's server."""
    import uuid

    import s3fs

    name = f"t-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(endpoint_url=s3_endpoint).mkdir(name)
    return f"s3://{name}"
