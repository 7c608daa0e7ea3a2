"""Any video classifier as teacher and student: tiny random Hugging Face VideoMAE, TimeSformer and
ViViT models saved with save_pretrained, and a `py:` factory (tiny_video_factory.py), through
build -> verify --recompute -> fit -> eval; their input, labels and pre-build check recorded."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("transformers")

from dvfl_cache.cli import main as cache_cli  # noqa: E402
from dvfl_train.cli import main as train_cli  # noqa: E402

PY_TEACHER = "py:tiny_video_factory:tiny_video_net"
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             image_size=32, num_frames=4)


def save_hf(folder: Path, family: str, *, labels: list[str] | None = None, seed: int = 0,
            preprocessor: dict | None = None) -> Path:
    """A tiny random video classifier of ``family`` saved as save_pretrained leaves it."""
    import transformers as tf

    n = len(labels) if labels else 4
    named = {} if labels is None else {"id2label": dict(enumerate(labels)),
                                       "label2id": {x: i for i, x in enumerate(labels)}}
    if family == "videomae":
        config = tf.VideoMAEConfig(**SMALL, patch_size=16, tubelet_size=2, num_labels=n, **named)
        cls = tf.VideoMAEForVideoClassification
    elif family == "timesformer":
        config = tf.TimesformerConfig(**SMALL, patch_size=16, num_labels=n, **named)
        cls = tf.TimesformerForVideoClassification
    else:
        config = tf.VivitConfig(**SMALL, tubelet_size=[2, 16, 16], num_labels=n, **named)
        cls = tf.VivitForVideoClassification
    torch.manual_seed(seed)
    cls(config).save_pretrained(folder)
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder


def cli(main, args: list[str], expect: int = 0):
    res = CliRunner().invoke(main, [str(a) for a in args])
    if expect == 0:
        assert res.exit_code == 0, res.output + repr(res.exception)
    else:
        assert res.exit_code == expect, res.output
        assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit)
    return res


def one_error_line(res) -> bool:
    """The refusal is one "Error: ..." line (progress bars aside), no traceback."""
    lines = [x for x in res.output.splitlines() if x.strip() and "view/s]" not in x]
    return len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in res.output


def build_args(root: Path, out: Path, *teacher: str) -> list:
    return ["build", "--dataset", "ucf101", "--root", root, "--split", "1", *teacher,
            "--views-per-video", "2", "--views-per-shard", "8", "--batch-size", "8",
            "--workers", "0", "--dtype", "float32", "--device", "cpu", "--out", out]


def fit_args(root: Path, out: Path, *extra: str) -> list:
    return ["fit", "--dataset", "ucf101", "--root", root, "--frames", "4", "--size", "32",
            "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "8", "--workers", "0",
            "--device", "cpu", "--val-subset", "4", "--out", out, *extra]


def stored(path: Path) -> dict[str, np.ndarray]:
    import zarr

    g = zarr.open_group(str(path), mode="r")
    return {name: np.asarray(a[:]) for name, a in g.arrays()}


@pytest.mark.parametrize("family", ["videomae", "timesformer", "vivit"])
def test_hf_teacher_and_student_build_verify_fit_eval(family, synth_root, synth_index,
                                                      tmp_path):
    from dvfl_cache.cache.store import CacheReader
    from dvfl_cache.data import apply_view, decode_frames, views_from_arrays

    pre = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    folder = save_hf(tmp_path / family, family, preprocessor=pre if family == "videomae" else None)
    out = tmp_path / "c.zarr"
    # no --frames / --size: the model's own 4 frames at 32 px are the defaults
    cli(cache_cli, build_args(synth_root, out, "--teacher", f"hf:{folder}"))
    meta = CacheReader(out).meta
    assert meta.num_frames == 4 and meta.sampler.params["size"] == 32
    cin = meta.teacher.config["input"]
    assert cin["layout"] == "frames-first" and (cin["frames"], cin["size"]) == (4, 32)
    assert meta.teacher.name == f"hf:{family}" and meta.teacher.weights_sha256
    assert meta.teacher.config["labels"] == [f"LABEL_{i}" for i in range(4)]
    assert meta.teacher.config["label_match"] == "generic"
    info = cli(cache_cli, ["info", out]).output
    assert "generic (LABEL_i" in info and "teacher input" in info
    if family == "videomae":
        # the logits are the model's own on its normalisation ((x - 0.5) / 0.5), computed here
        # without dvfl's adapter
        import transformers as tf

        assert cin["mean"] == [0.5] * 3 and cin["source"] == "preprocessor_config.json"
        net = tf.AutoModelForVideoClassification.from_pretrained(folder).eval()
        a = stored(out)
        views = views_from_arrays({k: a[k] for k in ("video", "view", "frames", "crop", "flip",
                                                     "jitter", "gray")})
        v = views[3]
        x01 = apply_view(decode_frames(synth_index.abspath(v.video), v.frames), v, 32,
                         normalize=False)
        with torch.no_grad():
            want = net(pixel_values=((x01 - 0.5) / 0.5)[None]).logits[0].numpy()
        np.testing.assert_allclose(a["logits"][3], want, atol=1e-4)
    res = cli(cache_cli, ["verify", out, "--dataset", "ucf101", "--root", synth_root,
                          "--split", "1", "--recompute", "3", "--teacher", f"hf:{folder}"])
    assert "teacher recomputed on 3 rows" in res.output
    # an HF student of the same family from the HF teacher's cache, then eval
    run = tmp_path / "run"
    cli(train_cli, fit_args(synth_root, run, "--cache", out, "--model", f"hf:{folder}",
                            "--model-opt", "hidden_size=16", "--model-opt",
                            "intermediate_size=32"))
    state = torch.load(run / "best.pt", weights_only=True)
    assert state["arch"] == "hf"
    assert state["model_config"]["hf_config"]["hidden_size"] == 16  # the config, inline
    assert len(state["model_config"]["hf_config"]["id2label"]) == 4
    shutil_folder_gone = tmp_path / "moved"
    folder.rename(shutil_folder_gone)  # eval rebuilds from the checkpoint alone
    res = cli(train_cli, ["eval", "--checkpoint", run / "best.pt", "--dataset", "ucf101",
                          "--root", synth_root, "--split", "1", "--workers", "0"])
    assert "over 8 videos" in res.output
    if family == "videomae":
        res = cli(train_cli, ["explain", "--checkpoint", run / "best.pt", "--out",
                              tmp_path / "ex", synth_index.abspath(0)], expect=1)
        assert "needs a focal modulation model" in res.output
        assert one_error_line(res)


def test_hf_online_teacher_and_hf_student_init(synth_root, tmp_path):
    folder = save_hf(tmp_path / "t", "videomae")
    run = tmp_path / "run"
    cli(train_cli, fit_args(synth_root, run, "--teacher", f"hf:{folder}", "--model", "vfl-nano",
                            "--model-opt", "embed_dim=8", "--model-opt", "depths=1,1,1,1"))
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["teacher"] == f"hf:{folder}" and cfg["alpha"] == 0.3  # a teacher: KD on
    kd = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert kd[-1]["kd"] > 0  # the online teacher's logits reached the loss
    # --init: an HF student starts from the folder's safetensors (fresh classifier)
    run2 = tmp_path / "run2"
    cli(train_cli, fit_args(synth_root, run2, "--model", f"hf:{folder}", "--init",
                            folder / "model.safetensors", "--epochs", "1"))
    from safetensors.torch import load_file

    init = load_file(str(folder / "model.safetensors"))
    key = "videomae.embeddings.patch_embeddings.projection.weight"
    state = torch.load(run2 / "last.pt", weights_only=True)["model"]
    # trained one epoch from the init: close to it, unlike a fresh init
    assert torch.allclose(state[f"net.{key}"], init[key], atol=0.05)


def test_py_teacher_build_verify_fit_eval(synth_root, tmp_path):
    from tiny_video_factory import tiny_video_net

    from dvfl_cache.cache.store import CacheReader
    from dvfl_cache.models.load import sha256_file

    torch.manual_seed(1)
    weights = tmp_path / "w.pt"
    torch.save(tiny_video_net(4, width=6).state_dict(), weights)
    teacher = ["--teacher", PY_TEACHER, "--teacher-opt", "width=6", "--weights", weights,
               "--frames", "4", "--size", "32"]
    out = tmp_path / "c.zarr"
    # the factory's model takes [B, C, T, H, W]: dvfl's frames-first clip fails in one line
    res = cli(cache_cli, build_args(synth_root, out, *teacher), expect=1)
    assert "forward failed on a frames-first clip" in res.output
    assert one_error_line(res)
    cli(cache_cli, build_args(synth_root, out, *teacher, "--teacher-input",
                              "layout=channels-first", "--features", "--overwrite"))
    meta = CacheReader(out).meta
    t = meta.teacher
    assert t.name == PY_TEACHER and t.weights_sha256 == sha256_file(weights)
    assert t.config["module"] == "tiny_video_factory" and t.config["function"] == "tiny_video_net"
    assert t.config["options"] == {"width": 6}
    assert t.config["input"]["layout"] == "channels-first"
    assert t.config["input"]["source"] == "--teacher-input"
    assert meta.feature_dim == 6  # the input of its classifier layer `fc`
    cli(cache_cli, ["card", out])  # the card states the input the teacher was fed
    card = (out / "README.md").read_text()
    assert "fed 4-frame 32px clips, channels-first" in card and "(from --teacher-input)" in card
    # verify --recompute replays the recorded layout and options
    res = cli(cache_cli, ["verify", out, "--dataset", "ucf101", "--root", synth_root,
                          "--split", "1", "--recompute", "4", "--teacher", PY_TEACHER,
                          "--weights", weights])
    # the build runs every row in a full teacher batch, the recompute in its own: the same
    # numbers up to the last bits of a float32 sum
    diff = float(re.search(r"largest logit difference (\S+) ", res.output).group(1))
    assert diff <= 1e-6, res.output
    # extend replays the store's input record; another layout is refused
    ext = ["extend", out, "--dataset", "ucf101", "--root", synth_root, "--split", "1",
           "--teacher", PY_TEACHER, "--teacher-opt", "width=6", "--weights", weights,
           "--workers", "0", "--device", "cpu"]
    res = cli(cache_cli, [*ext, "--views-per-video", "3", "--teacher-input",
                          "layout=channels-first", "--teacher-input", "std=0.5,0.5,0.5"],
              expect=1)
    assert "teacher.config.input" in res.output and "differs" in res.output
    cli(cache_cli, [*ext, "--views-per-video", "3"])
    assert CacheReader(out).meta.views_per_video == 3
    # a py: student from the py: teacher's cache, eval from its checkpoint
    run = tmp_path / "run"
    student = ["--model", "py:tiny_video_factory:tiny_video_net", "--model-opt", "width=5"]
    res = cli(train_cli, fit_args(synth_root, run, "--cache", out, *student), expect=1)
    assert "forward failed on a frames-first clip" in res.output  # --model-input is needed
    cli(train_cli, fit_args(synth_root, run, "--cache", out, *student, "--model-input",
                            "layout=channels-first", "--overwrite"))
    state = torch.load(run / "best.pt", weights_only=True)
    assert state["arch"] == "py:tiny_video_factory:tiny_video_net"
    assert state["model_config"]["options"] == {"width": 5}
    res = cli(train_cli, ["eval", "--checkpoint", run / "best.pt", "--dataset", "ucf101",
                          "--root", synth_root, "--split", "1", "--workers", "0"])
    assert "over 8 videos" in res.output
    from dvfl_cache.data.readers import build_index

    video = build_index("ucf101", synth_root, split=1, subset="test").abspath(0)
    res = cli(train_cli, ["predict", "--checkpoint", run / "best.pt", video, "--topk", "2"])
    assert "1. " in res.output and "2. " in res.output


def test_teacher_labels_matched_refused_or_mapped(synth_root, synth_index, tmp_path):
    from dvfl_cache.cache.store import CacheReader

    classes = list(synth_index.classes)
    named = save_hf(tmp_path / "named", "videomae", labels=classes)
    out = tmp_path / "named.zarr"
    cli(cache_cli, build_args(synth_root, out, "--teacher", f"hf:{named}"))
    assert CacheReader(out).meta.teacher.config["label_match"] == "names"

    other = ["archery", "bowling", "cycling", "diving", "eating"]  # another label set
    folder = save_hf(tmp_path / "other", "videomae", labels=other)
    out = tmp_path / "other.zarr"
    res = cli(cache_cli, build_args(synth_root, out, "--teacher", f"hf:{folder}"), expect=1)
    assert "--teacher-classes" in res.output and one_error_line(res)
    mapping = {classes[0]: ["archery", "bowling"], classes[1]: "cycling",
               classes[2]: "diving", classes[3]: ["eating"]}
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    cli(cache_cli, build_args(synth_root, out, "--teacher", f"hf:{folder}",
                              "--teacher-classes", tmp_path / "map.json", "--overwrite"))
    t = CacheReader(out).meta.teacher
    assert t.config["label_match"] == "mapped" and t.config["labels"] == other
    assert t.config["class_map"] == [[0, 1], [2], [3], [4]]
    assert t.config["teacher_classes"] == mapping
    # the stored logits are the teacher's mapped: dataset class 0 = logsumexp of labels 0 and 1
    from dvfl_cache.models.load import load_model

    raw = load_model(f"hf:{folder}").model.eval()
    a = stored(out)
    from dvfl_cache.data import apply_view, decode_frames, views_from_arrays

    v = views_from_arrays({k: a[k] for k in ("video", "view", "frames", "crop", "flip",
                                             "jitter", "gray")})[2]
    clip = apply_view(decode_frames(synth_index.abspath(v.video), v.frames), v, 32)
    with torch.no_grad():
        logits = raw(clip[None])[0]
    want = torch.stack([torch.logsumexp(logits[:2], 0), logits[2], logits[3], logits[4]])
    np.testing.assert_allclose(a["logits"][2], want.numpy(), atol=1e-5)
    # verify --recompute replays the stored mapping; extend needs the same mapping again
    cli(cache_cli, ["verify", out, "--dataset", "ucf101", "--root", synth_root, "--split", "1",
                    "--recompute", "2", "--teacher", f"hf:{folder}"])
    ext = ["extend", out, "--dataset", "ucf101", "--root", synth_root, "--split", "1",
           "--teacher", f"hf:{folder}", "--workers", "0", "--device", "cpu",
           "--views-per-video", "3"]
    cli(cache_cli, ext, expect=1)
    cli(cache_cli, [*ext, "--teacher-classes", tmp_path / "map.json"])


def test_hf_refuses_pickles_and_never_downloads(synth_root, tmp_path, monkeypatch):
    folder = save_hf(tmp_path / "m", "videomae")
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "unpickled"

    class Boom:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Boom()))
    res = cli(cache_cli, build_args(synth_root, tmp_path / "c.zarr", "--teacher",
                                    f"hf:{folder}"), expect=1)
    assert "pytorch_model.bin" in res.output and "never unpickles" in res.output
    assert one_error_line(res) and not marker.exists()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-home" / "hub"))
    res = cli(cache_cli, build_args(synth_root, tmp_path / "d.zarr", "--teacher",
                                    "hf:someone/not-cached-model"), expect=1)
    assert "not in the local Hugging Face cache" in res.output


def test_hf_model_id_from_the_local_cache(synth_root, tmp_path, monkeypatch):
    """A model id is found in the local HF cache (laid out as the hub client does) offline."""
    hub = tmp_path / "hub"
    snap = hub / "models--tiny--videomae" / "snapshots" / ("0" * 40)
    snap.parent.mkdir(parents=True)
    save_hf(snap, "videomae")
    (hub / "models--tiny--videomae" / "refs").mkdir()
    (hub / "models--tiny--videomae" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub))
    from dvfl_cache.models.load import hf_folder

    assert hf_folder("hf:tiny/videomae") == snap


def test_check_teacher_refuses_chance_and_force_records(synth_root, synth_test_index,
                                                        tmp_path):
    teacher = ["--teacher", "py:tiny_video_factory:constant_net", "--frames", "4", "--size",
               "32", "--check-teacher", "8"]
    out = tmp_path / "c.zarr"
    res = cli(cache_cli, build_args(synth_root, out, *teacher), expect=1)
    assert "2 of 8 test views right" in res.output and "--force" in res.output
    assert not out.exists()  # refused before anything is written
    res = cli(cache_cli, build_args(synth_root, out, *teacher, "--force"))
    assert "teacher check: top-1 25.00% (2 / 8" in res.output
    info = json.loads(cli(cache_cli, ["info", "--json", out]).output)
    assert info["teacher_check"]["correct"] == 2 and not info["teacher_check"]["above_chance"]
    # on another index (the test subset, saved by `dvfl-cache index`): all of its videos
    from dvfl_cache.data.index import save_index

    save_index(synth_test_index, tmp_path / "test.json")
    res = cli(cache_cli, build_args(synth_root, tmp_path / "d.zarr", *teacher[:-2],
                                    "--check-index", tmp_path / "test.json", "--force"))
    assert f"/ {len(synth_test_index)} test views" in res.output
    info = json.loads(cli(cache_cli, ["info", "--json", tmp_path / "d.zarr"]).output)
    assert info["teacher_check"]["index"] == str(tmp_path / "test.json")


def test_check_teacher_passes_a_teacher_that_knows_the_classes(synth_index):
    """An oracle (the labels in loader order) is above chance: no refusal, top-1 1.0."""
    from dvfl_cache.cache.build import check_teacher
    from dvfl_cache.cache.build_config import BuildConfig

    labels = iter([synth_index.videos[v].label for v in range(len(synth_index))])

    class Oracle(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.tensor([next(labels) for _ in x]), 4).float()

    cfg = BuildConfig(out="unused", frames=4, size=32, batch_size=3)
    r = check_teacher(Oracle(), synth_index, videos=8, cfg=cfg, device=torch.device("cpu"))
    assert r["top1"] == 1.0 and r["above_chance"] and r["videos"] == 8


def test_py_online_teacher_needs_its_input(synth_root, tmp_path):
    from tiny_video_factory import tiny_video_net

    torch.manual_seed(2)
    torch.save(tiny_video_net(4, width=6).state_dict(), tmp_path / "w.pt")
    run = tmp_path / "run"
    online = ["--teacher", PY_TEACHER, "--teacher-weights", tmp_path / "w.pt", "--teacher-opt",
              "width=6", "--model", "vfl-nano", "--model-opt", "embed_dim=8", "--model-opt",
              "depths=1,1,1,1"]
    res = cli(train_cli, fit_args(synth_root, run, *online), expect=1)
    assert "forward failed on a frames-first clip" in res.output
    cli(train_cli, fit_args(synth_root, run, *online, "--teacher-input", "layout=channels-first",
                            "--overwrite"))
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["teacher_input"] == {"layout": "channels-first"}
    record = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert record["kd"] > 0


def test_hf_defaults_and_refusals_before_any_work(synth_root, tmp_path):
    """An hf: student's --frames/--size default to its config's (given ones win); profile
    builds it; an hf: teacher has its own weights, so --random-weights is refused in one
    line."""
    folder = save_hf(tmp_path / "m", "timesformer")
    base = ["fit", "--dataset", "ucf101", "--root", synth_root, "--out", tmp_path / "run",
            "--model", f"hf:{folder}", "--print-config"]
    cfg = json.loads(cli(train_cli, base).output)
    assert (cfg["num_frames"], cfg["size"]) == (4, 32)
    cfg = json.loads(cli(train_cli, [*base, "--frames", "2"]).output)
    assert (cfg["num_frames"], cfg["size"]) == (2, 32)
    res = cli(train_cli, ["profile", "--model", f"hf:{folder}", "--frames", "4", "--size", "32",
                          "--num-classes", "4", "--warmup", "0", "--runs", "1", "--json"])
    row = json.loads(res.output.splitlines()[-1])
    assert row["model"] == f"hf:{folder}" and row["params"] > 0 and row["gmacs"] > 0
    res = cli(cache_cli, build_args(synth_root, tmp_path / "c.zarr", "--teacher",
                                    f"hf:{folder}", "--random-weights"), expect=1)
    assert "--random-weights does not apply" in res.output and one_error_line(res)
    assert not (tmp_path / "c.zarr").exists()


def test_online_teacher_labels_refused_or_mapped(synth_root, synth_index, tmp_path):
    classes = list(synth_index.classes)
    folder = save_hf(tmp_path / "k", "videomae", labels=["a", "b", "c", "d", "e"])
    run = tmp_path / "run"
    online = ["--teacher", f"hf:{folder}", "--model", "vfl-nano", "--model-opt", "embed_dim=8",
              "--model-opt", "depths=1,1,1,1"]
    res = cli(train_cli, fit_args(synth_root, run, *online), expect=1)
    assert "--teacher-classes" in res.output and one_error_line(res)
    (tmp_path / "map.json").write_text(json.dumps(
        {classes[0]: ["a", "b"], classes[1]: "c", classes[2]: "d", classes[3]: "e"}))
    cli(train_cli, fit_args(synth_root, run, *online, "--teacher-classes",
                            tmp_path / "map.json", "--overwrite"))
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["teacher_classes"] == str(tmp_path / "map.json")
    record = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert record["kd"] > 0


def test_sweep_trains_and_evaluates_py_students(synth_root, tmp_path):
    """A sweep of py: students without a teacher (CE at alpha 0): each run's best.pt is
    rebuilt from its checkpoint and evaluated."""
    out = tmp_path / "sweep"
    cli(train_cli, ["sweep", "--dataset", "ucf101", "--root", synth_root, "--model",
                    "py:tiny_video_factory:tiny_video_net", "--model-opt", "width=4",
                    "--model-input", "layout=channels-first", "--frames", "4", "--size", "32",
                    "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "8", "--workers",
                    "0", "--device", "cpu", "--alphas", "0", "--seeds", "0,1", "--out", out])
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 3  # header and one row per seed
    for run in sorted((out / "runs").iterdir()):
        state = torch.load(run / "best.pt", weights_only=True)
        assert state["arch"] == "py:tiny_video_factory:tiny_video_net"


@pytest.mark.parametrize("pre, mean, std", [
    # VideoMAE / TimeSformer processors: [0, 1] pixels, ImageNet statistics
    ({"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
      "rescale_factor": 1 / 255}, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # ViViT's: rescaled to [-1, 1] (offset), then (v - 0.5) / 0.5 = 4 x - 3 of [0, 1] pixels
    ({"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "rescale_factor": 1 / 127.5,
      "offset": True}, (0.75,) * 3, (0.25,) * 3),
    ({"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "do_normalize": False},
     (0.0,) * 3, (1.0,) * 3),
])
def test_hf_preprocessing_is_read_from_the_processor_config(tmp_path, pre, mean, std):
    from dvfl_cache.models.load import hf_input

    (tmp_path / "preprocessor_config.json").write_text(json.dumps(pre))
    got = hf_input({"num_frames": 4, "image_size": 32}, tmp_path)
    np.testing.assert_allclose(got.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(got.std, std, rtol=1e-12)
    assert (got.frames, got.size, got.layout) == (4, 32, "frames-first")
