"""Cache of decoded datasets as memory-mapped ``.npy`` arrays.

Layout: ``<cache root>/<source name>-<hash of the source's resolved path>/`` holding one
``.npy`` file per array and a ``meta.json`` with the source path, a fingerprint of the
source (size + mtime_ns of an archive, or a hash of a folder's file list), and for each
array its shape, dtype, file size, mtime_ns and sha256.

Cache root: the ``cache_dir`` argument, else ``$MEMDISTILL_CACHE``, else ``~/.cache/memdistill``.

Every load makes cheap checks only (files exist; shapes, dtypes and byte sizes match
meta.json). An array file whose mtime changed since it was written is re-hashed, which
catches in-place edits without hashing gigabytes on every load.

On a problem:

* the source fingerprint (or cache format) changed -> the entry is rebuilt silently;
* an array is missing or does not match meta.json -> a warning, then the entry is rebuilt;
* meta.json itself is unreadable -> :class:`DataCorruptError` (the cache was not written
  by us, or the disk is failing: the user should look, then delete the folder).

Entries are built in a temporary folder next to the final one and moved into place
with ``os.replace``, so an interrupted build never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .archive import DataCorruptError, file_digest

CACHE_VERSION = 1
META = "meta.json"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("MEMDISTILL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "memdistill"


def source_fingerprint(path: Path) -> str:
    """Cheap identity of the raw data: size+mtime of a file, or of every file under a folder."""
    path = Path(path)
    if path.is_file():
        st = path.stat()
        return f"file:{st.st_size}:{st.st_mtime_ns}"
    h = hashlib.sha256()
    count = 0
    for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
        dirnames.sort()
        for fn in sorted(filenames):
            full = os.path.join(dirpath, fn)
            try:
                st = os.stat(full)
            except OSError:  # dangling symlink
                continue
            h.update(f"{os.path.relpath(full, path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            count += 1
    return f"tree:{count}:{h.hexdigest()[:32]}"


def entry_dir(name: str, source: Path, cache_dir=None) -> Path:
    key = hashlib.sha256(str(Path(source).resolve()).encode()).hexdigest()[:12]
    return cache_root(cache_dir) / f"{name}-{key}"


class CacheWriter:
    """Hands out writable arrays inside the temporary entry folder of a build."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.names: list[str] = []

    def create(self, key: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """A writable memory-mapped array; large outputs never have to fit in RAM."""
        self.names.append(key)
        return np.lib.format.open_memmap(self.folder / f"{key}.npy", mode="w+", dtype=dtype, shape=tuple(shape))

    def put(self, key: str, array: np.ndarray) -> None:
        out = self.create(key, array.shape, array.dtype)
        out[...] = array
        out.flush()
        del out


def load_or_build(name: str, source: Path, build: Callable[[CacheWriter], dict], cache_dir=None
                  ) -> tuple[dict[str, np.ndarray], dict]:
    """Return ``(arrays, meta)`` for ``source``, decoding it with ``build`` only when needed.

    ``build(writer)`` fills arrays through ``writer`` and returns extra JSON-able info
    (class names, ...) that is stored in, and returned as part of, the meta dict.
    Arrays are opened with ``np.load(mmap_mode="r")``.
    """
    source = Path(source).resolve()
    folder = entry_dir(name, source, cache_dir)
    fingerprint = source_fingerprint(source)
    if folder.exists():
        meta = read_meta(folder)
        if (meta.get("version") == CACHE_VERSION and meta.get("source") == str(source)
                and meta.get("fingerprint") == fingerprint):
            arrays, problem = _open_arrays(folder, meta)
            if problem is None:
                return arrays, meta
            warnings.warn(f"cache {folder}: {problem}; rebuilding it from {source}", stacklevel=3)
    _build(folder, name, source, fingerprint, build)
    meta = read_meta(folder)
    arrays, problem = _open_arrays(folder, meta)
    if problem is not None:  # we just wrote it: something is badly wrong with the disk
        raise DataCorruptError(f"cache {folder}: {problem} right after writing it; check the disk, "
                               f"delete {folder} and try again")
    return arrays, meta


def read_meta(folder: Path) -> dict:
    path = Path(folder) / META
    try:
        meta = json.loads(path.read_text())
        if not isinstance(meta, dict) or not isinstance(meta.get("arrays"), dict):
            raise ValueError("no 'arrays' table")
        return meta
    except (OSError, ValueError) as e:
        raise DataCorruptError(
            f"{path}: cache metadata is unreadable ({e}). Delete the folder {folder} "
            "(it is only a cache; it will be rebuilt from the raw data).") from e


def _open_arrays(folder: Path, meta: dict) -> tuple[dict[str, np.ndarray], str | None]:
    """Cheap consistency checks; returns (arrays, None) or ({}, what is wrong)."""
    arrays = {}
    rehashed = False
    for key, info in meta["arrays"].items():
        path = folder / f"{key}.npy"
        try:
            st = path.stat()
            if st.st_size != info["nbytes"]:
                return {}, f"{path.name} has {st.st_size} bytes, expected {info['nbytes']}"
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError, KeyError) as e:
            return {}, f"{path.name} cannot be opened ({e})"
        if list(arr.shape) != info["shape"] or str(arr.dtype) != info["dtype"]:
            return {}, f"{path.name} is {arr.dtype}{list(arr.shape)}, expected {info['dtype']}{info['shape']}"
        if st.st_mtime_ns != info["mtime_ns"]:
            # modified (or copied) since written: only a full hash can tell which
            if file_digest(path) != info["sha256"]:
                return {}, f"{path.name} content does not match its recorded sha256"
            info["mtime_ns"] = st.st_mtime_ns
            rehashed = True
        arrays[key] = arr
    if rehashed:
        try:
            _write_json(folder / META, meta)
        except OSError:
            pass  # read-only cache: re-hash again next time, still correct
    return arrays, None


