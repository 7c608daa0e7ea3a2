"""The one place a model spec becomes a network: build, the online teacher, student initialisation
and evaluation all call :func:`load_model`.

A spec is one of
- a registered name (``vfl-nano``, ``vfn-base``, ...): built by ``create_model``, weights from
  ``weights`` (``load_pretrained``);
- a path to a dvfl checkpoint, which names its own architecture (``model_from_checkpoint``);
- ``hf:PATH``: a Hugging Face video classifier from a ``save_pretrained`` folder (config.json and
  safetensors weights) or a model id already in the local Hugging Face cache. Nothing is ever
  downloaded, and pickled weight files (``pytorch_model.bin``) are refused, never unpickled;
- ``py:MODULE:FUNCTION``: the user's own factory, called with ``options`` as keyword arguments,
  returning an ``nn.Module`` that maps a float clip to logits. This imports and runs the user's
  code; its ``weights`` are read with ``torch.load(weights_only=True)`` or from safetensors.

Foreign models (``hf:``, ``py:``) come wrapped in a :class:`ClipClassifier`: it takes dvfl's clip
(float, ImageNet-normalised, frames-first ``[B, T, C, H, W]``), converts it to the model's own
normalisation and layout (:class:`ClipInput`), and offers the interface the rest of dvfl uses
(``num_classes``, ``num_frames``, ``num_features``, ``config``, ``arch``, ``forward_features``,
``forward_head``). Its ``config`` holds what rebuilds it without the original folder (an HF
config inline as JSON), so student checkpoints stay plain data.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dvfl_cache.errors import CheckpointError, DvflError
from dvfl_cache.models.registry import MODEL_NAMES

__all__ = ["ClipClassifier", "ClipInput", "LoadedModel", "classes_for_dataset", "load_model",
           "preview_input", "rebuild", "sha256_file", "spec_kind"]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYOUTS = ("frames-first", "channels-first")  # [B, T, C, H, W] (dvfl's, HF's) / [B, C, T, H, W]
_PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5",
            "flax_model.msgpack")


def spec_kind(spec: str) -> str:
    """"hf", "py", "registry" or "checkpoint" (an existing file), else a one-line DvflError."""
    if spec.startswith("hf:"):
        return "hf"
    if spec.startswith("py:"):
        return "py"
    if spec in MODEL_NAMES:
        return "registry"
    if os.path.isfile(spec):
        return "checkpoint"
    raise DvflError(f"unknown model {spec!r}: not a file, not a registered model "
                    f"({', '.join(MODEL_NAMES)}), not hf:PATH or py:MODULE:FUNCTION")


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- input conversion


@dataclass(frozen=True)
class ClipInput:
    """What a model expects: clip geometry, the normalisation of its pixels (values in [0, 1]
    minus ``mean``, over ``std``, per RGB channel) and the order of its input axes."""

    frames: int
    size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    layout: str = "frames-first"
    source: str = "dvfl default"  # where the values came from, for the store's card

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise DvflError(f"input layout {self.layout!r} must be one of {', '.join(LAYOUTS)}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if not (isinstance(value, (list, tuple)) and len(value) == 3):
                raise DvflError(f"input {name} must be 3 numbers (R, G, B), got {value!r}")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        if any(s <= 0 for s in self.std):
            raise DvflError(f"input std must be > 0, got {self.std}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClipInput:
        unknown = sorted(set(d) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise DvflError(f"unknown input setting(s) {', '.join(unknown)}; known: frames, size, "
                            "mean, std, layout")
        return cls(**d)

    def with_options(self, options: Mapping[str, Any]) -> ClipInput:
        """These values with ``--teacher-input KEY=VALUE`` entries (layout, mean, std) over them."""
        if not options:
            return self
        allowed = {"layout", "mean", "std"}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise DvflError(f"--teacher-input: unknown key(s) {', '.join(unknown)}; known: "
                            f"{', '.join(sorted(allowed))}")
        d = {**self.to_dict(), **options, "source": "--teacher-input"}
        return ClipInput.from_dict(d)


def _convert(x: torch.Tensor, want: ClipInput) -> torch.Tensor:
    """dvfl's clip (ImageNet-normalised, [B, T, C, H, W]) -> the model's input."""
    if want.mean != IMAGENET_MEAN or want.std != IMAGENET_STD:
        # x_model = (x01 - m) / s with x01 = x * S + M (dvfl's ImageNet normalisation undone)
        S = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device)
        M = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device)
        m = torch.tensor(want.mean, dtype=x.dtype, device=x.device)
        s = torch.tensor(want.std, dtype=x.dtype, device=x.device)
        shape = (3, 1, 1)
        x = x * (S / s).view(shape) + ((M - m) / s).view(shape)
    if want.layout == "channels-first":
        x = x.transpose(1, 2)
    return x


# --------------------------------------------------------------------------- the adapter


class ClipClassifier(nn.Module):
    """A foreign video classifier behind dvfl's model interface.

    ``net`` is the wrapped module; ``kind`` "hf" calls it as ``net(pixel_values=x).logits``, "py"
    as ``net(x)``. Features are the input of the classifier layer ``head_name`` (caught by a
    hook for the duration of one call), so ``forward_head(forward_features(x)) == forward(x)``;
    without a classifier layer the model has no features (``num_features`` None).
    ``class_map``: dataset class i is the log-sum-exp of the teacher's logits ``class_map[i]``
    (its probability the sum of theirs), for a teacher with another label set.
    """

    def __init__(self, net: nn.Module, *, kind: str, arch: str, config: dict[str, Any],
                 clip_input: ClipInput, num_classes: int, head_name: str | None,
                 labels: Sequence[str] | None = None,
                 class_map: Sequence[Sequence[int]] | None = None):
        super().__init__()
        self.net, self.kind, self.arch = net, kind, arch
        self.config = dict(config)
        self.clip_input = clip_input
        self.num_frames, self.img_size = clip_input.frames, clip_input.size
        self.config.setdefault("num_frames", clip_input.frames)
        self.config.setdefault("img_size", clip_input.size)
        self.labels = None if labels is None else tuple(labels)
        self.class_map = None if class_map is None else tuple(tuple(c) for c in class_map)
        self.head_name = head_name
        head = self._head()
        self.num_features = None if head is None else int(head.in_features)
        self.num_classes = len(self.class_map) if self.class_map else num_classes

    def _head(self) -> nn.Linear | None:
        return None if self.head_name is None else self.net.get_submodule(self.head_name)

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        x = _convert(x, self.clip_input)
        try:
            if self.kind == "hf":
                return self.net(pixel_values=x).logits
            return self.net(x)
        except (TypeError, ValueError, RuntimeError) as exc:
            # most often a clip in the wrong layout or size: say what it was fed
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DvflError(f"{self.arch}: forward failed on a {self.clip_input.layout} clip of "
                            f"shape {tuple(x.shape)} ({first}); state its input with "
                            "--teacher-input layout=... if it expects another") from None

    def _map(self, logits: torch.Tensor) -> torch.Tensor:
        if self.class_map is None:
            return logits
        return torch.stack([torch.logsumexp(logits[:, list(c)], dim=1) for c in self.class_map],
                           dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._map(self._raw(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        head = self._head()
        if head is None:
            raise DvflError(f"{self.arch}: no classifier layer found (an nn.Linear named "
                            "classifier, head or fc), so it has no features; drop --features / "
                            "--beta")
        caught: list[torch.Tensor] = []
        hook = head.register_forward_pre_hook(lambda module, args: caught.append(args[0]))
        try:
            self._raw(x)
        finally:
            hook.remove()
        return caught[-1]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self._map(self._head()(features))


def _find_head(net: nn.Module) -> str | None:
    for name in ("classifier", "head", "fc"):
        module = getattr(net, name, None)
        if isinstance(module, nn.Linear):
            return name
    return None


# --------------------------------------------------------------------------- Hugging Face


def _transformers():
    """transformers, offline: only local folders and the local cache are ever read."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise DvflError("hf: models need the optional packages transformers and safetensors: "
                        "pip install 'dvfl[hf]'") from None
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    return transformers


