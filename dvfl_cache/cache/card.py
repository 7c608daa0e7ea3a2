"""A dataset card for a cache: README.md with a YAML header, plus a sha256 manifest of its files.

Why this shape:
- Shared logits are a dataset; dataset hubs describe one with a README whose YAML header tools
  can read. Ours names the teacher (config, weights sha256), the data (kind, split, subset,
  index digest), the sampler, the layout, the teacher's top-1 on its own views, the commands
  that built the store and the one that checks it.
- Integrity travels with it: `manifest.sha256` lists every file's sha256 (`sha256sum -c`
  format, so a directory copy can be checked without dvfl) and the card holds the manifest's
  own digest, so `verify` can tell a tampered or incomplete copy from the original.
- The header is written as one `key: <JSON>` line per field. JSON flow values are valid YAML,
  so hub tooling reads it, and dvfl parses it back without a YAML dependency.
- Files are read through the store's own zarr store, so a card is made and checked the same way
  for a directory, a zip, or a URL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
from collections.abc import Callable, Iterable
from typing import Any

from dvfl_cache.cache.claims import CLAIMS_GROUP
from dvfl_cache.cache.format import FORMAT_NAME, FORMAT_VERSION
from dvfl_cache.errors import CacheError

log = logging.getLogger(__name__)

CARD_NAME = "README.md"
MANIFEST_NAME = "manifest.sha256"


def is_data_key(key: str) -> bool:
    """Files that make up the cache itself (what the manifest covers and `pack` copies)."""
    if key in (CARD_NAME, MANIFEST_NAME) or key.endswith(".partial"):
        return False
    # Claims are who-is-working bookkeeping; only the (empty) group node is part of the store.
    return not (key.startswith(f"{CLAIMS_GROUP}/") and key != f"{CLAIMS_GROUP}/zarr.json")


def store_keys(reader) -> list[str]:
    from zarr.core.sync import sync

    reader._group()

    async def collect() -> list[str]:
        return [k async for k in reader._store.list()]

    return sorted(sync(collect()))


def store_get(reader, key: str) -> bytes | None:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    reader._group()
    buf = sync(reader._store.get(key, default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def file_digests(reader, keys: Iterable[str] | None = None,
                 progress: Callable[[int], None] | None = None,
                 sizes: dict[str, int] | None = None) -> dict[str, str]:
    """key -> sha256 hex of every data file of the store (and key -> bytes into `sizes`)."""
    out = {}
    for key in (store_keys(reader) if keys is None else keys):
        if not is_data_key(key):
            continue
        data = store_get(reader, key)
        if data is None:
            continue
        out[key] = hashlib.sha256(data).hexdigest()
        if sizes is not None:
            sizes[key] = len(data)
        if progress is not None:
            progress(1)
    return out


def manifest_text(digests: dict[str, str]) -> str:
    return "".join(f"{h}  {k}\n" for k, h in sorted(digests.items()))


def manifest_digest(digests: dict[str, str]) -> str:
    return "sha256:" + hashlib.sha256(manifest_text(digests).encode()).hexdigest()


def card_fields(reader, digests: dict[str, str], *, address: str,
                size_bytes: int) -> dict[str, Any]:
    from dvfl_cache import __version__
    from dvfl_cache.cache.accuracy import teacher_accuracy

    m = reader.meta
    done = reader.shard_done()
    acc = teacher_accuracy(reader)
    # A multi-rank build is shown as one node's torchrun with all its ranks (on several nodes,
    # the same command under --nnodes with the ranks split between them).
    commands = [r["command"] if r.get("world_size", 1) <= 1 else
                ["torchrun", "--nproc-per-node", str(r["world_size"]), "-m", "dvfl_cache.cli",
                 *r["command"][1:]] for r in reader.build_records()]
    return {
        "pretty_name": f"{m.teacher.name} teacher logits on {m.dataset.kind} split "
                       f"{m.dataset.split} {m.dataset.subset}",
        "tags": ["knowledge-distillation", "teacher-logits", "video-classification", "zarr"],
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "teacher": {"name": m.teacher.name, "weights_sha256": m.teacher.weights_sha256,
                    "config": m.teacher.config},
        "dataset": {"kind": m.dataset.kind, "split": m.dataset.split,
                    "subset": m.dataset.subset, "index_digest": m.dataset.index_digest,
                    "num_classes": m.num_classes, "num_videos": m.num_videos},
        "sampler": m.sampler.to_dict(),
        "views_per_video": m.views_per_video,
        "num_rows": m.num_rows,
        "num_frames": m.num_frames,
        "dtype": m.dtype,
        "feature_dim": m.feature_dim,
        "views_per_shard": m.views_per_shard,
        "shards": {"total": m.num_shards, "done": int(done.sum())},
        "size_bytes": size_bytes,
        "valid_rows": acc["valid_rows"],
        "teacher_top1": acc["teacher_top1"],
        "teacher_top5": acc["teacher_top5"],
        "manifest": {"file": MANIFEST_NAME, "files": len(digests),
                     "sha256": manifest_digest(digests)},
        "dvfl_version": m.dvfl_version,
        "created": m.created,
        "card_dvfl_version": __version__,
        "built_with": [shlex.join(c) for c in commands],
        "verify_with": [f"dvfl-cache verify {address}"],
    }


def _teacher_input_text(fields: dict[str, Any]) -> str:
    """The preprocessing an hf:/py: teacher was fed (its record in the header's config)."""
    cin = (fields.get("teacher") or {}).get("config", {}).get("input")
    if not isinstance(cin, dict) or not str(fields["teacher"].get("name", "")).startswith(
            ("hf:", "py:")):
        return ""
    return (f"The teacher was fed {cin['frames']}-frame {cin['size']}px clips, "
            f"{cin['layout']}, normalised with mean {cin['mean']} and std {cin['std']} "
            f"(from {cin['source']}).\n\n")


def render_card(fields: dict[str, Any]) -> str:
    header = "".join(f"{k}: {json.dumps(v, sort_keys=k in ('sampler', 'teacher'))}\n"
                     for k, v in fields.items())
    top1 = fields["teacher_top1"]
    acc = "n/a" if top1 is None else f"{100 * top1:.2f}%"
    built = "\n".join(f"    {c}" for c in fields["built_with"]) or "    (not recorded)"
    return (
        f"---\n{header}---\n\n# {fields['pretty_name']}\n\n"
        f"Raw teacher logits ({fields['dtype']}) for {fields['num_rows']} sampled views "
        f"({fields['views_per_video']} per video, {fields['num_frames']} frames each) of "
        f"{fields['dataset']['num_videos']} videos, stored as a sharded, checksummed Zarr v3 "
        f"store (format `{fields['format']}` version {fields['format_version']}; see dvfl's "
        f"docs/cache-format.md). The teacher's top-1 on its own views is {acc} over "
        f"{fields['valid_rows']} valid views.\n\n"
        f"{_teacher_input_text(fields)}"
        f"Built with:\n\n{built}\n\n"
        f"Check a copy against this card (every file's sha256 is in `{MANIFEST_NAME}`):\n\n"
        + "\n".join(f"    {c}" for c in fields["verify_with"]) + "\n\n"
        "Train a student from it: `dvfl-train fit --cache <this store> ...`.\n")


def parse_card(text: str, *, source: str) -> dict[str, Any]:
    lines = text.splitlines()
    if not lines or lines[0] != "---" or "---" not in lines[1:]:
        raise CacheError(f"{source}: {CARD_NAME} has no YAML header")
    out = {}
    for line in lines[1:lines.index("---", 1)]:
        key, sep, value = line.partition(": ")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            raise CacheError(f"{source}: {CARD_NAME}: cannot read field {key!r}") from None
    return out


def make_card(reader, *, address: str, progress: Callable[[int], None] | None = None
              ) -> tuple[str, str, dict[str, Any]]:
    """(README.md text, manifest.sha256 text, header fields) for the store `reader` reads."""
    sizes: dict[str, int] = {}
    digests = file_digests(reader, progress=progress, sizes=sizes)
    fields = card_fields(reader, digests, address=address, size_bytes=sum(sizes.values()))
    return render_card(fields), manifest_text(digests), fields


def card_problems(reader) -> tuple[dict[str, Any] | None, list[str]]:
    """(card header or None when the store has no card, problems found comparing the store
    with its card and manifest)."""
    raw = store_get(reader, CARD_NAME)
    if raw is None:
        return None, []
    where = str(reader.location)
    fields = parse_card(raw.decode("utf-8", "replace"), source=where)
    problems: list[str] = []
    m = reader.meta
    expect = {"format_version": FORMAT_VERSION, "dtype": m.dtype, "num_rows": m.num_rows,
              "views_per_video": m.views_per_video,
              "teacher": {"name": m.teacher.name, "weights_sha256": m.teacher.weights_sha256,
                          "config": m.teacher.config},
              "dataset": {"kind": m.dataset.kind, "split": m.dataset.split,
                          "subset": m.dataset.subset, "index_digest": m.dataset.index_digest,
                          "num_classes": m.num_classes, "num_videos": m.num_videos},
              "sampler": m.sampler.to_dict()}
    if (fields.get("num_rows"), fields.get("views_per_video")) != (m.num_rows, m.views_per_video):
        # Grown by `extend` after the card was written: every file differs; say that once.
        return fields, [f"written for {fields.get('views_per_video')} views per video "
                        f"({fields.get('num_rows')} rows), the store now has "
                        f"{m.views_per_video} ({m.num_rows}), extended after its card; write "
                        f"the card again with `dvfl-cache card {where}`"]
    for key, want in expect.items():
        if json.dumps(fields.get(key), sort_keys=True) != json.dumps(want, sort_keys=True):
            problems.append(f"card field '{key}' says {json.dumps(fields.get(key))[:80]}, the "
                            f"store has {json.dumps(want)[:80]}")
    digests = file_digests(reader)
    recorded = (fields.get("manifest") or {}).get("sha256")
    if recorded != manifest_digest(digests):
        listed = store_get(reader, MANIFEST_NAME)
        if listed is None:
            problems.append(f"manifest digest differs from the card and {MANIFEST_NAME} is "
                            "missing")
        else:
            want = {}
            for line in listed.decode().splitlines():
                h, _, k = line.partition("  ")
                want[k] = h
            if manifest_digest(want) != recorded:
                problems.append(f"{MANIFEST_NAME} does not match the card's manifest digest")
            changed = sorted(k for k in set(want) | set(digests) if want.get(k) != digests.get(k))
            for k in changed[:10]:
                what = ("missing" if k not in digests else "not in the manifest"
                        if k not in want else "differs from the manifest")
                problems.append(f"file {k} {what}")
            if len(changed) > 10:
                problems.append(f"... and {len(changed) - 10} more files differ")
    from dvfl_cache.cache.accuracy import teacher_accuracy

    top1 = teacher_accuracy(reader)["teacher_top1"]
    said = fields.get("teacher_top1")
    if (said is None) != (top1 is None) or (top1 is not None and abs(said - top1) > 1e-9):
        problems.append(f"card says teacher top-1 {said}, the stored logits give {top1}")
    return fields, problems
