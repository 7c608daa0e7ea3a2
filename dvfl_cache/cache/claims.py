"""Shard claims: how concurrent writers (resumed builds, torchrun ranks, machines with no shared
disk) split a store's pending shards without a lock server and without rename.

Why this shape:
- Object stores have no rename and no locks, but they (and local disks) can create a key only if
  it is absent (S3 `PUT If-None-Match: *`, a local hard link). That is the whole mechanism:
  claiming shard `s` is creating `claims/<s>/<gen>.json`; whoever creates it owns the shard.
- A claimant that dies must not hold its shard forever. Every claim says who holds it
  (host, pid, a random token) and until when (`expires`, wall clock); a heartbeat thread pushes
  the expiry forward while the shard is being computed. A claim past its expiry, or held by a
  pid on this host that no longer runs, is dead: it is retaken by creating the next
  generation `claims/<s>/<gen + 1>.json`, which again only one process can do.
  A writer that has written its shard gives the claim up at once (`release` rewrites it with
  `expires` 0), so nobody waits out the expiry of a claim on a finished shard.
- The newest generation is the owner. A writer checks it still owns its shard before writing,
  and the shard's `shard_done` flag remains the only completion record (claims are advisory
  bookkeeping about who is working, never about what is finished).
- Clocks on different machines only need to agree to well within the time to live (default
  120 s); a skewed clock makes a claim look dead early (two writers of the same shard: they
  write the same bytes) or late (a dead claim is retaken later).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dvfl_cache.cache.location import storage_error
from dvfl_cache.errors import CacheError

log = logging.getLogger(__name__)

CLAIMS_GROUP = "claims"
DEFAULT_TTL_S = 120.0

# Backends whose create-if-absent is atomic and was checked against a real server (moto's S3
# server in the tests; AWS S3 and MinIO document `If-None-Match: *` on PUT).
_ATOMIC_CREATE = ("s3", "s3a", "file", "local")


@dataclass(frozen=True)
class Claim:
    shard: int
    gen: int
    host: str
    pid: int
    token: str
    expires: float

    def describe(self) -> str:
        left = self.expires - time.time()
        return (f"shard {self.shard} held by {self.host} pid {self.pid} "
                f"({'expired' if left < 0 else f'fresh for {left:.0f} s'})")


def _protocol(fs) -> str:
    p = fs.protocol
    return p[0] if isinstance(p, (tuple, list)) else p


def is_local_fs(fs) -> bool:
    return _protocol(fs) in ("file", "local")


def create_exclusive(fs, path: str, data: bytes) -> bool:
    """Write `data` to `path` only if nothing is there; False if something already was.

    Local disk: write a temporary file, then hard-link it into place (link fails if the name
    exists), so the key appears whole or not at all. Object stores: a conditional PUT
    (fsspec `mode="create"`, which s3fs sends as `If-None-Match: *`).
    """
    if is_local_fs(fs):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.partial"
        with open(tmp, "wb") as f:
            f.write(data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
    try:
        fs.pipe_file(path, data, mode="create")
        return True
    except FileExistsError:
        return False
    except Exception as e:
        raise storage_error(path, e) from None


def put_atomic(fs, path: str, data: bytes) -> None:
    """Overwrite `path` so readers see the old or the new bytes, never a torn file."""
    if is_local_fs(fs):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.partial"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return
    try:
        fs.pipe_file(path, data)
    except Exception as e:
        raise storage_error(path, e) from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ShardClaims:
    """Create-if-absent claims on the shards of the store at (fs, root), with a heartbeat."""

    def __init__(self, fs, root: str, *, ttl_s: float = DEFAULT_TTL_S):
        if ttl_s <= 0:
            raise CacheError(f"claim time to live must be > 0 s, got {ttl_s}")
        self.fs, self.root, self.ttl_s = fs, root.rstrip("/"), float(ttl_s)
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.token = uuid.uuid4().hex
        self._held: dict[int, int] = {}  # shard -> generation we created
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if _protocol(fs) not in _ATOMIC_CREATE:
            log.warning("%s: create-if-absent on %s:// is only as atomic as its fsspec backend "
                        "makes it (checked for s3:// and local disks); concurrent writers may "
                        "both compute a shard (they write the same bytes)", root,
                        _protocol(fs))

    # --- reading claims ---
    def _dir(self, s: int) -> str:
        return f"{self.root}/{CLAIMS_GROUP}/{s}"

    def _key(self, s: int, gen: int) -> str:
        return f"{self._dir(s)}/{gen:06d}.json"

    def newest(self, s: int) -> Claim | None:
        """The newest claim on shard `s` (its owner, dead or alive), or None."""
        d = self._dir(s)
        try:
            self.fs.invalidate_cache(d)
            names = self.fs.ls(d, detail=False)
        except FileNotFoundError:
            return None
        except Exception as e:
            raise storage_error(d, e) from None
        gens = sorted(int(n.rsplit("/", 1)[-1][:-5]) for n in names
                      if n.endswith(".json") and n.rsplit("/", 1)[-1][:-5].isdigit())
        if not gens:
            return None
        return self._read(s, gens[-1])

    def _read(self, s: int, gen: int) -> Claim:
        key = self._key(s, gen)
        try:
            d = json.loads(self.fs.cat_file(key))
            return Claim(shard=s, gen=gen, host=str(d["host"]), pid=int(d["pid"]),
                         token=str(d["token"]), expires=float(d["expires"]))
        except FileNotFoundError:
            raise CacheError(f"{key}: claim vanished while being read") from None
        except (ValueError, KeyError, TypeError):
            # Unreadable claims are treated as dead: they can only come from a foreign writer.
            return Claim(shard=s, gen=gen, host="?", pid=-1, token="?", expires=0.0)

    def is_live(self, c: Claim) -> bool:
        if c.token == self.token:
            return True
        if c.expires < time.time():
            return False
        if c.host == self.host and not _pid_alive(c.pid):
            return False  # killed on this machine: no need to wait for the expiry
        return True

    def live_foreign(self, shards) -> list[Claim]:
        """Claims of other processes that are still alive, among `shards`."""
        out = []
        for s in shards:
            c = self.newest(s)
            if c is not None and c.token != self.token and self.is_live(c):
                out.append(c)
        return out

    # --- taking and holding claims ---
    def _payload(self, *, expires: float | None = None) -> bytes:
        return json.dumps({"host": self.host, "pid": self.pid, "token": self.token,
                           "expires": time.time() + self.ttl_s if expires is None
                           else expires}).encode()

    def try_claim(self, s: int, *, unless: Callable[[], bool] | None = None) -> bool:
        """Own shard `s` now, or False when a live process owns it (or won the race).

        `unless` is asked after the last claim was found dead and before the next generation
        is taken; True gives up (see `claim_pending`)."""
        c = self.newest(s)
        if c is not None and self.is_live(c):
            return c.token == self.token
        if c is not None and unless is not None and unless():
            return False
        gen = 0 if c is None else c.gen + 1
        if not create_exclusive(self.fs, self._key(s, gen), self._payload()):
            return False
        with self._lock:
            self._held[s] = gen
        if c is not None:
            log.info("took over %s", c.describe())
        self._ensure_heartbeat()
        return True

    def claim_pending(self, s: int, is_done: Callable[[int], bool]) -> bool:
        """Own shard `s` to compute it; False when it is done or another process holds it.

        Its done flag is looked at three times, each closing a race with a writer finishing
        `s` meanwhile (it marks it done, then releases its claim): first (the common case,
        one read); after finding that writer's claim released and before taking a new claim
        generation (a released claim almost always means the shard was just finished: no
        claim taken for nothing, so every shard of a fresh build is claimed exactly once); and
        after claiming (finished between the looks: the claim is given back)."""
        if is_done(s) or not self.try_claim(s, unless=lambda: is_done(s)):
            return False
        if is_done(s):
            self.release(s)
            return False
        return True

    def take_over(self, s: int) -> bool:
        """Own shard `s` with a newer claim even if its last claimant looks alive: for a shard
        marked done, whose claimant released it (`build --repair`). A writer still holding the
        older claim finds it superseded (`holds`) and does not write. False: lost a race."""
        c = self.newest(s)
        gen = 0 if c is None else c.gen + 1
        if not create_exclusive(self.fs, self._key(s, gen), self._payload()):
            return False
        with self._lock:
            self._held[s] = gen
        self._ensure_heartbeat()
        return True

    def holds(self, s: int) -> bool:
        """Whether our claim on `s` is still the newest (nobody took it over)."""
        with self._lock:
            if s not in self._held:
                return False
        c = self.newest(s)
        return c is not None and c.token == self.token

    def release(self, s: int) -> None:
        """Give `s` up (its shard is written; the done flag now speaks for it): stop renewing
        the claim and mark it expired, so that nobody waits for it. Without the mark a released
        claim looked alive until its expiry while this process ran on: another builder in the
        same process (a script building then extending, `build --repair`, tests) or on another
        machine waited up to `ttl_s` for a shard nobody was computing."""
        with self._lock:
            gen = self._held.pop(s, None)
            if gen is None:
                return
            try:  # our own generation only: a newer claimant's file is never touched
                put_atomic(self.fs, self._key(s, gen), self._payload(expires=0.0))
            except Exception as e:  # only a wait (until ttl_s) for others, never wrong
                log.warning("could not mark the claim on shard %d released: %s", s, e)

    def _ensure_heartbeat(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name="dvfl-claims-heartbeat",
                                            daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            with self._lock:
                held = dict(self._held)
            for s, gen in held.items():
                with self._lock:  # never renew a claim `release` has marked expired meanwhile
                    if self._held.get(s) != gen:
                        continue
                    try:
                        put_atomic(self.fs, self._key(s, gen), self._payload())
                    except Exception as e:  # a missed beat is retried; expiry is ttl_s away
                        log.warning("claim heartbeat for shard %d failed: %s", s, e)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None

    def __enter__(self) -> ShardClaims:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
