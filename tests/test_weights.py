"""Weights: our checkpoints, released Video-FocalNet files (with a pickled yacs config), ImageNet
image-FocalNet initialisation, and refusing pickles that would run code."""

from __future__ import annotations

import os
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from dvfl_cache.errors import CheckpointError
from dvfl_cache.models import (create_model, from_reference, load_pretrained,
                               model_from_checkpoint, read_checkpoint, save_checkpoint)
from dvfl_cache.models.weights import image_focalnet_to_video, strip_wrappers

TOY = dict(embed_dim=8, num_classes=5, num_frames=2)
TEMPORAL = ("f_temporal", "h_temporal", "focal_layers_temporal")



def _clip(frames=2):
    return torch.randn(1, frames, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def _install_fake_yacs(marker: Path) -> type:
    """A stand-in for yacs.config.CfgNode (a dict subclass keeping bookkeeping in __dict__, a set
    among it) whose own code leaves a marker file if anything ever runs it while loading."""
    package, module = types.ModuleType("yacs"), types.ModuleType("yacs.config")

    class CfgNode(dict):
        def __init__(self, init=None):
            super().__init__(init or {})
            self.__dict__.update({"__immutable__": False, "__deprecated_keys__": set(),
                                  "__renamed_keys__": {}, "__new_allowed__": False})

        def __getattr__(self, name):
            if name in self:
                return self[name]
            raise AttributeError(name)

        def __setstate__(self, state):
            marker.write_text("yacs code ran")
            self.__dict__.update(state)

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    module.CfgNode, package.config = CfgNode, module
    sys.modules["yacs"], sys.modules["yacs.config"] = package, module
    return CfgNode


def _uninstall_fake_yacs() -> None:
    sys.modules.pop("yacs.config", None)
    sys.modules.pop("yacs", None)


def _write_release(path: Path, state_dict: dict, marker: Path, *, keep_yacs: bool = False,
                   prefix: str = "") -> None:
    """A file laid out like a released Video-FocalNets/DVFL-Net checkpoint."""
    CfgNode = _install_fake_yacs(marker)
    try:
        config = CfgNode({"MODEL": CfgNode({"NAME": "vfn-tiny", "NUM_CLASSES": 5,
                                            "DROP_PATH_RATE": 0.1}),
                          "DATA": CfgNode({"NUM_FRAMES": 2, "DATASET": "ucf101"}),
                          "TAG": "default"})
        torch.save({"model": {prefix + k: v for k, v in state_dict.items()},
                    "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}},
                                  "param_groups": [{"lr": 0.1, "params": [0]}]},
                    "lr_scheduler": {"t_initial": 30, "base_values": [1e-3]},
                    "max_accuracy": 91.5, "epoch": 29, "amp": {"loss_scale": 65536.0},
                    "config": config}, path)
    finally:
        if not keep_yacs:
            _uninstall_fake_yacs()


# --------------------------------------------------------------------------- our format


def test_dvfl_checkpoint_round_trip(tmp_path):
    model = create_model("vfl-nano", **TOY)
    path = tmp_path / "student.pt"
    save_checkpoint(path, model, epoch=3, metrics={"top1": 0.5, "curve": [0.1, 0.2]})
    raw = torch.load(path, weights_only=True)
    assert (raw["format"], raw["version"], raw["arch"]) == ("dvfl-checkpoint", 1, "vfl-nano")
    assert raw["model_config"] == model.config and raw["epoch"] == 3

    again, report = model_from_checkpoint(path)
    assert again.arch == "vfl-nano" and again.config == model.config
    assert _same_weights(model, again)
    assert report.source_kind == "dvfl" and report.ignored == ("epoch", "metrics")
    assert len(report.loaded) == len(model.state_dict()) and not report.fresh
    with torch.no_grad():
        assert torch.equal(model.eval()(_clip()), again.eval()(_clip()))

    tuned, _ = model_from_checkpoint(path, drop_path_rate=0.0, use_checkpoint=True)
    assert tuned.config["drop_path_rate"] == 0.0 and _same_weights(model, tuned)

    other = create_model("vfl-nano", **TOY)
    assert load_pretrained(other, path).source_kind == "dvfl" and _same_weights(model, other)