def verify(folder: Path) -> None:
    """Full check: re-hash every array of a cache entry (slow; not done on normal loads)."""
    meta = read_meta(folder)
    for key, info in meta["arrays"].items():
        path = Path(folder) / f"{key}.npy"
        if not path.exists() or file_digest(path) != info["sha256"]:
            raise DataCorruptError(f"{path}: missing or does not match its recorded sha256; "
                                   f"delete {folder} to rebuild it")


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _build(folder: Path, name: str, source: Path, fingerprint: str, build) -> None:
    root = folder.parent
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=root))
    try:
        writer = CacheWriter(tmp)
        extra = build(writer)
        arrays = {}
        for key in writer.names:
            path = tmp / f"{key}.npy"
            arr = np.load(path, mmap_mode="r")
            st = path.stat()
            arrays[key] = {"shape": list(arr.shape), "dtype": str(arr.dtype), "nbytes": st.st_size,
                           "mtime_ns": st.st_mtime_ns, "sha256": file_digest(path)}
            del arr
        meta = {"version": CACHE_VERSION, "name": name, "source": str(source), "fingerprint": fingerprint,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "arrays": arrays, **extra}
        _write_json(tmp / META, meta)
        # A directory can only replace an empty one: move the old entry aside first.
        old = None
        if folder.exists():
            old = root / f".old-{folder.name}-{os.getpid()}-{time.monotonic_ns()}"
            try:
                os.rename(folder, old)
            except FileNotFoundError:
                old = None
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / META).exists():  # not a concurrent build that won the race
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale_temps(root: Path, max_age_s: float = 24 * 3600) -> None:
    """Leftovers of builds killed hard (SIGKILL, power loss); old enough to be surely dead."""
    now = time.time()
    for p in root.glob(".tmp-*"):
        try:
            if now - p.stat().st_mtime > max_age_s:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass
    for p in root.glob(".old-*"):
        shutil.rmtree(p, ignore_errors=True)
