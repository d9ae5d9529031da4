"""Download path of memdistill.data.sources, served from a file:// mirror in tmp_path."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from memdistill.data import download as dl
from memdistill.data.sources import DataCorruptError, DataError, DataNotFoundError, load_source, locate_source

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MEMDISTILL_DATA", raising=False)
    monkeypatch.setenv("MEMDISTILL_CACHE", str(tmp_path / "cache"))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv("MEMDISTILL_MIRROR", mirror.as_uri() + "/")
    return mirror


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def fake_cifar10(mirror: Path, rng) -> dict:
    """A cifar-10-python.tar.gz with 5 tiny train batches and a test batch, like the real one."""
    batches = {}
    for name, n in [(f"data_batch_{i}", 4) for i in range(1, 6)] + [("test_batch", 6)]:
        batches[name] = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, n).tolist(),
                         b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"filenames": [b"x.png"] * n}
    meta = {b"label_names": [s.encode() for s in CIFAR_NAMES], b"num_vis": 3072}
    with tarfile.open(mirror / "cifar-10-python.tar.gz", "w:gz") as tf:
        for name, obj in list(batches.items()) + [("batches.meta", meta)]:
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return batches


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def fake_mnist(mirror: Path, rng) -> dict:
    out = {}
    for prefix, n in (("train", 12), ("t10k", 5)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        write_idx(mirror / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(mirror / f"{prefix}-labels-idx1-ubyte.gz", y)
        out[prefix] = (x, y)
    return out


def use_fake_md5(monkeypatch, name: str, mirror: Path) -> None:
    monkeypatch.setitem(dl.RESOURCES, name, [(fn, md5(mirror / fn)) for fn, _ in dl.RESOURCES[name]])


def test_cifar10_download_and_parse(tmp_path, isolated, monkeypatch):
    batches = fake_cifar10(isolated, np.random.default_rng(0))
    use_fake_md5(monkeypatch, "cifar10", isolated)
    with pytest.raises(DataNotFoundError):
        load_source("cifar10", data_dir=tmp_path / "data", progress=False)
    data = load_source("cifar10", data_dir=tmp_path / "data", download=True, progress=False)
    folder = tmp_path / "data" / "cifar10-download"
    assert sorted(p.name for p in folder.iterdir()) == ["cifar-10-python.tar.gz"]  # no .part left
    x = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    y = sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    np.testing.assert_array_equal(data.train.images, x)
    np.testing.assert_array_equal(data.train.labels, y)
    np.testing.assert_array_equal(data.test.images, batches["test_batch"][b"data"].reshape(-1, 3, 32, 32))
    assert data.class_names == CIFAR_NAMES and data.train.images.dtype == np.uint8
    # found locally from now on, without downloading
    assert locate_source("cifar10", data_dir=tmp_path / "data") == folder
    monkeypatch.setenv("MEMDISTILL_MIRROR", (tmp_path / "nowhere").as_uri())
    again = load_source("cifar10", data_dir=tmp_path / "data", download=True, progress=False)
    np.testing.assert_array_equal(again.test.images, data.test.images)


def test_mnist_download_and_parse(tmp_path, isolated, monkeypatch):
    fake = fake_mnist(isolated, np.random.default_rng(1))
    use_fake_md5(monkeypatch, "mnist", isolated)
    data = load_source("mnist", data_dir=tmp_path / "data", download=True, progress=False)
    assert data.train.images.shape == (12, 1, 28, 28) and data.test.images.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(data.train.images[:, 0], fake["train"][0])
    np.testing.assert_array_equal(data.test.labels, fake["t10k"][1])
    assert data.test.labels.dtype == np.int64 and data.class_names == [str(i) for i in range(10)]


def test_mirror_fallback(tmp_path, isolated, monkeypatch):
    fake_mnist(isolated, np.random.default_rng(2))
    use_fake_md5(monkeypatch, "mnist", isolated)
    monkeypatch.delenv("MEMDISTILL_MIRROR")
    monkeypatch.setitem(dl.MIRRORS, "mnist", [(tmp_path / "empty").as_uri(), isolated.as_uri()])
    data = load_source("mnist", data_dir=tmp_path / "data", download=True, progress=False)
    assert len(data.train.labels) == 12


def test_md5_mismatch_is_an_error(tmp_path, isolated):
    fake_cifar10(isolated, np.random.default_rng(0))  # real md5 table: the fake file cannot match
    with pytest.raises(DataCorruptError, match=r"md5 mismatch \(expected c58f3010"):
        load_source("cifar10", data_dir=tmp_path / "data", download=True, progress=False)
    folder = tmp_path / "data" / "cifar10-download"
    assert list(folder.iterdir()) == []  # neither the .part nor a final file stays
    with pytest.raises(DataNotFoundError):
        locate_source("cifar10", data_dir=tmp_path / "data")


def test_unreachable_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMDISTILL_MIRROR", (tmp_path / "nothing-here").as_uri())
    with pytest.raises(DataError, match="could not download"):
        load_source("mnist", data_dir=tmp_path / "data", download=True, progress=False)


def test_malicious_pickle_is_refused(tmp_path, isolated, monkeypatch):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with tarfile.open(isolated / "cifar-10-python.tar.gz", "w:gz") as tf:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
            data = pickle.dumps({b"data": Evil()})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    use_fake_md5(monkeypatch, "cifar10", isolated)
    with pytest.raises(DataCorruptError, match="forbidden global"):
        load_source("cifar10", data_dir=tmp_path / "data", download=True, progress=False)


def test_truncated_idx_is_corrupt(tmp_path, isolated, monkeypatch):
    fake_mnist(isolated, np.random.default_rng(3))
    f = isolated / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(f.read_bytes())
    f.write_bytes(gzip.compress(raw[:-100]))
    use_fake_md5(monkeypatch, "mnist", isolated)
    with pytest.raises(DataCorruptError, match="t10k-images"):
        load_source("mnist", data_dir=tmp_path / "data", download=True, progress=False)