def hf_folder(spec: str, *, need_weights: bool = True) -> Path:
    """The folder of ``hf:PATH``: PATH itself, or a model id's snapshot in the local HF cache;
    refused in one line when its weights are pickles or it has no safetensors weights."""
    target = spec[3:]
    folder = Path(target).expanduser()
    if not folder.is_dir():
        if target.startswith(("/", ".", "~")) or target.count("/") > 1 or not target:
            raise DvflError(f"{spec}: no such folder")
        _transformers()
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(target, local_files_only=True))
        except Exception:  # not in the cache (hub errors vary by version)
            raise DvflError(f"{spec}: not a folder and not in the local Hugging Face cache; "
                            "dvfl never downloads: fetch it first (huggingface-cli download "
                            f"{target}) or save_pretrained it to a folder") from None
    if not (folder / "config.json").is_file():
        raise DvflError(f"{spec}: {folder} has no config.json (expected a save_pretrained "
                        "folder)")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights and need_weights:
        pickled = [n for n in _PICKLED if (folder / n).exists()]
        what = f"only pickled weights ({', '.join(pickled)})" if pickled else "no weights"
        raise DvflError(f"{spec}: {folder} has {what}; dvfl reads safetensors only and never "
                        "unpickles: re-save with save_pretrained(dir, safe_serialization=True)")
    return folder


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DvflError(f"{path}: not readable JSON ({exc})") from None