def test_dvfl_checkpoint_head_and_structure_checks(tmp_path):
    model = create_model("vfl-nano", **TOY)
    path = tmp_path / "student.pt"
    save_checkpoint(path, model)
    with pytest.raises(CheckpointError, match="fresh_head=True") as err:
        model_from_checkpoint(path, num_classes=3)
    assert str(path) in str(err.value)
    relabelled, report = model_from_checkpoint(path, num_classes=3, fresh_head=True)
    assert set(report.fresh) == {"head.weight", "head.bias"}
    assert report.mismatched[0].startswith("head.weight: file (5, 64) vs model (3, 64)")
    assert relabelled.head.out_features == 3

    with pytest.raises(CheckpointError, match="use_postln=False but the model has use_postln=True"):
        load_pretrained(create_model("vfl-nano", **TOY, use_postln=True), path)
    with pytest.raises(CheckpointError, match="embed_dim=8 but the model has embed_dim=16"):
        load_pretrained(create_model("vfl-nano", **{**TOY, "embed_dim": 16}), path)

    newer = tmp_path / "newer.pt"
    torch.save({**torch.load(path, weights_only=True), "version": 2}, newer)
    with pytest.raises(CheckpointError, match="newer dvfl.*upgrade"):
        model_from_checkpoint(newer)


def test_loading_a_dvfl_checkpoint_at_another_clip_geometry_warns(tmp_path, caplog):
    path = tmp_path / "teacher.pt"
    save_checkpoint(path, create_model("vfl-nano", **{**TOY, "num_frames": 4, "img_size": 32}))
    with caplog.at_level("WARNING", logger="dvfl_cache.models.weights"):
        load_pretrained(create_model("vfl-nano", **{**TOY, "num_frames": 4, "img_size": 32}),
                        path)
    assert not caplog.records
    with caplog.at_level("WARNING", logger="dvfl_cache.models.weights"):
        load_pretrained(create_model("vfl-nano", **{**TOY, "num_frames": 8, "img_size": 64}),
                        path)
    (rec,) = caplog.records
    assert "num_frames=4 (this model 8)" in rec.getMessage()
    assert "img_size=32 (this model 64)" in rec.getMessage()


def test_save_checkpoint_refuses_what_loading_could_not_read(tmp_path):
    model = create_model("vfl-nano", **TOY)
    with pytest.raises(ValueError, match="model"):
        save_checkpoint(tmp_path / "a.pt", model, model=1)
    with pytest.raises(TypeError, match=r"extra\['when'\]"):
        save_checkpoint(tmp_path / "a.pt", model, extra={"when": object()})
    assert not list(tmp_path.iterdir())  # nothing half-written


# --------------------------------------------------------------------------- released files


def test_release_checkpoint_with_yacs_config_loads_as_data(tmp_path):
    source = create_model("vfn-tiny", **TOY)
    path, marker = tmp_path / "ucf101_tiny.pth", tmp_path / "yacs-ran"
    _write_release(path, source.state_dict(), marker)
    assert "yacs" not in sys.modules and "yacs.config" not in sys.modules

    target = create_model("vfn-tiny", **TOY)
    report = load_pretrained(target, path)
    assert _same_weights(source, target)
    assert report.source_kind == "video-focalnet" and not report.fresh and not report.dropped
    assert report.ignored == ("optimizer", "lr_scheduler", "max_accuracy", "epoch", "amp",
                              "config (yacs CfgNode, read as plain data)")
    assert "yacs" not in sys.modules and not marker.exists()

    config = read_checkpoint(path)["config"]
    assert config["MODEL"]["NUM_CLASSES"] == 5 and config["DATA"]["DATASET"] == "ucf101"
    assert type(config) is OrderedDict and type(config["MODEL"]) is OrderedDict  # plain data
    assert not marker.exists()


def test_yacs_code_never_runs_even_when_yacs_is_importable(tmp_path):
    source = create_model("vfl-nano", **TOY)
    path, marker = tmp_path / "release.pth", tmp_path / "yacs-ran"
    _write_release(path, source.state_dict(), marker, keep_yacs=True)
    try:
        target = create_model("vfl-nano", **TOY)
        load_pretrained(target, path)
    finally:
        _uninstall_fake_yacs()
    assert not marker.exists()
    assert _same_weights(source, target)


