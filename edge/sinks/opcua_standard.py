"""asyncua's standard address space, built once, then loaded from the cache folder.

asyncua builds the standard address space (~6,200 nodes: the OPC-UA types, the Server
object) in Python, node by node, on every start: 0.8-0.9 s of CPU (2 s with the garbage
collector on), the largest single piece of the daemon's start-up. Loading the same nodes
from a pickle takes about 0.35 s. asyncua's own cache, ``Server.init(shelf_file)``, does
not help here: it is a ``shelve`` file, and with a Python built without gdbm/ndbm it falls
back to ``dbm.dumb``, whose files asyncua never recognises as existing, so it rebuilds
the space *and* rewrites the shelf on every start (slower than no cache).

Invariants:

* The file holds the space exactly as asyncua's ``fill_address_space`` left it, before
  ``init`` applies its fixes and before any node of ours: a server that loads it and then
  runs the rest of ``init`` has the same address space as one that built it
  (tests/unit/test_opcua_space.py compares every attribute and reference).
* The file name carries the asyncua and Python versions; a file of another version is
  never read, and is deleted when the current one is written.
* Written atomically (temporary file, fsync, rename), mode 0600. A file that does not
  load, or does not look like a standard address space, is rebuilt (and logged); a cache
  that cannot be written is logged. Neither stops the server.
* It is a pickle, read only from the daemon's cache folder (``cache_folder``) and only
  when the file belongs to the daemon's user and nobody else can write it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncua
import structlog
from asyncua import Server, ua
from asyncua.server.internal_server import InternalServer

log = structlog.get_logger("edge.opcua")

PREFIX = "standard-address-space-"
MIN_NODES = 1000  # asyncua 2.1 has 6,174; a file with far fewer is not a standard space


def cache_folder(state_dir: Path) -> Path:
    """The daemon's start-up cache folder, as for the numba kernels (``edge.cli``):
    systemd's ``CacheDirectory=`` (``$CACHE_DIRECTORY``), else ``<state_dir>/cache``."""
    base = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    return (Path(base) if base else state_dir / "cache") / "opcua"


def cache_path(folder: Path) -> Path:
    """The cache file for the running asyncua and Python versions."""
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    return folder / f"{PREFIX}asyncua{asyncua.__version__}-py{py}.pickle"


def server(cache_folder: Path) -> Server:
    """A ``Server`` whose ``init()`` loads the standard address space from
    ``cache_folder`` when it can, and builds and stores it there when it cannot."""
    return Server(iserver=_CachingInternalServer(cache_path(cache_folder)))


class _CachingInternalServer(InternalServer):  # type: ignore[misc]  # asyncua is untyped here
    def __init__(self, path: Path) -> None:
        super().__init__()
        self._cache = path

    async def load_standard_address_space(self, shelf_file: Path | None = None) -> None:
        if shelf_file is not None:
            await super().load_standard_address_space(shelf_file)
            return
        with _collection_paused():
            if self._load():
                return
            await super().load_standard_address_space(None)
            await asyncio.to_thread(self._store)

    def _load(self) -> bool:
        path = self._cache
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("opcua standard address space cache unreadable", path=str(path),
                        error=str(exc))
            return False
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            log.warning("opcua standard address space cache ignored: not the daemon's own",
                        path=str(path), uid=st.st_uid, mode=oct(st.st_mode & 0o777))
            return False
        try:
            self.aspace.load(path)
            ok = (len(self.aspace.keys()) >= MIN_NODES
                  and ua.NodeId(ua.ObjectIds.Server) in self.aspace)
        except Exception as exc:  # a torn or foreign file: rebuild it
            log.warning("opcua standard address space cache rebuilt", path=str(path),
                        error=repr(exc))
            ok = False
        if not ok:
            self.aspace.clear()
        return ok

    def _store(self) -> None:
        path = self._cache
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            # The standard space has no method callbacks yet, so dump() drops nothing.
            self.aspace.dump(tmp)
            os.chmod(tmp, 0o600)
            with tmp.open("rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("opcua standard address space not cached", path=str(path),
                        error=str(exc))
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        for old in path.parent.glob(f"{PREFIX}*.pickle"):
            if old != path:
                with contextlib.suppress(OSError):
                    old.unlink()
        log.info("opcua standard address space cached", path=str(path))


@contextlib.contextmanager
def _collection_paused() -> Iterator[None]:
    """Tens of thousands of long-lived objects appear at once: collections in between
    would only walk them (they double the time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
