"""Reading and writing model weights: our checkpoints, released Video-FocalNet / DVFL-Net files and
ImageNet image-FocalNet initialisations.

Everything is read with ``torch.load(weights_only=True)``: pickled code never runs. Released
checkpoints also pickle their yacs ``CfgNode`` training config; that one global is allow-listed
and rebuilt as plain data without importing yacs. Anything else outside torch's weights-only
allow-list is refused with a ``CheckpointError`` naming the file and the global.

Foreign layouts are converted by pure functions ``(state_dict) -> state_dict`` and then loaded
strictly; the caller gets a ``LoadReport`` of what was loaded, left fresh, dropped or mismatched.
"""

from __future__ import annotations

import inspect
import io
import logging
import os
import pickle
import pickletools
import re
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from dvfl_cache.atomic import atomic_path
from dvfl_cache.errors import CheckpointError
from dvfl_cache.models.video_focalnet import VideoFocalNet
from dvfl_cache.settings import check_options

# How a user starts a new classifier head from such a checkpoint: the command-line way first
# (most readers of this message typed a command), then the API argument.
FRESH_HEAD = ("to train from it with a new classifier head use `dvfl-train fit --init "
              "CHECKPOINT` (API: load_pretrained(..., fresh_head=True))")

log = logging.getLogger(__name__)

FORMAT = "dvfl-checkpoint"
FORMAT_VERSION = 1
_RESERVED = ("format", "version", "arch", "model_config", "model")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile
_TEMPORAL = re.compile(r"\.modulation\.(f_temporal|h_temporal|focal_layers_temporal)\.")
_BLOCK = re.compile(r"^layers\.(\d+)\.(?:blocks\.(\d+)\.)?")
# Options that change the function a set of weights computes; a checkpoint written with other
# values must not be loaded silently. (drop rates, checkpointing, img_size and num_frames do not.)
STRUCTURAL_OPTIONS = ("patch_size", "in_chans", "embed_dim", "depths", "mlp_ratio",
                      "patch_norm", "focal_levels", "focal_windows", "use_conv_embed",
                      "use_layerscale", "use_postln", "use_postln_in_modulation",
                      "normalize_modulator", "tubelet_size")
# Clip geometry: any value runs with the same weights, but the network was trained at one.
_GEOMETRY = ("num_frames", "img_size")
_SHOWN = 8  # keys listed in an error message before "... and N more"


@dataclass(frozen=True)
class LoadReport:
    """What ``load_pretrained`` did with each key of the model and of the file."""

    path: str
    source_kind: str  # "dvfl" | "video-focalnet" | "image-focalnet"
    loaded: tuple[str, ...]
    fresh: tuple[str, ...]  # model keys left at their own initialisation
    dropped: tuple[str, ...]  # file keys not used
    mismatched: tuple[str, ...]  # "key: file (shape) vs model (shape)"
    ignored: tuple[str, ...]  # top-level file entries other than the weights

    def summary(self) -> str:
        return (f"{self.path} ({self.source_kind}): {len(self.loaded)} tensors loaded, "
                f"{len(self.fresh)} fresh, {len(self.dropped)} dropped, "
                f"{len(self.mismatched)} shape-mismatched; ignored: "
                f"{', '.join(self.ignored) or 'nothing'}")


# --------------------------------------------------------------------------- safe reading