def test_release_with_ddp_prefix_and_bare_state_dict(tmp_path):
    source = create_model("vfl-nano", **TOY)
    ddp, bare = tmp_path / "ddp.pth", tmp_path / "bare.pth"
    _write_release(ddp, source.state_dict(), tmp_path / "m", prefix="module.")
    torch.save(source.state_dict(), bare)
    for path, ignored in ((ddp, 6), (bare, 0)):
        target = create_model("vfl-nano", **TOY)
        report = load_pretrained(target, path)
        assert _same_weights(source, target) and len(report.ignored) == ignored
        assert report.source_kind == "video-focalnet"


def test_release_head_of_other_size_needs_fresh_head(tmp_path):
    source = create_model("vfl-nano", **{**TOY, "num_classes": 7})
    path = tmp_path / "k400.pth"
    _write_release(path, source.state_dict(), tmp_path / "m")
    target = create_model("vfl-nano", **TOY)
    head_before = target.head.weight.clone()
    with pytest.raises(CheckpointError, match=r"head does not fit.*fresh_head=True"):
        load_pretrained(target, path)
    report = load_pretrained(target, path, fresh_head=True)
    assert set(report.fresh) == {"head.weight", "head.bias"}
    assert {m.split(":")[0] for m in report.mismatched} == {"head.weight", "head.bias"}
    assert torch.equal(target.head.weight, head_before)
    assert torch.equal(target.norm.weight, source.norm.weight)

    # A backbone without a head: fine for a head-less model, a fresh head only when asked for.
    backbone = tmp_path / "backbone.pth"
    torch.save({k: v for k, v in source.state_dict().items() if not k.startswith("head.")},
               backbone)
    with pytest.raises(CheckpointError, match="missing.*head.weight.*fresh_head=True"):
        load_pretrained(create_model("vfl-nano", **TOY), backbone)
    assert load_pretrained(create_model("vfl-nano", **TOY), backbone, fresh_head=True).fresh == (
        "head.weight", "head.bias")
    headless = create_model("vfl-nano", **{**TOY, "num_classes": 0})
    assert not load_pretrained(headless, backbone).fresh
    assert set(load_pretrained(headless, path).dropped) == {"head.weight", "head.bias"}