def _size_of(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)) and value:
        return int(value[0])
    if isinstance(value, Mapping):
        for key in ("height", "shortest_edge", "width"):
            if isinstance(value.get(key), int):
                return int(value[key])
    return None


def hf_input(config: Mapping[str, Any], folder: Path | None) -> ClipInput:
    """The model's preprocessing: frames and size from its config, mean/std from
    preprocessor_config.json (or video_preprocessor_config.json); HF video classifiers take
    frames-first ``pixel_values``."""
    frames = config.get("num_frames")
    size = _size_of(config.get("image_size"))
    if not isinstance(frames, int) or size is None:
        raise DvflError(f"hf model ({config.get('model_type')}): config has no num_frames / "
                        "image_size; is it a video classifier?")
    pre: dict[str, Any] = {}
    for name in ("preprocessor_config.json", "video_preprocessor_config.json"):
        if folder is not None and (folder / name).is_file():
            pre, source = _read_json(folder / name), name
            break
    if pre.get("image_mean") and pre.get("image_std"):
        mean, std = list(pre["image_mean"]), list(pre["image_std"])
        if pre.get("do_normalize") is False:
            mean, std = [0.0] * 3, [1.0] * 3
        if len(mean) == 1:
            mean, std = mean * 3, std * 3
        # the processor's rescale, v = a * x01 - b (a = 255 * rescale_factor; b = 1 with
        # ViViT's offset), folded in: (v - m) / s == (x01 - (m + b) / a) / (s / a)
        a = 255.0 * float(pre.get("rescale_factor", 1 / 255)) if pre.get("do_rescale", True) \
            else 255.0
        a = 1.0 if abs(a - 1.0) < 1e-9 else a  # 255 * (1 / 255) in floating point
        b = 1.0 if pre.get("do_rescale", True) and pre.get("offset") else 0.0
        return ClipInput(frames=frames, size=size, mean=tuple((m + b) / a for m in mean),
                         std=tuple(s / a for s in std), source=source)
    log.warning("hf model (%s): no preprocessor config with image_mean/image_std; assuming "
                "ImageNet normalisation (state it with --teacher-input mean=...,std=...)",
                config.get("model_type"))
    return ClipInput(frames=frames, size=size, source="assumed ImageNet (no preprocessor config)")


def _hf_weights_sha(folder: Path) -> str:
    files = sorted(folder.glob("*.safetensors"))
    if len(files) == 1:
        return sha256_file(files[0])
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}:{sha256_file(f)}\n".encode())
    return h.hexdigest()


def _hf_labels(config: Any) -> list[str]:
    id2label = getattr(config, "id2label", None) or {}
    return [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}")))
            for i in range(int(config.num_labels))]


