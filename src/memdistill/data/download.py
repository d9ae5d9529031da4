"""Download the canonical dataset files (the ones torchvision uses) and parse them.

Files go to ``<root>/<name>-download/``; each is fetched to ``<file>.part``, checked
against its md5 and only then renamed, so a folder holding all final file names is
complete. Base URLs come from :data:`MIRRORS` (tried in order) or, when set, from the
environment variable ``MEMDISTILL_MIRROR`` (one base URL for every file; ``file://``
works, which the tests use).

CIFAR pickles are read with a restricted unpickler that only builds numpy arrays,
so a tampered file cannot run code.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .archive import DataCorruptError, DataError, DataNotFoundError, file_digest

MIRRORS: dict[str, list[str]] = {
    "cifar10": ["https://www.cs.toronto.edu/~kriz/"],
    "cifar100": ["https://www.cs.toronto.edu/~kriz/"],
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
    "tinyimagenet": ["http://cs231n.stanford.edu/"],
}

# (file name, md5 or None to skip the check); md5 values as in torchvision.
RESOURCES: dict[str, list[tuple[str, str | None]]] = {
    "cifar10": [("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")],
    "cifar100": [("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")],
    "mnist": [
        ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    ],
    "tinyimagenet": [("tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de")],
}

PACS_HELP = (
    "PACS has no canonical download. Get it from the authors' page "
    "(https://domaingeneralization.github.io/) or a copy such as the GitHub repository "
    "MachineLearning2020/Homework3-PACS (folder PACS/), and place it as a folder "
    "pacs/<domain>/<class>/<image> (or pacs_64x64/...), or a .tar.gz/.tar of that tree, "
    "in one of the data folders listed above.")

CORE50_HELP = (
    "CORe50 has no automatic download here. Get core50_128x128.zip from the authors' page "
    "(https://vlomonaco.github.io/core50/), unzip it and place it as a folder "
    "core50_128x128/s<session>/o<object>/<image> (or core50/...), or a .tar.gz/.tar of that tree, "
    "in one of the data folders listed above.")

# Sources without a canonical download: what to tell the user instead.
NO_DOWNLOAD_HELP = {"pacs": PACS_HELP, "core50": CORE50_HELP}

TIMEOUT_S = 60


def folder_for(name: str, root: Path) -> Path:
    return Path(root) / f"{name}-download"


def is_complete(name: str, folder: Path) -> bool:
    return name in RESOURCES and all((Path(folder) / fn).is_file() for fn, _ in RESOURCES[name])


def mirrors(name: str) -> list[str]:
    env = os.environ.get("MEMDISTILL_MIRROR")
    return [env] if env else MIRRORS[name]


def download(name: str, root: Path, progress: bool = True) -> Path:
    """Fetch the canonical files of ``name`` into ``<root>/<name>-download/``; return that folder."""
    if name in NO_DOWNLOAD_HELP:
        raise DataNotFoundError(NO_DOWNLOAD_HELP[name])
    if name not in RESOURCES:
        raise ValueError(f"no download for {name!r}; downloadable: {', '.join(RESOURCES)}")
    folder = folder_for(name, root)
    folder.mkdir(parents=True, exist_ok=True)
    for filename, md5 in RESOURCES[name]:
        if not (folder / filename).is_file():
            _fetch(filename, md5, folder, mirrors(name), progress)
    return folder


def _fetch(filename: str, md5: str | None, folder: Path, bases: list[str], progress: bool) -> None:
    dest = folder / filename
    part = folder / (filename + ".part")
    errors, corrupt = [], False
    for base in bases:
        url = base.rstrip("/") + "/" + filename
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r, open(part, "wb") as f:
                total = int(r.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, desc=f"downloading {filename}", unit="B", unit_scale=True,
                          disable=not progress, leave=False) as bar:
                    for block in iter(lambda: r.read(1 << 20), b""):
                        f.write(block)
                        bar.update(len(block))
        except (urllib.error.URLError, OSError, ValueError) as e:
            errors.append(f"{url}: {e}")
            part.unlink(missing_ok=True)
            continue
        got = file_digest(part, "md5") if md5 else None
        if md5 and got != md5:
            errors.append(f"{url}: md5 mismatch (expected {md5}, got {got})")
            corrupt = True
            part.unlink(missing_ok=True)
            continue
        os.replace(part, dest)
        return
    cls = DataCorruptError if corrupt else DataError
    raise cls(f"could not download {filename}:\n  " + "\n  ".join(errors)
              + "\nCheck the network, or set MEMDISTILL_MIRROR to a base URL that serves the file.")


# ---------------------------------------------------------------- parsing

class _ArrayUnpickler(pickle.Unpickler):
    """Allows only what a CIFAR pickle needs: plain containers and numpy arrays."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"),
               ("_codecs", "encode")}  # how Python 3 writes bytes in protocol-2 pickles

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name} in a CIFAR pickle")