def test_release_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save({"model": create_model("vfn-tiny", **TOY).state_dict()}, path)
    with pytest.raises(CheckpointError, match="keys the model does not have: layers.0.blocks.1"):
        load_pretrained(create_model("vfl-nano", **TOY), path)
    torch.save({"model": create_model("vfl-nano", **TOY).state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"shape mismatch: patch_embed.proj.weight: file "
                                              r"\(8, 3, 4, 4\) vs model \(16, 3, 4, 4\)"):
        load_pretrained(create_model("vfl-nano", **{**TOY, "embed_dim": 16}), path)


@pytest.mark.parametrize("payload,legacy", [("os.system", False), ("builtins.exec", False),
                                            ("builtins.exec", True)])
def test_malicious_pickle_is_refused_without_running(tmp_path, payload, legacy):
    marker = tmp_path / "pwned"
    if payload == "os.system":
        call = (os.system, (f"touch {marker}",))
    else:
        call = (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    class Exploit:
        def __reduce__(self):
            return call

    path = tmp_path / "evil.pth"
    torch.save({"model": create_model("vfl-nano", **TOY).state_dict(), "config": Exploit()}, path,
               _use_new_zipfile_serialization=not legacy)
    name = "system" if payload == "os.system" else "exec"
    with pytest.raises(CheckpointError, match=rf"refusing to load {path}.*{name}"):
        load_pretrained(create_model("vfl-nano", **TOY), path)
    with pytest.raises(CheckpointError):
        read_checkpoint(path)
    assert not marker.exists()


def test_unreadable_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_pretrained(create_model("vfl-nano", **TOY), tmp_path / "absent.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=str(junk)):
        load_pretrained(create_model("vfl-nano", **TOY), junk)
    other = tmp_path / "other.pth"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, other)
    with pytest.raises(CheckpointError, match="does not look like a"):
        load_pretrained(create_model("vfl-nano", **TOY), other)


# --------------------------------------------------------------------------- ImageNet init


def _image_focalnet_state_dict() -> dict[str, torch.Tensor]:
    """Shaped like focalnet_tiny_srf.pth: depths 2,2,6,2, 1000 classes, no temporal weights."""
    video = create_model("vfn-tiny", embed_dim=8, num_classes=1000, num_frames=2)
    return {k: v for k, v in video.state_dict().items() if not any(t in k for t in TEMPORAL)}


def test_image_focalnet_initialisation(tmp_path):
    image = _image_focalnet_state_dict()
    path = tmp_path / "focalnet_tiny_srf.pth"
    torch.save({"model": image, "epoch": 299}, path)
    target = create_model("vfl-nano", **TOY)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = load_pretrained(target, path)

    assert report.source_kind == "image-focalnet" and report.ignored == ("epoch",)
    after = target.state_dict()
    fresh = {k for k in after if k.startswith("head.") or any(t in k for t in TEMPORAL)}
    assert set(report.fresh) == fresh and len(fresh) == 2 + 5 * 6  # head + 6 per block
    for key in after:
        source = before[key] if key in fresh else image[key]  # block j of stage i <- same block
        assert torch.equal(after[key], source), key
    assert "layers.0.blocks.1.norm1.weight" in report.dropped
    assert "layers.2.blocks.5.mlp.fc2.bias" in report.dropped
    assert {"head.weight", "head.bias"} <= set(report.dropped)
    assert "layers.2.blocks.1.mlp.fc2.bias" not in report.dropped
    assert set(report.loaded) | set(report.fresh) == set(after)


def test_image_focalnet_tubelet_stem(tmp_path):
    image = _image_focalnet_state_dict()
    converted = image_focalnet_to_video(image, depths=[1, 1, 2, 1], tubelet_size=2)
    stem = converted["patch_embed.proj.weight"]
    assert stem.shape == (8, 3, 2, 4, 4)
    assert torch.equal(stem[:, :, 0], image["patch_embed.proj.weight"] / 2)
    assert torch.equal(stem[:, :, 0], stem[:, :, 1])

    # A static clip embeds as the image did: conv3d(repeat(w)/2) over two equal frames = conv2d(w).
    frame = torch.randn(1, 3, 32, 32)
    as_image = torch.nn.functional.conv2d(frame, image["patch_embed.proj.weight"], stride=4)
    as_video = torch.nn.functional.conv3d(frame[:, :, None].repeat(1, 1, 2, 1, 1), stem,
                                          stride=(2, 4, 4))[:, :, 0]
    torch.testing.assert_close(as_video, as_image, rtol=1e-5, atol=1e-6)

    path = tmp_path / "image.pth"
    torch.save({"model": image}, path)
    target = create_model("vfl-nano", **{**TOY, "num_frames": 4, "tubelet_size": 2})
    load_pretrained(target, path)
    assert torch.equal(target.patch_embed.proj.weight, stem)


def test_conversions_are_pure():
    image = _image_focalnet_state_dict()
    keys, tensors = list(image), [v.clone() for v in image.values()]
    image_focalnet_to_video(image, depths=[1, 1, 2, 1], tubelet_size=2)
    strip_wrappers({f"module.{k}": v for k, v in image.items()})
    assert list(image) == keys and all(torch.equal(a, b) for a, b in zip(image.values(), tensors))
    assert list(strip_wrappers({"module._orig_mod.norm.weight": 1})) == ["norm.weight"]


# --------------------------------------------------------------------------- from_reference


def test_from_reference_is_strict():
    source = create_model("vfl-nano", **TOY)
    config = {k: v for k, v in source.config.items()}
    wrapped = {"model": {f"module.{k}": v for k, v in source.state_dict().items()}}
    assert _same_weights(from_reference(config, wrapped), source)
    with pytest.raises(TypeError, match="norm_layer"):
        from_reference({**config, "norm_layer": "LayerNorm"})
    partial = dict(source.state_dict())
    del partial["layers.1.blocks.0.modulation.h_temporal.bias"]
    with pytest.raises(CheckpointError, match="missing.*h_temporal.bias"):
        from_reference(config, partial)