def _read(path: str | os.PathLike, map_location: str | torch.device = "cpu"
          ) -> tuple[Any, list[Any]]:
    """torch.load(weights_only=True) with yacs configs allowed as data; returns (object, the
    objects that were yacs configs).

    Every checkpoint dvfl reads comes through here, so a file that is no checkpoint at all (a
    text file, random bytes, a video renamed ``.pt``) gets one answer everywhere: "FILE: not a
    PyTorch checkpoint (...)". torch's own errors for such files are ``KeyError: 101`` or an
    ``IndexError`` from inside its unpickler, or its weights-only advice, which talks of
    allow-lists as if the file held code. That advice is kept for the one case it fits: a real
    pickle that names a global outside the allow-list.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    reason = _not_a_checkpoint(path)
    if reason is not None:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({reason})")
    yacs_nodes: list[Any] = []

    class CfgNodeAsData:
        # Registered under the name "yacs.config.CfgNode". The weights-only unpickler calls
        # __new__ for NEWOBJ and lets SETITEMS fill only exact dict types and BUILD set
        # attributes on OrderedDicts, so we hand it an OrderedDict: the config's items and
        # yacs' bookkeeping attributes land in it as plain values and no yacs code is involved.
        def __new__(cls, *args):
            node = OrderedDict()
            yacs_nodes.append(node)
            return node

    with torch.serialization.safe_globals([(CfgNodeAsData, "yacs.config.CfgNode")]):
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except ValueError:  # legacy (non-zip) file: torch.load below is still weights-only
            unsafe = []
        except Exception as exc:  # a zip archive that torch.save did not write
            raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_last_line(exc)})"
                                  ) from None
        if unsafe:
            raise CheckpointError(
                f"refusing to load {path}: it would run code outside the allow-list "
                f"({', '.join(sorted(unsafe))}); only tensors, plain containers and yacs "
                f"configs (as data) are read")
        try:
            obj = torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as exc:
            found = re.search(r"GLOBAL (\S+)", str(exc))
            if found is None:  # a pickle, but broken or not torch's: nothing to refuse
                raise CheckpointError(f"{path}: not a PyTorch checkpoint "
                                      f"({_weights_only_reason(exc)})") from None
            raise CheckpointError(f"refusing to load {path}: {found.group(1)} is not on the "
                                  f"allow-list of what a checkpoint may contain") from None
        except Exception as exc:  # torch raises many types for truncated or foreign files
            raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_last_line(exc)})"
                                  ) from None
    return obj, yacs_nodes


# How much of a file is read to tell whether it is a pickle (a legacy torch file opens with a
# 16-byte one, the magic number).
_SNIFF_BYTES = 1 << 16
# pickletools' complaints about a stream that ends early, as opposed to one that is not pickle
_ENDS_EARLY = ("not enough data", "but only", "no newline found", "exhausted before")


def _not_a_checkpoint(path: Path) -> str | None:
    """Why ``path`` cannot be a torch checkpoint (neither a zip archive nor a pickle), or None
    when it may be one. Reads opcodes with ``pickletools``, which executes nothing."""
    if zipfile.is_zipfile(path):
        return None
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if not head:
        return "the file is empty"
    if head.startswith(b"PK\x03\x04"):
        return "a damaged or truncated zip archive"
    try:
        for op, _, _ in pickletools.genops(io.BytesIO(head)):
            if op.name == "STOP":
                return None
    except Exception as exc:  # ValueError mostly; garbage can make any decoder step fail
        if head.startswith(b"\x80") and any(s in str(exc) for s in _ENDS_EARLY):
            if len(head) == _SNIFF_BYTES:
                return None  # a long first pickle: torch.load decides
            return f"a truncated pickle, {len(head)} bytes"
    return f"neither a zip archive nor a pickle; it starts with {head[:12]!r}"


def _last_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:200]


def _weights_only_reason(exc: BaseException) -> str:
    """The weights-only unpickler's own reason, without its advice to turn the check off."""
    _, marker, rest = str(exc).partition("WeightsUnpickler error:")
    lines = [ln.strip() for ln in rest.splitlines() if ln.strip()]
    return lines[0][:200] if marker and lines else _last_line(exc)


def read_checkpoint(path: str | os.PathLike, *,
                    map_location: str | torch.device = "cpu") -> Any:
    """The object stored in ``path``, read without running pickled code (yacs configs come back
    as OrderedDicts); a file that is no checkpoint, or one that would run code, is a
    ``CheckpointError`` of one line."""
    return _read(path, map_location)[0]


# --------------------------------------------------------------------------- conversions


def strip_wrappers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove DDP (``module.``) and torch.compile (``_orig_mod.``) prefixes."""
    out = {}
    for key, value in state_dict.items():
        for prefix in _WRAPPER_PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def video_focalnet_to_dvfl(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official Video-FocalNet / DVFL-Net layout -> ours: our modules use the official names, so
    this only unwraps."""
    return strip_wrappers(state_dict)