def _load_hf(spec: str, *, options: Mapping[str, Any], pretrained: bool,
             num_classes: int | None, frames: int | None, size: int | None,
             inline_config: Mapping[str, Any] | None = None
             ) -> tuple[nn.Module, dict[str, Any], Path | None]:
    """(HF model, its config as JSON, folder). ``pretrained``: the folder's weights; else a
    fresh model from the config with ``num_classes`` labels at ``frames`` x ``size``
    (a student), ``options`` overriding config entries."""
    tf = _transformers()
    if inline_config is not None:
        folder = None
        config = tf.AutoConfig.for_model(**dict(inline_config))
    else:
        folder = hf_folder(spec, need_weights=pretrained)
        config = tf.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    if pretrained:
        if options:
            raise DvflError(f"{spec}: a pretrained hf teacher takes no constructor options "
                            f"({', '.join(options)})")
        try:
            net = tf.AutoModelForVideoClassification.from_pretrained(
                str(folder), config=config, use_safetensors=True, local_files_only=True)
        except (ValueError, OSError, KeyError) as exc:
            raise DvflError(f"{spec}: cannot load as a video classifier ({exc})") from None
    else:
        changes = dict(options)
        if num_classes is not None:
            changes.update(num_labels=num_classes,
                           id2label={i: f"LABEL_{i}" for i in range(num_classes)},
                           label2id={f"LABEL_{i}": i for i in range(num_classes)})
        if frames is not None:
            changes["num_frames"] = frames
        if size is not None:
            changes["image_size"] = size
        for key, value in changes.items():
            if key not in ("num_labels", "id2label", "label2id") and not hasattr(config, key):
                raise DvflError(f"{spec}: the {config.model_type} config has no option {key!r}")
            setattr(config, key, value)
        try:
            net = tf.AutoModelForVideoClassification.from_config(config)
        except (ValueError, KeyError) as exc:
            raise DvflError(f"{spec}: cannot build a video classifier ({exc})") from None
    return net, json.loads(config.to_json_string(use_diff=False)), folder


# --------------------------------------------------------------------------- py: factories


def _factory(spec: str):
    _, _, target = spec.partition(":")
    module_name, sep, function = target.partition(":")
    if not sep or not module_name or not function:
        raise DvflError(f"{spec}: expected py:MODULE:FUNCTION")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DvflError(f"{spec}: cannot import {module_name} ({exc})") from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise DvflError(f"{spec}: {module_name} has no function {function!r}")
    return fn, module_name, function


def _call_factory(spec: str, options: Mapping[str, Any], given: Mapping[str, Any]) -> nn.Module:
    """The factory's module; ``given`` (num_classes, num_frames, img_size) is passed where its
    signature has a parameter of that name and ``options`` does not set it."""
    fn, _, _ = _factory(spec)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    extra = {k: v for k, v in given.items() if k in params and k not in options
             and v is not None}
    try:
        net = fn(**{**extra, **options})
    except TypeError as exc:
        raise DvflError(f"{spec}: bad options {dict(options)} ({exc})") from None
    if not isinstance(net, nn.Module):
        raise DvflError(f"{spec}: returned {type(net).__name__}, not an nn.Module")
    return net