def _unpickle(data: bytes, where: str) -> dict:
    try:
        d = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # any failure means the file is not what we expect
        raise DataCorruptError(f"{where}: not a valid CIFAR pickle ({e}); delete it and download again") from e
    if not isinstance(d, dict):
        raise DataCorruptError(f"{where}: not a valid CIFAR pickle (no dict); delete it and download again")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def read_cifar(name: str, folder: Path) -> dict:
    """Parse the python-pickle tarball into train/test images (N,3,32,32) and labels."""
    path = Path(folder) / RESOURCES[name][0][0]
    if name == "cifar10":
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_files, meta_file, label_key, names_key = ["test_batch"], "batches.meta", "labels", "label_names"
    else:
        train_files, test_files, meta_file, label_key, names_key = ["train"], ["test"], "meta", "fine_labels", "fine_label_names"
    wanted = set(train_files + test_files + [meta_file])
    found = {}
    try:
        with tarfile.open(path, "r|*") as tf:
            for m in tf:
                base = m.name.rsplit("/", 1)[-1]
                if m.isreg() and base in wanted:
                    found[base] = _unpickle(tf.extractfile(m).read(), f"{path}:{m.name}")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataCorruptError(f"{path}: cannot read ({e}); delete it and download again") from e
    missing = wanted - set(found)
    if missing:
        raise DataCorruptError(f"{path}: missing members {sorted(missing)}; delete it and download again")

    def split(files):
        try:
            images = np.concatenate([np.asarray(found[f]["data"], np.uint8) for f in files])
            labels = np.concatenate([np.asarray(found[f][label_key], np.int64) for f in files])
            return images.reshape(-1, 3, 32, 32), labels  # rows are R plane, G plane, B plane
        except (KeyError, ValueError) as e:
            raise DataCorruptError(f"{path}: unexpected content ({e}); delete it and download again") from e

    names = [n.decode() if isinstance(n, bytes) else str(n) for n in found[meta_file][names_key]]
    xtr, ytr = split(train_files)
    xte, yte = split(test_files)
    return {"train": (xtr, ytr), "test": (xte, yte), "class_names": names}


def _read_idx(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataCorruptError(f"{path}: cannot decompress ({e}); delete it and download again") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataCorruptError(f"{path}: not an unsigned-byte IDX file; delete it and download again")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise DataCorruptError(f"{path}: IDX header says {dims} but the file has {len(data) - offset} "
                               "data bytes; delete it and download again")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(dims)


def read_mnist(folder: Path) -> dict:
    """Parse the four IDX files into train/test images (N,1,28,28) and labels."""
    folder = Path(folder)
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
        y = _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataCorruptError(f"{folder}: {prefix} images {x.shape} and labels {y.shape} do not match; "
                                   "delete the folder and download again")
        out[split] = (x[:, None], y)
    out["class_names"] = [str(i) for i in range(10)]
    return out
