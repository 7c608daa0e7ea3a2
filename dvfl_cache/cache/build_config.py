"""BuildConfig: everything `dvfl-cache build` needs, one frozen record, each field declaring its
command-line option (``dvfl_cache.settings``). Kept apart from the build loop so that the
command's options come from here without importing torch (``--help`` stays fast).

The sampler's own options (``--sampler --stride --flip --area --jitter --gray``) are declared on
``ViewSampler``'s fields; here ``sampler`` holds the chosen ones as a dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from dvfl_cache.cache.claims import DEFAULT_TTL_S
from dvfl_cache.cache.format import DEFAULT_VIEWS_PER_SHARD, LOGIT_DTYPES, CacheMeta
from dvfl_cache.data.views import ViewSampler
from dvfl_cache.errors import DvflError
from dvfl_cache.failbudget import max_failed_setting
from dvfl_cache.settings import setting

__all__ = ["BuildConfig", "recorded_settings"]


@dataclass(frozen=True)
class BuildConfig:
    """Everything `dvfl-cache build` needs; stored (via CacheMeta) with the cache."""

    out: str = setting(flag="--out", help="Store to write: a directory or an fsspec URL "
                                               "(s3://bucket/c.zarr, gs://...).")
    teacher: str = setting("vfn-base", flag="--teacher",
                           help="Registered model name, or a dvfl checkpoint that names its "
                                "architecture.")
    weights: str | None = setting(None, flag="--weights", path="file",
                                  help="Teacher weights: a dvfl checkpoint or a released "
                                       "Video-FocalNet .pth.")
    random_weights: bool = setting(False, flag="--random-weights",
                                   help="Use a randomly initialised teacher (tests, benchmarks) "
                                        "instead of --weights.")
    teacher_opts: Mapping[str, Any] = setting(
        flag="--teacher-opt", key_values=True, default_factory=dict,
        help="Override a teacher constructor option (repeatable), e.g. embed_dim=32 or "
             "depths=1,1,2,1.")
    teacher_input: Mapping[str, Any] = setting(
        flag="--teacher-input", key_values=True, default_factory=dict,
        help="hf:/py: teachers: the input the model expects (repeatable): layout=frames-first "
             "([B,T,C,H,W]) or channels-first ([B,C,T,H,W]), mean=R,G,B, std=R,G,B of [0,1] "
             "pixels. Default: an hf: model's preprocessor config; ImageNet, frames-first.")
    teacher_classes: str | None = setting(
        None, flag="--teacher-classes", path="file",
        help="hf:/py: teachers with other labels than the dataset's: JSON file mapping each "
             "dataset class to a teacher label or list of labels (probabilities summed).")
    check_teacher: int = setting(
        0, flag="--check-teacher", low=0,
        help="First score the teacher on the test views of N training videos; print and record "
             "its top-1 and refuse to build at chance level (see --force). 0 = skip.")
    check_index: str | None = setting(
        None, flag="--check-index", path="file",
        help="With --check-teacher: score the teacher on the videos of this index (JSON from "
             "`dvfl-cache index`, e.g. the test subset) instead of the build's; its classes "
             "must be the build's. --check-teacher 0 with it: all of its videos.")
    force: bool = setting(False, flag="--force",
                          help="Build even when --check-teacher finds the teacher at chance "
                               "level.")
    views_from: str | None = setting(
        None, flag="--views-from",
        help="Run this teacher over exactly the views (and mixes) of this store: its sampler, "
             "seed, mixing, frames, size, views per video and shard size are taken, and the "
             "new store's view columns are checked equal to its.")
    views_per_video: int = setting(1, flag="--views-per-video", low=1,
                                   help="Views cached per video; epoch e of training replays "
                                        "view e mod V.")
    sampler: Mapping[str, Any] = setting(default_factory=dict)  # ViewSampler options
    frames: int = setting(8, flag="--frames", low=1, help="Frames per teacher clip.")
    size: int = setting(224, flag="--size", low=8, help="Teacher input resolution (square).")
    seed: int = setting(0, flag="--seed", help="Seed of the views (and of a random teacher).")
    dtype: str = setting("float16", flag="--dtype", choices=LOGIT_DTYPES,
                         help="Logit (and feature) storage: float16, float32, or q8 (8-bit codes "
                              "plus two float32 per row: 109 bytes a view at 101 classes; the "
                              "error is measured and shown by `info`; see docs/cache-format.md).")
    features: bool = setting(False, flag="--features",
                             help="Also store the teacher's pooled pre-logit embedding per view.")
    mixup: float = setting(0.0, flag="--mixup", low=0,
                           help="Mixup Beta(A, A) alpha; the teacher runs on the mixed clip. "
                                "0 = off.")
    cutmix: float = setting(0.0, flag="--cutmix", low=0,
                            help="Cutmix Beta(A, A) alpha (even odds with mixup when both are "
                                 "> 0). 0 = off.")
    mix_prob: float = setting(1.0, flag="--mix-prob", low=0, high=1,
                              help="Fraction of rows mixed once --mixup or --cutmix is > 0 (per "
                                   "row, drawn from the seed: the same for any batch size or "
                                   "number of ranks).")
    views_per_shard: int = setting(DEFAULT_VIEWS_PER_SHARD, flag="--views-per-shard", low=1,
                                   help="Rows per shard: the unit of work, resume and writes.")
    batch_size: int = setting(32, flag="--batch-size", low=1, help="Views per teacher batch.")
    workers: int = setting(4, flag="--workers", low=0, help="Decoding processes.")
    # Decode each row's video on its own (the build before issue 30: a video decoded once per
    # view) instead of once for all its views; the stored values are the same. Library only:
    # for the benchmark and the test that compares the two.
    decode_per_view: bool = setting(False)
    device: str | None = setting(None, flag="--device",
                                 help="cpu, cuda, cuda:1 ... (default: cuda if available).")
    resume: bool = setting(False, flag="--resume",
                           help="Finish an interrupted build of the same cache.")
    overwrite: bool = setting(False, flag="--overwrite",
                              help="Replace an existing store at --out.")
    # Where --out lives when it is a URL (endpoint, profile, anon, ...); may hold secrets, so it
    # is never stored or logged (config_dict drops it). Set by --storage-option.
    storage_options: Mapping[str, Any] = setting(default_factory=dict)
    claim_ttl_s: float = setting(
        DEFAULT_TTL_S, flag="--claim-ttl", low=1,
        help="Seconds after which a shard claimed by a process that stopped renewing its claim "
             "(killed, lost machine) is taken over by another builder.")
    max_failed: float = max_failed_setting()
    repair: bool = setting(False, flag="--repair",
                           help="Read every finished shard back (as `verify` does), and run the "
                                "teacher again on broken or missing shards, and on shards of "
                                "videos whose frame numbering changed since the store's decoder "
                                "version; implies --resume.")
    command: tuple[str, ...] = setting(())  # the command line, recorded for the store's card

    def view_sampler(self) -> ViewSampler:
        """The build's training-view sampler: ``sampler`` options at the build's frames and
        seed; bad options are one ``DvflError`` line."""
        opts = {"num_frames": self.frames, "mode": "train", "seed": self.seed,
                **dict(self.sampler)}
        try:
            return ViewSampler(**opts)
        except (TypeError, ValueError) as e:
            raise DvflError(f"bad sampler options {dict(self.sampler)}: {e}") from None

    def record(self) -> dict[str, Any]:
        """What ``--print-config`` shows: this config, and the sampler and mixing sections of
        the metadata the cache would store (``cache-format.md``); the teacher's and the
        dataset's sections need the teacher and the index, which printing does not load."""
        from dvfl_cache.data.mix import MixConfig

        sampler = self.view_sampler()
        try:
            mix = MixConfig(mixup=self.mixup, cutmix=self.cutmix, prob=self.mix_prob,
                            seed=self.seed)
        except ValueError as e:
            raise DvflError(f"bad mixing options: {e}") from None
        build = {k: v for k, v in asdict(self).items()
                 if k != "storage_options"}  # may hold credentials: never printed or stored
        return {"build": {**build, "sampler": dict(self.sampler),
                          "teacher_opts": dict(self.teacher_opts),
                          "teacher_input": dict(self.teacher_input)},
                "sampler": {"name": sampler.temporal,
                            "params": {**sampler.to_dict(), "size": self.size},
                            "seed": self.seed},
                "views_per_video": self.views_per_video, "num_frames": self.frames,
                "dtype": self.dtype, "views_per_shard": self.views_per_shard,
                "mix": mix.to_dict() if mix.enabled else None}


# BuildConfig fields `extend` and `build --views-from` take from a store, never from the
# command line.
RECORDED = ("sampler", "frames", "size", "seed", "dtype", "features", "mixup", "cutmix",
            "mix_prob", "views_per_shard")


def recorded_settings(meta: CacheMeta) -> dict[str, Any]:
    """The BuildConfig values a store was built with (all but the teacher and the videos)."""
    params = dict(meta.sampler.params)
    size = params.pop("size")
    mix = meta.mix
    return {"sampler": {k: v for k, v in params.items() if k not in ("num_frames", "mode",
                                                                    "seed")},
            "frames": meta.num_frames, "size": int(size), "seed": meta.sampler.seed,
            "dtype": meta.dtype, "features": meta.feature_dim is not None,
            "mixup": mix.mixup if mix else 0.0, "cutmix": mix.cutmix if mix else 0.0,
            "mix_prob": mix.prob if mix else 1.0, "views_per_shard": meta.views_per_shard}