def _read_weights(path: str) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a torch file read with weights_only=True."""
    if str(path).endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise DvflError(f"{path}: reading safetensors needs: pip install safetensors") \
                from None
        return load_file(str(path))
    from dvfl_cache.models.weights import read_checkpoint, strip_wrappers

    obj = read_checkpoint(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping) and not all(
            isinstance(v, torch.Tensor) for v in obj.values()):
        obj = obj["model"]
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not (isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values())):
        raise CheckpointError(f"{path}: no state dict found (a dict of tensors, or one under "
                              "'model' / 'state_dict')")
    return strip_wrappers(obj)


def load_state(model: nn.Module, path: str, *, fresh_head: bool = False,
               prefix: str = "") -> str:
    """Load ``path`` into ``model`` strictly (``prefix`` added to the file's keys); with
    ``fresh_head`` the classifier layer keeps its own init. Returns a one-line summary."""
    folder = Path(path).parent
    if (getattr(model, "kind", None) == "hf" and str(path).endswith(".safetensors")
            and (folder / "config.json").is_file()):
        # a save_pretrained folder's weights: through transformers, which renames the keys of
        # older layouts (VideoMAE's q_bias, ...) to the module's
        tf = _transformers()
        try:
            state = tf.AutoModelForVideoClassification.from_pretrained(
                str(folder), use_safetensors=True, local_files_only=True).state_dict()
        except (ValueError, OSError, KeyError) as exc:
            raise CheckpointError(f"{path}: cannot read as a video classifier ({exc})") from None
    else:
        state = _read_weights(path)
    if not all(k.startswith(prefix) for k in state):  # a dvfl checkpoint already has it
        state = {prefix + k: v for k, v in state.items()}
    target = model.state_dict()
    head = getattr(model, "head_name", None)
    head_keys = {k for k in target if head and k.startswith(f"net.{head}.")} if fresh_head \
        else set()
    use = {k: v for k, v in state.items() if k not in head_keys}
    unexpected = [k for k in use if k not in target]
    missing = [k for k in target if k not in use and k not in head_keys]
    bad = [f"{k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}" for k, v in use.items()
           if k in target and tuple(v.shape) != tuple(target[k].shape)]
    if unexpected or missing or bad:
        what = "; ".join(x for x in (
            f"unexpected keys {', '.join(unexpected[:5])}" if unexpected else "",
            f"missing keys {', '.join(missing[:5])}" if missing else "",
            f"shape mismatch {', '.join(bad[:3])}" if bad else "") if x)
        raise CheckpointError(f"{path}: does not fit the model ({what})")
    model.load_state_dict({**target, **use}, strict=True)
    return (f"{path}: {len(use)} tensors loaded, {len(head_keys)} fresh (classifier)")


# --------------------------------------------------------------------------- the one entry


@dataclass
class LoadedModel:
    """A network and its provenance: ``name``, ``config`` and ``weights_sha256`` are the JSON
    record a store keeps of its teacher; ``report`` the weight loader's one-line summary;
    ``extra`` holds an hf model's ``labels``."""

    model: nn.Module
    name: str
    config: dict[str, Any]
    weights_sha256: str | None
    report: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def load_model(spec: str, weights: str | None = None, *, options: Mapping[str, Any] | None = None,
               fresh_head: bool = False, pretrained: bool = True,
               num_classes: int | None = None, num_frames: int | None = None,
               size: int | None = None, clip_input: Mapping[str, Any] | None = None,
               class_map: Sequence[Sequence[int]] | None = None,
               identify: bool = True) -> LoadedModel:
    """``spec`` as a network (train mode, CPU; the caller seeds a random init).

    Registry names take ``options`` as their constructor options as given (the caller puts
    ``num_classes`` etc. in them, as before this loader existed); a checkpoint takes them as
    overrides. For ``hf:`` and ``py:``, ``num_classes``/``num_frames``/``size`` are the run's
    geometry: a pretrained hf model keeps its own (the caller compares), a fresh one (a student,
    ``pretrained=False``) is built at it; ``clip_input`` states or overrides the input layout
    and normalisation (``ClipInput`` keys). ``identify=False`` skips hashing a checkpoint
    (``weights_sha256`` None) where nothing records it (evaluation, the online teacher).
    """
    options = dict(options or {})
    kind = spec_kind(spec)
    if kind == "checkpoint":
        from dvfl_cache.models.weights import ForeignCheckpoint, model_from_checkpoint

        if weights:
            raise DvflError(f"{spec} is a checkpoint with its own weights; drop the weights file")
        try:
            model, report = model_from_checkpoint(spec, fresh_head=fresh_head, **options)
        except ForeignCheckpoint as found:
            obj = found.checkpoint
            model = _foreign_from_checkpoint(obj, obj["arch"], spec, options)
            return LoadedModel(model, obj["arch"], dict(model.config),
                               sha256_file(spec) if identify else None, f"{spec} ({obj['arch']})")
        return LoadedModel(model, model.arch or Path(spec).name, dict(model.config),
                           sha256_file(spec) if identify else None, report.summary())
    if kind == "registry":
        from dvfl_cache.models.registry import create_model
        from dvfl_cache.models.weights import load_pretrained

        model = create_model(spec, **options)
        summary, sha = None, None
        if weights is not None:
            summary = load_pretrained(model, weights, fresh_head=fresh_head).summary()
            sha = sha256_file(weights) if identify else None
        return LoadedModel(model, spec, dict(model.config), sha, summary)
    if kind == "hf":
        net, hf_config, folder = _load_hf(spec, options=options, pretrained=pretrained,
                                          num_classes=num_classes, frames=num_frames, size=size)
        cin = _stated(hf_input(hf_config, folder), clip_input)
        labels = _hf_labels(net.config)
        config = {"hf_config": hf_config, "input": cin.to_dict()}
        model = ClipClassifier(net, kind="hf", arch="hf", config=config, clip_input=cin,
                               num_classes=len(labels), head_name=_find_head(net),
                               labels=labels, class_map=class_map)
        sha = _hf_weights_sha(folder) if pretrained and identify else None
        summary = None
        if weights is not None:
            summary = load_state(model, weights, fresh_head=fresh_head, prefix="net.")
            sha = sha256_file(weights) if identify else None
        name = f"hf:{folder.name}" if pretrained else "hf"
        return LoadedModel(model, name, {**config,
                                         **({"class_map": [list(c) for c in class_map]}
                                            if class_map else {})},
                           sha, summary, extra={"labels": labels})
    # py:
    given = {"num_classes": num_classes, "num_frames": num_frames, "img_size": size}
    net = _call_factory(spec, options, given)
    if num_frames is None or size is None:
        raise DvflError(f"{spec}: a py: model needs the clip's frames and size")
    cin = _stated(ClipInput(frames=num_frames, size=size), clip_input)
    head = _find_head(net)
    classes = _py_num_classes(net, head, cin)
    config = {"options": options, "input": cin.to_dict(), "num_classes": classes}
    model = ClipClassifier(net, kind="py", arch=spec, config=config, clip_input=cin,
                           num_classes=classes, head_name=head, class_map=class_map)
    sha, summary = None, None
    if weights is not None:
        summary = load_state(model, weights, fresh_head=fresh_head, prefix="net.")
        sha = sha256_file(weights) if identify else None
    _, module_name, function = _factory(spec)
    return LoadedModel(model, spec, {"module": module_name, "function": function, **config,
                                     **({"class_map": [list(c) for c in class_map]}
                                        if class_map else {})},
                       sha, summary)


def _foreign_from_checkpoint(obj: Mapping, arch: str, path: str,
                             overrides: Mapping[str, Any]) -> ClipClassifier:
    """An hf:/py: model rebuilt from the config its dvfl checkpoint holds inline, loaded
    strictly (a student's best.pt, for evaluation or as an online teacher)."""
    from dvfl_cache.models.weights import _check_version

    _check_version(obj, path)
    config = obj.get("model_config")
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{path}: dvfl checkpoint without a 'model_config' dict")
    frames = overrides.get("num_frames")
    if set(overrides) - {"num_frames"} or (frames is not None
                                            and frames != config.get("num_frames")):
        raise CheckpointError(f"{path}: a {arch} model is rebuilt as saved; it takes no options "
                              f"({', '.join(f'{k}={v}' for k, v in overrides.items())})")
    try:
        model = rebuild(arch, config)
    except (DvflError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the {arch} model ({exc})") from None
    try:
        model.load_state_dict(dict(obj["model"]), strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the {arch} model ({first})") from None
    return model


def _stated(base: ClipInput, given: Mapping[str, Any] | None) -> ClipInput:
    """``base`` with the user's ``--teacher-input`` (layout, mean, std) over it, or a stored
    record replayed as it is (it names its ``source``)."""
    if not given:
        return base
    if "source" in given:
        return ClipInput.from_dict({**base.to_dict(), **given})
    return base.with_options(given)


def _py_num_classes(net: nn.Module, head: str | None, cin: ClipInput) -> int:
    """The factory module's output width: its ``num_classes``, its classifier layer's, else
    one forward pass on a blank clip."""
    n = getattr(net, "num_classes", None)
    if isinstance(n, int):
        return n
    if head is not None:
        return int(getattr(net, head).out_features)
    probe = torch.zeros(1, cin.frames, 3, cin.size, cin.size)
    with torch.no_grad():
        return int(net(_convert(probe, cin)).shape[-1])


def rebuild(arch: str, config: Mapping[str, Any]) -> ClipClassifier:
    """The foreign model a dvfl checkpoint describes (``arch`` "hf" or "py:MODULE:FUNCTION",
    ``config`` its ``model_config``), freshly initialised; the caller loads the weights."""
    cin = ClipInput.from_dict(config["input"])
    if arch == "hf":
        tf = _transformers()
        hf_config = dict(config["hf_config"])
        conf = tf.AutoConfig.for_model(**hf_config)
        net = tf.AutoModelForVideoClassification.from_config(conf)
        return ClipClassifier(net, kind="hf", arch="hf", config=dict(config), clip_input=cin,
                              num_classes=int(conf.num_labels), head_name=_find_head(net),
                              labels=_hf_labels(conf))
    if arch.startswith("py:"):
        options = dict(config.get("options") or {})
        given = {"num_classes": config.get("num_classes"), "num_frames": cin.frames,
                 "img_size": cin.size}
        net = _call_factory(arch, options, given)
        head = _find_head(net)
        return ClipClassifier(net, kind="py", arch=arch, config=dict(config), clip_input=cin,
                              num_classes=_py_num_classes(net, head, cin), head_name=head)
    raise CheckpointError(f"unknown foreign architecture {arch!r}")


def classes_for_dataset(labels: Sequence[str], classes: Sequence[str], *, spec: str,
                        mapping: Mapping[str, Any] | None = None
                        ) -> tuple[str, list[list[int]] | None]:
    """How a teacher's labels serve the dataset's classes: ("names", None) when equal,
    ("generic", None) for LABEL_i names taken in the dataset's order, ("mapped", class_map)
    from ``mapping`` (dataset class -> teacher label or labels); anything else is refused."""
    labels, classes = list(labels), list(classes)
    if mapping is None:
        if len(labels) == len(classes):
            if labels == classes:
                return "names", None
            if labels == [f"LABEL_{i}" for i in range(len(labels))]:
                return "generic", None
        raise DvflError(f"{spec}: the teacher's {len(labels)} labels ({', '.join(labels[:3])}"
                        f"{', ...' if len(labels) > 3 else ''}) are not the dataset's "
                        f"{len(classes)} classes ({', '.join(classes[:3])}"
                        f"{', ...' if len(classes) > 3 else ''}); pass --teacher-classes FILE "
                        "(JSON: dataset class -> teacher label or list of labels)")
    missing = [c for c in classes if c not in mapping]
    extra = [c for c in mapping if c not in classes]
    if missing or extra:
        raise DvflError(f"--teacher-classes: " + "; ".join(x for x in (
            f"no entry for dataset class(es) {', '.join(missing[:5])}" if missing else "",
            f"unknown dataset class(es) {', '.join(extra[:5])}" if extra else "") if x))
    where = {name: i for i, name in enumerate(labels)}
    class_map = []
    for c in classes:
        targets = mapping[c]
        targets = [targets] if isinstance(targets, str) else list(targets)
        unknown = [t for t in targets if t not in where]
        if not targets or unknown:
            raise DvflError(f"--teacher-classes: {c!r} -> {', '.join(map(str, unknown)) or '[]'}"
                            f": not among the teacher's labels")
        class_map.append([where[t] for t in targets])
    return "mapped", class_map


def preview_input(spec: str) -> ClipInput | None:
    """An hf: teacher's preprocessing from its config files alone (no weights loaded), for the
    CLI to default --frames/--size; None for other specs."""
    if not spec.startswith("hf:"):
        return None
    folder = hf_folder(spec, need_weights=False)
    return hf_input(_read_json(folder / "config.json"), folder)


def read_class_file(path: str) -> dict[str, Any]:
    """--teacher-classes FILE: JSON object, dataset class -> teacher label or list of labels."""
    d = _read_json(Path(path))
    if not isinstance(d, dict) or not all(isinstance(v, (str, list)) for v in d.values()):
        raise DvflError(f"{path}: expected a JSON object: dataset class -> teacher label or "
                        "list of labels")
    return d