def image_focalnet_to_video(state_dict: Mapping[str, torch.Tensor], *, depths: Sequence[int],
                            tubelet_size: int = 1) -> dict[str, torch.Tensor]:
    """ImageNet image-FocalNet weights -> a video model's layout.

    Spatial weights keep their names; the ImageNet classifier is dropped (the video head starts
    fresh), and so are blocks and stages the video model lacks (block j of stage i comes from
    block j of stage i). With ``tubelet_size > 1`` the 2-D stem kernel is repeated over time and
    divided by the tubelet size, so a static clip embeds as the image did.
    """
    out = {}
    for key, value in strip_wrappers(state_dict).items():
        if key.startswith("head."):
            continue
        found = _BLOCK.match(key)
        if found:
            stage = int(found.group(1))
            if stage >= len(depths):
                continue
            if found.group(2) is not None and int(found.group(2)) >= depths[stage]:
                continue
        if key == "patch_embed.proj.weight" and tubelet_size > 1 and value.ndim == 4:
            value = value.unsqueeze(2).repeat(1, 1, tubelet_size, 1, 1) / tubelet_size
        out[key] = value
    return out


# --------------------------------------------------------------------------- loading


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _unwrap(obj: Any, yacs_nodes: list[Any], path: str
            ) -> tuple[dict[str, torch.Tensor], str, tuple[str, ...]]:
    """(state dict, source kind, ignored top-level entries) of a loaded checkpoint object."""
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        _check_version(obj, path)
        ignored = tuple(k for k in obj if k not in _RESERVED)
        return dict(obj["model"]), "dvfl", ignored
    if _is_tensor_dict(obj):
        state_dict, ignored = obj, ()
    else:
        key = next((k for k in ("model", "state_dict") if isinstance(obj, Mapping)
                    and _is_tensor_dict(obj.get(k))), None)
        if key is None:
            raise CheckpointError(f"{path}: no state dict found (expected a 'model' entry of "
                                  f"tensors or a bare state dict)")
        state_dict = obj[key]

        def describe(name: str) -> str:
            if any(obj[name] is node for node in yacs_nodes):
                return f"{name} (yacs CfgNode, read as plain data)"
            return name

        ignored = tuple(describe(k) for k in obj if k != key)
    state_dict = strip_wrappers(state_dict)
    if any(_TEMPORAL.search(k) for k in state_dict):
        return video_focalnet_to_dvfl(state_dict), "video-focalnet", ignored
    if any(k.endswith(".modulation.f.weight") for k in state_dict):
        return state_dict, "image-focalnet", ignored
    raise CheckpointError(f"{path}: does not look like a (Video-)FocalNet checkpoint (no "
                          f"'layers.*.modulation.f.weight' keys)")


def _check_version(obj: Mapping, path: str) -> None:
    version = obj.get("version")
    if not isinstance(version, int):
        raise CheckpointError(f"{path}: dvfl checkpoint without an integer 'version'")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer dvfl (checkpoint version {version}, "
                              f"this dvfl reads {FORMAT_VERSION}); upgrade dvfl")
    if version < 1 or not isinstance(obj.get("model"), Mapping):
        raise CheckpointError(f"{path}: malformed dvfl checkpoint (version {version})")


def _listing(keys: Sequence[str]) -> str:
    more = f" ... and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def _check_structure(model: VideoFocalNet, saved: Mapping[str, Any], path: str) -> None:
    config = getattr(model, "config", {})
    for name in STRUCTURAL_OPTIONS:
        if name in saved and name in config and saved[name] != config[name]:
            raise CheckpointError(f"{path}: checkpoint was trained with {name}={saved[name]!r} "
                                  f"but the model has {name}={config[name]!r}")


def _warn_geometry(model: VideoFocalNet, saved: Mapping[str, Any], path: str) -> None:
    """A dvfl checkpoint loaded into a model built by name (``--teacher vfn-base --weights
    CKPT``) runs at the model's clip geometry, which the weights do not fix: say so when the
    checkpoint was trained at another one, since the network then sees clips unlike its
    training clips (passing the checkpoint alone, e.g. ``--teacher CKPT``, keeps its own)."""
    config = getattr(model, "config", {})
    differ = [f"{k}={saved[k]!r} (this model {config[k]!r})" for k in _GEOMETRY
              if k in saved and k in config and saved[k] != config[k]]
    if differ:
        log.warning("%s: trained at %s; the model built by name runs at its own geometry. Pass "
                    "the checkpoint alone to use its settings, or set them as model options",
                    path, ", ".join(differ))


