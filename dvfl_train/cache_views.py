"""Which of a cache's views a run cycles through: the first N per video, pinned with the run.

Why pinned: epoch e replays view (e - 1) mod N. A cache can grow (`dvfl-cache extend`), so
"all its views" is not a constant; a run records the N it started with in its config.json
(`views_subset`), and a resumed run keeps it, never silently replaying other views from the
next epoch on. Asking to resume with another N is refused in one line.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from dvfl_train.config import ConfigError, FitConfig
from dvfl_train.runfiles import CONFIG

__all__ = ["pin_cache_views"]

_UNRECORDED = object()  # a config.json from before views were pinned

log = logging.getLogger(__name__)


def _recorded(run_dir: str) -> object:
    path = Path(run_dir) / CONFIG
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # the run directory's own checks report it
    if not isinstance(data, dict):
        return None
    # null: a run from before views were pinned (config version 2), resumed once since
    recorded = data.get("views_subset")
    return _UNRECORDED if recorded is None else recorded


def views_for(cfg: FitConfig, cache_views: int, *, resume: bool) -> int | None:
    """N for one run directory; None: an unpinned run from an older dvfl (all the cache's)."""
    recorded = _recorded(cfg.out_dir) if resume else None
    want = cfg.views_subset
    if recorded is _UNRECORDED:
        if want is None:
            log.warning("%s: this run did not record its views per video; resuming with all "
                        "%d of the cache", cfg.out_dir, cache_views)
            return None
        recorded = None
    if want is None:
        want = recorded if recorded is not None else cache_views
    elif recorded is not None and want != recorded:
        raise ConfigError(f"{cfg.out_dir}: this run trained on {recorded} views per video; "
                          f"cannot resume it with --views-subset {want}")
    if want > cache_views:
        raise ConfigError(f"{cfg.out_dir}: {want} views per video, but the cache "
                          f"{', '.join(cfg.cache)} has {cache_views}"
                          + (" (recorded by the run)" if recorded else ""))
    return int(want)


def pin_cache_views(cfg: FitConfig, configs: list[FitConfig], cache_views: int, *,
                    resume: bool) -> tuple[FitConfig, list[FitConfig], int | None]:
    """`cfg` and every student's config with `views_subset` pinned, and N (None: unpinned)."""
    wanted = {views_for(c, cache_views, resume=resume) for c in configs}
    if len(wanted) > 1:
        raise ConfigError(f"{cfg.out_dir}: the students recorded different views per video "
                          f"({sorted(wanted, key=str)}); they share one data pass")
    views = wanted.pop()
    if views is None:
        return cfg, configs, None
    return (dataclasses.replace(cfg, views_subset=views),
            [dataclasses.replace(c, views_subset=views) for c in configs], views)
