"""Read image files from a folder tree or an archive (tar, tar.gz, zip), safely.

Archives are read member by member straight into memory; nothing is ever
extracted to disk, so a hostile member name cannot write anywhere. Names that
are absolute or contain ``..`` are still rejected (they signal a broken or
malicious archive), and anything that is not a regular file (directories,
symlinks, hard links, devices) is skipped.

The error classes live here, the lowest layer of the data package, so that
every module (and the decoding worker processes) can raise them;
:mod:`memdistill.data.sources` re-exports them as their public home.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})

Parts = tuple[str, ...]


class DataError(Exception):
    """Base class for data problems the user can fix."""


class DataNotFoundError(DataError):
    """The data was not found anywhere it was looked for."""


class DataCorruptError(DataError):
    """The data (or its cache) exists but is broken."""


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def safe_parts(name: str, archive: Path) -> Parts:
    """Split a member name into path components, rejecting unsafe names."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise DataCorruptError(
            f"{archive}: member {name!r} has an absolute path; refusing to read this archive. "
            "Re-create it with relative paths (e.g. `tar -C <folder> -czf ... .`).")
    parts = tuple(p for p in re.split(r"[/\\]", name) if p not in ("", "."))
    if ".." in parts:
        raise DataCorruptError(
            f"{archive}: member {name!r} contains a '..' component; refusing to read this archive. "
            "Re-create it from a plain folder tree.")
    return parts


def _skipped(parts: Parts) -> bool:
    # Hidden files and macOS resource forks ("._x.png", "__MACOSX/") are not images.
    return not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts)


class _CountingReader:
    """File wrapper that hashes and counts the bytes the tar stream pulls through it."""

    def __init__(self, f, digest, bar):
        self._f, self.digest, self._bar = f, digest, bar
        self.name = getattr(f, "name", None)

    def read(self, n: int = -1) -> bytes:
        b = self._f.read(n)
        if self.digest is not None:
            self.digest.update(b)
        self._bar.update(len(b))
        return b


def iter_files(path: Path, keep: Callable[[Parts], bool], *, expected_sha256: str | None = None,
               progress: bool = False, desc: str | None = None) -> Iterator[tuple[Parts, bytes]]:
    """Yield ``(path components, file bytes)`` for the regular files of a folder or archive.

    Only files for which ``keep(parts)`` is true are read. Tar archives (any compression)
    are read in one streaming pass (``r|*``: no seeking in gzip). If ``expected_sha256``
    is given, the archive's bytes are hashed on the way and checked once the caller has
    consumed the whole iterator.
    """
    path = Path(path)
    desc = desc or f"reading {path.name}"
    if path.is_dir():
        yield from _iter_folder(path, keep, progress, desc)
    elif path.name.lower().endswith(".zip"):
        yield from _iter_zip(path, keep, expected_sha256, progress, desc)
    else:
        yield from _iter_tar(path, keep, expected_sha256, progress, desc)


def _iter_folder(root: Path, keep, progress, desc):
    files = []
    # Symlinks are followed here: a folder tree is the user's own files (e.g. a linked disk).
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        rel = Path(dirpath).relative_to(root).parts
        for fn in sorted(filenames):
            parts = rel + (fn,)
            if not _skipped(parts) and keep(parts):
                files.append(parts)
    for parts in tqdm(files, desc=desc, unit="file", disable=not progress, leave=False):
        full = root.joinpath(*parts)
        if full.is_file():
            yield parts, full.read_bytes()


def _iter_tar(path: Path, keep, expected_sha256, progress, desc):
    digest = hashlib.sha256() if expected_sha256 else None
    try:
        with open(path, "rb") as f, tqdm(total=path.stat().st_size, desc=desc, unit="B", unit_scale=True,
                                         disable=not progress, leave=False) as bar:
            reader = _CountingReader(f, digest, bar)
            with tarfile.open(fileobj=reader, mode="r|*") as tf:
                for m in tf:
                    parts = safe_parts(m.name, path)
                    if not m.isreg() or _skipped(parts) or not keep(parts):
                        continue
                    fobj = tf.extractfile(m)
                    yield parts, fobj.read()
            while reader.read(1 << 20):  # trailing padding, so the checksum covers the whole file
                pass
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataCorruptError(
            f"{path}: cannot read the archive ({type(e).__name__}: {e}). It is probably truncated "
            "or not a tar file; copy or download it again.") from e
    if digest is not None:
        _check_digest(path, expected_sha256, digest.hexdigest())