def _apply(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, kind: str,
           path: str, fresh_head: bool, dropped: Sequence[str] = (),
           ignored: Sequence[str] = ()) -> LoadReport:
    """Load ``state_dict`` (already in our layout) strictly, allowing only the documented fresh
    keys: temporal weights and the head from an image model, and the head when asked."""
    target = model.state_dict()
    head = {k for k in target if k.startswith("head.")}
    may_be_fresh = set()
    if kind == "image-focalnet":
        may_be_fresh = {k for k in target if _TEMPORAL.search(k)} | head
    elif fresh_head:
        may_be_fresh = set(head)

    use, dropped, mismatched, unexpected, bad = {}, list(dropped), [], [], []
    for key, value in state_dict.items():
        if key not in target:
            # A head-less model (num_classes=0) or a fresh head has no use for the file's head.
            (dropped if key.startswith("head.") and (not head or fresh_head)
             else unexpected).append(key)
            continue
        shape, want = tuple(value.shape), tuple(target[key].shape)
        if shape != want:
            mismatched.append(f"{key}: file {shape} vs model {want}")
            if key not in may_be_fresh:
                bad.append(key)
            dropped.append(key)
            continue
        if key in head and fresh_head:
            dropped.append(key)
            continue
        use[key] = value

    if unexpected:
        raise CheckpointError(f"{path}: keys the model does not have: {_listing(unexpected)}")
    if bad:
        if set(bad) <= head:
            shapes = "; ".join(m for m in mismatched if m.startswith("head."))
            raise CheckpointError(f"{path}: classifier head does not fit ({shapes}); "
                                  f"{FRESH_HEAD}")
        raise CheckpointError(f"{path}: shape mismatch: {_listing(mismatched)}")
    missing = [k for k in target if k not in use and k not in may_be_fresh]
    if missing:
        hint = f"; {FRESH_HEAD}" if set(missing) <= head else ""
        raise CheckpointError(f"{path}: keys missing from the checkpoint: {_listing(missing)}"
                              f"{hint}")

    model.load_state_dict({**target, **use}, strict=True)
    report = LoadReport(path=path, source_kind=kind, loaded=tuple(use),
                        fresh=tuple(k for k in target if k not in use),
                        dropped=tuple(dropped), mismatched=tuple(mismatched),
                        ignored=tuple(ignored))
    log.info(report.summary())
    return report


def load_pretrained(model: torch.nn.Module, path: str | os.PathLike, *,
                    fresh_head: bool = False) -> LoadReport:
    """Load our checkpoint, a released Video-FocalNet/DVFL-Net ``.pth``, or an ImageNet image
    FocalNet into ``model`` in place.

    ``fresh_head``: keep the model's own (freshly initialised) head instead of the file's; without
    it a head of the wrong size is an error. Image checkpoints always give a fresh head.
    """
    obj, yacs_nodes = _read(path)
    path = str(path)
    state_dict, kind, ignored = _unwrap(obj, yacs_nodes, path)
    dropped: list[str] = []
    if kind == "dvfl":
        _check_structure(model, obj.get("model_config") or {}, path)
        _warn_geometry(model, obj.get("model_config") or {}, path)
    elif kind == "image-focalnet":
        config = getattr(model, "config", None)
        if config is None:
            raise CheckpointError(f"{path}: image-FocalNet initialisation needs a VideoFocalNet")
        converted = image_focalnet_to_video(state_dict, depths=config["depths"],
                                            tubelet_size=config["tubelet_size"])
        dropped = [k for k in state_dict if k not in converted]
        state_dict = converted
    return _apply(model, state_dict, kind=kind, path=path, fresh_head=fresh_head,
                  dropped=dropped, ignored=ignored)


