"""asyncua's standard address space, built once, then loaded from the cache folder.

asyncua builds the standard address space (6,174 nodes: the OPC-UA types, the Server
object) in Python, node by node, on every start: 0.8-0.9 s of CPU (2 s with the garbage
collector on), the largest single piece of the daemon's start-up. The cache holds each
node pickled on its own; a server loads the file (~20 ms) and unpickles a node the first
time it is looked up (``LazyNodes``; a server at READY has touched about 60). Writing the
cache costs about 1 s once (first start, or a new asyncua). asyncua's own cache,
``Server.init(shelf_file)``, does not help here: it is a ``shelve`` file, and with a Python
built without gdbm/ndbm it falls back to ``dbm.dumb``, whose files asyncua never
recognises as existing, so it rebuilds the space *and* rewrites the shelf on every start.

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
import pickle
import sys
from collections.abc import Iterator, MutableMapping
from pathlib import Path

import asyncua
import structlog
from asyncua import Server, ua
from asyncua.server.address_space import NodeData
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
            with path.open("rb") as f:
                blobs = pickle.load(f)
            if not (isinstance(blobs, dict) and len(blobs) >= MIN_NODES):
                raise ValueError(f"not a standard address space ({type(blobs).__name__})")
            nodes = LazyNodes(blobs)
            server = ua.NodeId(ua.ObjectIds.Server)
            if nodes[server].nodeid != server:
                raise ValueError("the Server object is not where it belongs")
        except Exception as exc:  # a torn or foreign file: rebuild it
            log.warning("opcua standard address space cache rebuilt", path=str(path),
                        error=repr(exc))
            return False
        # The way asyncua's own lazy shelf (AddressSpace.load_aspace_shelf) installs its
        # mapping; test_cached_standard_space_is_the_one_asyncua_builds would catch a change.
        self.aspace._nodes = nodes
        return True

    def _store(self) -> None:
        path = self._cache
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        aspace = self.aspace
        try:
            # The standard space has no method callbacks yet: every node pickles.
            blobs = {(nid.NamespaceIndex, nid.Identifier): pickle.dumps(
                aspace[nid], pickle.HIGHEST_PROTOCOL) for nid in list(aspace.keys())}
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                pickle.dump(blobs, f, pickle.HIGHEST_PROTOCOL)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except (OSError, pickle.PicklingError, TypeError, AttributeError) as exc:
            log.warning("opcua standard address space not cached", path=str(path),
                        error=repr(exc))
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        for old in path.parent.glob(f"{PREFIX}*.pickle"):
            if old != path:
                with contextlib.suppress(OSError):
                    old.unlink()
        log.info("opcua standard address space cached", path=str(path))


class LazyNodes(MutableMapping[ua.NodeId, NodeData]):
    """asyncua's node table for a cached standard space: each node stays a pickle until it
    is first looked up (a server at READY has touched about 60 of the 6,174).

    Lookups of loaded nodes cost one dict lookup more than asyncua's plain dict; every
    mapping operation sees every node (iterating the keys loads none: asyncua scans them
    to number new nodes).
    """

    __slots__ = ("_blobs", "_nodes")

    def __init__(self, blobs: dict[tuple[int, object], bytes]) -> None:
        self._blobs = blobs
        self._nodes: dict[ua.NodeId, NodeData] = {}

    def __getitem__(self, key: ua.NodeId) -> NodeData:
        try:
            return self._nodes[key]
        except KeyError:
            pass
        try:
            ident = (key.NamespaceIndex, key.Identifier)
            blob = self._blobs[ident]
        except (KeyError, AttributeError):
            raise KeyError(key) from None
        node: NodeData = pickle.loads(blob)
        self._nodes[key] = node
        del self._blobs[ident]
        return node

    def get(self, key: ua.NodeId, default: NodeData | None = None  # type: ignore[override]
            ) -> NodeData | None:
        node = self._nodes.get(key)
        if node is not None:
            return node
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        if key in self._nodes:
            return True
        ident = (getattr(key, "NamespaceIndex", None), getattr(key, "Identifier", None))
        return ident in self._blobs

    def __setitem__(self, key: ua.NodeId, value: NodeData) -> None:
        self._blobs.pop((key.NamespaceIndex, key.Identifier), None)
        self._nodes[key] = value

    def __delitem__(self, key: ua.NodeId) -> None:
        self[key]  # loads it, or raises KeyError
        del self._nodes[key]

    def __iter__(self) -> Iterator[ua.NodeId]:
        # A snapshot: callers look nodes up while they iterate (which loads them).
        keys = [*self._nodes, *(ua.NodeId(ident, ns) for ns, ident in self._blobs)]
        return iter(keys)

    def __len__(self) -> int:
        return len(self._nodes) + len(self._blobs)


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