def _iter_zip(path: Path, keep, expected_sha256, progress, desc):
    if expected_sha256:
        _check_digest(path, expected_sha256, file_digest(path, "sha256"))
    try:
        with zipfile.ZipFile(path) as zf:
            infos = []
            for info in zf.infolist():
                parts = safe_parts(info.filename, path)
                kind = stat.S_IFMT(info.external_attr >> 16)
                if info.is_dir() or kind not in (0, stat.S_IFREG) or _skipped(parts) or not keep(parts):
                    continue
                infos.append((parts, info))
            for parts, info in tqdm(infos, desc=desc, unit="file", disable=not progress, leave=False):
                yield parts, zf.read(info)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise DataCorruptError(
            f"{path}: cannot read the zip archive ({type(e).__name__}: {e}); download or copy it again.") from e


def _check_digest(path: Path, expected: str, got: str) -> None:
    if got != expected:
        raise DataCorruptError(
            f"{path}: checksum mismatch (sha256 expected {expected}, got {got}). The file is damaged "
            "or not the known release; copy it again. (To use your own archive of the same name, "
            "unpack it into a folder of that name instead: folders are not checksummed.)")


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- decoding

def decode_image(data: bytes, mode: str, name: str = "<image>") -> np.ndarray:
    """Decode one image file to a uint8 array of shape (C, H, W) in PIL ``mode`` ("L" or "RGB")."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.mode != mode:
                im = im.convert(mode)
            # tobytes + frombuffer is about twice as fast as np.asarray for tiny images
            a = np.frombuffer(im.tobytes(), np.uint8).reshape(im.height, im.width, -1)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataCorruptError(f"{name}: cannot decode image ({type(e).__name__}: {e}); "
                               "the file is damaged or not an image. Replace or remove it.") from e
    return a.transpose(2, 0, 1)


def _decode_chunk(items: list[tuple[str, bytes]], mode: str, shape: tuple[int, ...]) -> np.ndarray:
    out = np.empty((len(items),) + shape, np.uint8)
    for i, (name, data) in enumerate(items):
        a = decode_image(data, mode, name)
        if a.shape != shape:
            raise DataCorruptError(
                f"{name}: image is {a.shape[2]}x{a.shape[1]} with {a.shape[0]} channel(s), but the "
                f"dataset's images are {shape[2]}x{shape[1]} with {shape[0]}; all images of a dataset "
                "must have one size. Resize or remove this file.")
        out[i] = a
    return out


_CHUNK = 512
_MIN_PARALLEL = 4096  # below this, starting worker processes costs more than it saves


def decode_images(jobs: list[tuple[np.ndarray, list[tuple[str, bytes]]]], mode: str, shape: tuple[int, ...], *,
                  progress: bool = False, desc: str = "decoding") -> None:
    """Decode each job's ``(name, bytes)`` items, in order, into its output array ``(N, C, H, W)``.

    Uses a small pool of forked worker processes for large jobs (JPEG/PNG decoding is
    CPU bound and PIL holds the GIL for most of it). Fork is used because, unlike spawn,
    it works from scripts without an ``if __name__ == "__main__"`` guard; where it is not
    available decoding runs in this process.
    """
    total = sum(len(items) for _, items in jobs)
    workers = min(4, os.cpu_count() or 1)
    use_pool = total >= _MIN_PARALLEL and workers > 1 and "fork" in multiprocessing.get_all_start_methods()
    with tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
                if use_pool else None)
        try:
            for out, items in jobs:
                chunks = [items[i:i + _CHUNK] for i in range(0, len(items), _CHUNK)]
                results = (pool.map(_decode_chunk, chunks, [mode] * len(chunks), [shape] * len(chunks))
                           if pool else (_decode_chunk(c, mode, shape) for c in chunks))
                start = 0
                for arr in results:
                    out[start:start + len(arr)] = arr
                    start += len(arr)
                    bar.update(len(arr))
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