def _check_options(config: Mapping[str, Any], where: str) -> None:
    check_options(config, inspect.signature(VideoFocalNet).parameters,
                  what=f"{where} (VideoFocalNet)", error=TypeError)


def from_reference(config: Mapping[str, Any],
                   state_dict: Mapping[str, torch.Tensor] | None = None) -> VideoFocalNet:
    """Build from the official constructor options and, if given, load official-layout weights
    strictly (a ``model`` wrapper and ``module.`` prefixes are accepted)."""
    _check_options(config, "from_reference")
    model = VideoFocalNet(**config)
    if state_dict is not None:
        if "model" in state_dict and _is_tensor_dict(state_dict["model"]):
            state_dict = state_dict["model"]
        _apply(model, video_focalnet_to_dvfl(state_dict), kind="video-focalnet",
               path="<reference state_dict>", fresh_head=False)
    return model


# --------------------------------------------------------------------------- our checkpoints


class NotPlainError(TypeError, ValueError):
    """A value a weights-only checkpoint cannot hold (a wrong type, hence a bad value)."""


def check_plain(value: Any, where: str) -> None:
    """Fail at save time on values that ``torch.load(weights_only=True)`` would refuse later:
    only tensors, JSON scalars, lists/tuples and dicts with str or int keys (``NotPlainError``
    naming the path to the bad value). Used by every checkpoint writer."""
    if value is None or isinstance(value, (torch.Tensor, str, bool, int, float)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise NotPlainError(f"{where}: key {key!r} is not a str or int")
            check_plain(item, f"{where}[{key!r}]")
        return
    raise NotPlainError(f"{where}: {type(value).__name__} is not a tensor or plain data, which "
                        "weights-only loading could not read")


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, /, **extra: Any) -> None:
    """Write ``{"format", "version", "arch", "model_config", "model", **extra}`` atomically."""
    clash = sorted(set(extra) & set(_RESERVED))
    if clash:
        raise ValueError(f"save_checkpoint: extra keys {', '.join(clash)} are reserved")
    for key, value in extra.items():
        check_plain(value, f"save_checkpoint: {key}")
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError("save_checkpoint: model has no 'config'; use a VideoFocalNet")
    obj = {"format": FORMAT, "version": FORMAT_VERSION, "arch": getattr(model, "arch", None),
           "model_config": dict(config), "model": model.state_dict(), **extra}
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class ForeignCheckpoint(CheckpointError):
    """A dvfl checkpoint of an hf:/py: model; ``checkpoint`` is what was read, for
    ``dvfl_cache.models.load`` to rebuild it without reading the file again."""

    def __init__(self, message: str, *, checkpoint: Mapping[str, Any]):
        super().__init__(message)
        self.checkpoint = checkpoint


def model_from_checkpoint(path: str | os.PathLike, *, fresh_head: bool = False,
                          **overrides: Any) -> tuple[VideoFocalNet, LoadReport]:
    """Rebuild the model a dvfl checkpoint was saved from (options overridable) and load it."""
    obj, _ = _read(path)
    path = str(path)
    if not (isinstance(obj, Mapping) and obj.get("format") == FORMAT):
        raise CheckpointError(f"{path}: not a dvfl checkpoint (no 'format': '{FORMAT}'); build "
                              f"the model with create_model and use load_pretrained")
    _check_version(obj, path)
    config = obj.get("model_config")
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{path}: dvfl checkpoint without a 'model_config' dict")
    arch = obj.get("arch")
    if isinstance(arch, str) and (arch == "hf" or arch.startswith("py:")):
        raise ForeignCheckpoint(f"{path}: holds a {arch} model; load it with "
                                "dvfl_cache.models.load.load_model, which rebuilds it",
                                checkpoint=obj)
    try:
        _check_options(config, path)
    except TypeError as exc:
        raise CheckpointError(f"{exc} (written by a newer dvfl?)") from None
    _check_options(overrides, "model_from_checkpoint")
    model = VideoFocalNet(**{**config, **overrides})
    model.arch = obj.get("arch")
    report = _apply(model, dict(obj["model"]), kind="dvfl", path=path, fresh_head=fresh_head,
                    ignored=tuple(k for k in obj if k not in _RESERVED))
    return model, report

