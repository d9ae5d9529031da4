"""Tests for memdistill.data.sources / archive / cache on small data built in tmp_path."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from memdistill.data import archive, cache, sources
from memdistill.data.sources import (DataCorruptError, DataNotFoundError, SourceData, Split, load_source,
                                     locate_source)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Run in tmp_path/work so ./data and ../shared/datasets are empty; cache in tmp_path."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MEMDISTILL_DATA", raising=False)
    monkeypatch.delenv("MEMDISTILL_MIRROR", raising=False)
    monkeypatch.setenv("MEMDISTILL_CACHE", str(tmp_path / "cache"))
    return work


def pixels(i: int, h: int, w: int, c: int) -> np.ndarray:
    """Deterministic, per-image distinct pixels (H, W, C)."""
    return ((np.arange(h * w * c).reshape(h, w, c) * 7 + i * 31) % 251).astype(np.uint8)


def write_image(path: Path, arr: np.ndarray, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr[..., 0], "L") if arr.shape[2] == 1 else Image.fromarray(arr, "RGB")
    img.save(path, fmt)


def make_split_tree(root: Path, classes=("0", "1", "2"), n_train=4, n_test=2, h=5, w=6, c=1) -> dict:
    """train/<class>/<i>.png and test/<class>/<i>.png; returns the expected arrays."""
    expected = {}
    i = 0
    for split, n in (("train", n_train), ("test", n_test)):
        xs, ys = [], []
        for label, cls in enumerate(classes):
            for k in range(n):
                arr = pixels(i, h, w, c)
                i += 1
                write_image(root / split / cls / f"{k}.png", arr)
                xs.append(arr.transpose(2, 0, 1))
                ys.append(label)
        expected[split] = (np.stack(xs), np.array(ys))
    return expected


def make_tar(src: Path, out: Path, top: str | None = None) -> Path:
    mode = "w:gz" if out.name.endswith((".tar.gz", ".tgz")) else "w"
    with tarfile.open(out, mode) as tf:
        tf.add(src, arcname=top or ".")
    return out


# ---------------------------------------------------------------- formats

def test_folder_and_archives_give_same_arrays(tmp_path):
    expected = make_split_tree(tmp_path / "d_folder" / "mnist")
    ref = load_source("mnist", data_dir=tmp_path / "d_folder", progress=False)
    assert isinstance(ref, SourceData) and isinstance(ref.train, Split)
    assert ref.class_names == ["0", "1", "2"]
    for split in ("train", "test"):
        got = getattr(ref, split)
        assert got.images.dtype == np.uint8 and got.images.shape == expected[split][0].shape
        assert got.images.shape[1:] == (1, 5, 6)  # (C, H, W)
        assert got.labels.dtype == np.int64
        np.testing.assert_array_equal(got.images, expected[split][0])
        np.testing.assert_array_equal(got.labels, expected[split][1])
        assert got.domains is None

    for i, (fname, top) in enumerate([("mnist.tar.gz", None), ("mnist.tgz", "wrapper"), ("mnist.tar", None),
                                      ("mnist.tar", "mnist")]):
        d = tmp_path / f"d{i}"
        d.mkdir()
        make_tar(tmp_path / "d_folder" / "mnist", d / fname, top)
        assert locate_source("mnist", data_dir=d) == d / fname
        data = load_source("mnist", data_dir=d, progress=False)
        assert data.class_names == ref.class_names
        for split in ("train", "test"):
            np.testing.assert_array_equal(getattr(data, split).images, getattr(ref, split).images)
            np.testing.assert_array_equal(getattr(data, split).labels, getattr(ref, split).labels)


def test_rgb_conversion_and_jpeg(tmp_path):
    root = tmp_path / "data" / "cifar10"
    make_split_tree(root, classes=("cat", "dog"), n_train=2, n_test=1, h=8, w=8, c=3)
    Image.fromarray(pixels(99, 8, 8, 1)[..., 0], "L").save(root / "train" / "cat" / "gray.jpg", "JPEG")
    Image.fromarray(pixels(98, 8, 8, 3), "RGB").convert("P").save(root / "test" / "dog" / "pal.png")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")  # ignored
    data = load_source("cifar10", data_dir=tmp_path / "data", progress=False)
    assert data.train.images.shape == (5, 3, 8, 8) and data.test.images.shape == (3, 3, 8, 8)
    assert data.class_names == ["cat", "dog"]
    assert np.bincount(data.train.labels).tolist() == [3, 2]


def test_mixed_sizes_name_the_file(tmp_path):
    root = tmp_path / "data" / "mnist"
    make_split_tree(root, h=5, w=5)
    write_image(root / "train" / "1" / "odd.png", pixels(0, 7, 5, 1))
    with pytest.raises(DataCorruptError, match="odd.png"):
        load_source("mnist", data_dir=tmp_path / "data", progress=False)
    assert not list((tmp_path / "cache").glob("mnist-*")), "a failed build must leave no cache entry"


def test_undecodable_image_names_the_file(tmp_path):
    root = tmp_path / "data" / "mnist"
    make_split_tree(root)
    (root / "test" / "2" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataCorruptError, match="broken.png"):
        load_source("mnist", data_dir=tmp_path / "data", progress=False)


def test_parallel_decoding_matches_serial(tmp_path, monkeypatch):
    expected = make_split_tree(tmp_path / "data" / "mnist", n_train=6, n_test=3)
    monkeypatch.setattr(archive, "_MIN_PARALLEL", 0)
    monkeypatch.setattr(archive, "_CHUNK", 4)
    data = load_source("mnist", data_dir=tmp_path / "data", progress=False)
    np.testing.assert_array_equal(data.train.images, expected["train"][0])
    np.testing.assert_array_equal(data.test.images, expected["test"][0])


def test_tinyimagenet_official_zip_layout(tmp_path):
    zpath = tmp_path / "data" / "tiny-imagenet-200.zip"
    zpath.parent.mkdir()
    ann = []

    def jpeg(i):
        buf = io.BytesIO()
        Image.fromarray(pixels(i, 8, 8, 3), "RGB").save(buf, "JPEG")
        return buf.getvalue()

    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("tiny-imagenet-200/wnids.txt", "n02\nn01\n")
        for w, wnid in enumerate(["n02", "n01"]):
            for k in range(3):
                zf.writestr(f"tiny-imagenet-200/train/{wnid}/images/{wnid}_{k}.JPEG", jpeg(w * 10 + k))
            zf.writestr(f"tiny-imagenet-200/train/{wnid}/{wnid}_boxes.txt", "")
        for k, wnid in enumerate(["n01", "n02", "n02"]):
            zf.writestr(f"tiny-imagenet-200/val/images/val_{k}.JPEG", jpeg(50 + k))
            ann.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t8\t8")
        zf.writestr("tiny-imagenet-200/val/val_annotations.txt", "\n".join(ann) + "\n")
        zf.writestr("tiny-imagenet-200/test/images/test_0.JPEG", jpeg(77))  # unlabelled: ignored
    assert locate_source("tinyimagenet", data_dir=tmp_path / "data") == zpath
    data = load_source("tinyimagenet", data_dir=tmp_path / "data", progress=False)
    assert data.class_names == ["n01", "n02"]
    assert data.train.images.shape == (6, 3, 8, 8)
    assert data.test.labels.tolist() == [0, 1, 1]


# ---------------------------------------------------------------- cache

def test_second_load_is_fast_and_does_not_decode(tmp_path, monkeypatch):
    make_split_tree(tmp_path / "src" / "mnist")
    make_tar(tmp_path / "src" / "mnist", tmp_path / "mnist.tar.gz")
    first = load_source("mnist", data_dir=tmp_path, progress=False)

    def boom(*a, **k):
        raise AssertionError("decoded or read the raw data again")

    for fn in ("decode_image", "decode_images", "iter_files"):
        monkeypatch.setattr(sources, fn, boom)
    t = time.perf_counter()
    second = load_source("mnist", data_dir=tmp_path, progress=False)
    assert time.perf_counter() - t < 0.5
    assert isinstance(second.train.images, np.memmap)
    np.testing.assert_array_equal(second.train.images, first.train.images)
    entries = list((tmp_path / "cache").glob("mnist-*"))
    assert len(entries) == 1
    meta = json.loads((entries[0] / "meta.json").read_text())
    assert meta["source"] == str((tmp_path / "mnist.tar.gz").resolve())
    assert meta["class_names"] == ["0", "1", "2"]
    assert len(meta["arrays"]["train_images"]["sha256"]) == 64


def test_explicit_cache_dir_beats_env(tmp_path):
    make_split_tree(tmp_path / "data" / "mnist")
    load_source("mnist", data_dir=tmp_path / "data", cache_dir=tmp_path / "mine", progress=False)
    assert list((tmp_path / "mine").glob("mnist-*/meta.json"))
    assert not (tmp_path / "cache").exists()


def test_changed_source_is_rebuilt(tmp_path):
    make_split_tree(tmp_path / "src" / "mnist")
    tar = make_tar(tmp_path / "src" / "mnist", tmp_path / "mnist.tar.gz")
    assert len(load_source("mnist", data_dir=tmp_path, progress=False).train.labels) == 12
    write_image(tmp_path / "src" / "mnist" / "train" / "0" / "extra.png", pixels(5, 5, 6, 1))
    make_tar(tmp_path / "src" / "mnist", tar)
    st = tar.stat()
    os.utime(tar, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # coarse clocks: make the change visible
    assert len(load_source("mnist", data_dir=tmp_path, progress=False).train.labels) == 13
    assert len(list((tmp_path / "cache").glob("mnist-*"))) == 1  # replaced, not duplicated


def test_changed_folder_source_is_rebuilt(tmp_path):
    make_split_tree(tmp_path / "data" / "mnist")
    assert len(load_source("mnist", data_dir=tmp_path / "data", progress=False).test.labels) == 6
    (tmp_path / "data" / "mnist" / "test" / "0" / "0.png").unlink()
    assert len(load_source("mnist", data_dir=tmp_path / "data", progress=False).test.labels) == 5


def _entry(tmp_path) -> Path:
    (entry,) = (tmp_path / "cache").glob("mnist-*")
    return entry


def test_truncated_cache_array_is_detected_and_rebuilt(tmp_path):
    make_split_tree(tmp_path / "data" / "mnist")
    ref = np.array(load_source("mnist", data_dir=tmp_path / "data", progress=False).train.images)
    f = _entry(tmp_path) / "train_images.npy"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.warns(UserWarning, match="train_images.npy"):
        data = load_source("mnist", data_dir=tmp_path / "data", progress=False)
    np.testing.assert_array_equal(data.train.images, ref)


def test_tampered_cache_array_is_detected_and_rebuilt(tmp_path):
    make_split_tree(tmp_path / "data" / "mnist")
    ref = np.array(load_source("mnist", data_dir=tmp_path / "data", progress=False).train.images)
    f = _entry(tmp_path) / "train_images.npy"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0xFF  # same size, same header: only the content hash can tell
    f.write_bytes(bytes(raw))
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(DataCorruptError):
        cache.verify(_entry(tmp_path))
    with pytest.warns(UserWarning, match="sha256"):
        data = load_source("mnist", data_dir=tmp_path / "data", progress=False)
    np.testing.assert_array_equal(data.train.images, ref)
    cache.verify(_entry(tmp_path))


def test_unreadable_meta_raises_with_fix(tmp_path):
    make_split_tree(tmp_path / "data" / "mnist")
    load_source("mnist", data_dir=tmp_path / "data", progress=False)
    (_entry(tmp_path) / "meta.json").write_text("{not json")
    with pytest.raises(DataCorruptError, match="Delete the folder"):
        load_source("mnist", data_dir=tmp_path / "data", progress=False)


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    make_split_tree(tmp_path / "data" / "mnist")

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sources, "decode_images", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_source("mnist", data_dir=tmp_path / "data", progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


# ---------------------------------------------------------------- archive safety

def _tar_with(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _png_member(name: str, i: int = 0) -> tuple[tarfile.TarInfo, bytes]:
    buf = io.BytesIO()
    Image.fromarray(pixels(i, 4, 4, 1)[..., 0], "L").save(buf, "PNG")
    info = tarfile.TarInfo(name)
    info.size = len(buf.getvalue())
    return info, buf.getvalue()


@pytest.mark.parametrize("bad", ["../evil.png", "train/0/../../evil.png", "/abs/evil.png"])
def test_unsafe_member_names_are_rejected(tmp_path, bad):
    d = tmp_path / "data"
    d.mkdir()
    _tar_with(d / "mnist.tar.gz", [_png_member("train/0/a.png"), _png_member("test/0/a.png"), _png_member(bad)])
    with pytest.raises(DataCorruptError, match="evil.png"):
        load_source("mnist", data_dir=d, progress=False)


def test_symlinks_and_special_members_are_ignored(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    link = tarfile.TarInfo("train/0/link.png")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("train/1/hard.png")
    hard.type, hard.linkname = tarfile.LNKTYPE, "train/0/a.png"
    fifo = tarfile.TarInfo("test/0/fifo.png")
    fifo.type = tarfile.FIFOTYPE
    folder = tarfile.TarInfo("train/0")
    folder.type = tarfile.DIRTYPE
    _tar_with(d / "mnist.tar.gz", [(folder, None), _png_member("train/0/a.png"), (link, None), (hard, None),
                                   (fifo, None), _png_member("test/0/a.png", 1), _png_member("._b.png", 2)])
    data = load_source("mnist", data_dir=d, progress=False)
    assert len(data.train.labels) == 1 and len(data.test.labels) == 1


def test_zip_with_unsafe_name_is_rejected(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    with zipfile.ZipFile(d / "tinyimagenet.zip", "w") as zf:
        zf.writestr("train/a/x.png", _png_member("x")[1])
        zf.writestr("../evil.png", _png_member("x")[1])
    with pytest.raises(DataCorruptError, match="evil.png"):
        load_source("tinyimagenet", data_dir=d, progress=False)


def test_truncated_archive_is_corrupt(tmp_path):
    make_split_tree(tmp_path / "src" / "mnist", h=16, w=16)
    (tmp_path / "data").mkdir()
    tar = make_tar(tmp_path / "src" / "mnist", tmp_path / "data" / "mnist.tar.gz")
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    with pytest.raises(DataCorruptError, match="mnist.tar.gz"):
        load_source("mnist", data_dir=tmp_path / "data", progress=False)


def test_known_archive_checksum_is_verified(tmp_path):
    make_split_tree(tmp_path / "src" / "cifar10", c=3)
    d = tmp_path / "data"
    d.mkdir()
    tar = make_tar(tmp_path / "src" / "cifar10", d / "cifar10.tar.gz")
    load_source("cifar10", data_dir=d, progress=False)  # own archive, release name: not checksummed
    # the release's name and size but other bytes (a readable tar.gz, zero-padded): checksummed
    size = sources.KNOWN_SHA256["cifar10.tar.gz"][0]
    with open(tar, "ab") as f:
        f.write(bytes(size - tar.stat().st_size))
    with pytest.raises(DataCorruptError, match=r"sha256 expected d042b481.*got"):
        load_source("cifar10", data_dir=d, progress=False)


# ---------------------------------------------------------------- locating

def test_missing_data_lists_every_place(tmp_path, monkeypatch, isolated):
    monkeypatch.setenv("MEMDISTILL_DATA", str(tmp_path / "envdir"))
    with pytest.raises(DataNotFoundError) as e:
        locate_source("cifar100", data_dir=tmp_path / "given")
    msg = str(e.value)
    for place in (tmp_path / "given", tmp_path / "envdir", isolated / "data", tmp_path / "shared" / "datasets"):
        assert str(place) in msg
    assert "cifar100.tar.gz" in msg and "MEMDISTILL_DATA" in msg and "--download" in msg
    with pytest.raises(DataNotFoundError, match="no canonical download"):
        load_source("pacs", download=True, progress=False)


def test_search_order_and_env_var(tmp_path, monkeypatch, isolated):
    make_split_tree(isolated / "data" / "mnist")
    assert locate_source("mnist") == isolated / "data" / "mnist"
    make_split_tree(tmp_path / "env" / "mnist")
    monkeypatch.setenv("MEMDISTILL_DATA", str(tmp_path / "env"))
    assert locate_source("mnist") == tmp_path / "env" / "mnist"
    make_split_tree(tmp_path / "arg" / "mnist")
    assert locate_source("mnist", data_dir=tmp_path / "arg") == tmp_path / "arg" / "mnist"
    (tmp_path / "shared" / "datasets").mkdir(parents=True)
    (tmp_path / "shared" / "datasets" / "pacs_64x64.tar.gz").write_bytes(b"")
    assert locate_source("pacs") == tmp_path / "shared" / "datasets" / "pacs_64x64.tar.gz"
    assert locate_source("digits") is None


def test_unknown_name():
    with pytest.raises(ValueError, match="cifar10"):
        load_source("imagenet")
    with pytest.raises(ValueError, match="allowed"):
        locate_source("svhn")


@pytest.mark.skipif(not (REPO.parent / "shared" / "datasets" / "mnist.tar.gz").exists(),
                    reason="no ../shared/datasets/mnist.tar.gz next to the repository")
def test_locates_real_shared_mnist(monkeypatch):
    monkeypatch.chdir(REPO)
    assert locate_source("mnist") == (REPO.parent / "shared" / "datasets" / "mnist.tar.gz").absolute()


# ---------------------------------------------------------------- pacs & digits

def make_pacs(root: Path, sizes: dict) -> None:
    i = 0
    for (domain, cls), n in sizes.items():
        for k in range(n):
            write_image(root / domain / cls / f"pic_{k:03d}.png", pixels(i, 6, 6, 3))
            i += 1


def test_pacs_domains_and_seeded_split(tmp_path):
    sizes = {(d, c): n for d, base in (("sketch", 10), ("photo", 5), ("art_painting", 20))
             for c, n in (("dog", base), ("horse", base + 5))}
    make_pacs(tmp_path / "src" / "PACS", sizes)
    d = tmp_path / "data"
    d.mkdir()
    make_tar(tmp_path / "src", d / "pacs_64x64.tar.gz")  # with an extra top folder "PACS"
    a = load_source("pacs", data_dir=d, seed=1, progress=False)
    assert a.domain_names == ["art_painting", "photo", "sketch"] and a.class_names == ["dog", "horse"]
    total = sum(sizes.values())
    assert len(a.train.labels) + len(a.test.labels) == total
    assert a.train.images.shape[1:] == (3, 6, 6)
    # stratified: round(0.2 * n) of every (domain, class) group in test
    for (dom, cls), n in sizes.items():
        key = (a.test.domains == a.domain_names.index(dom)) & (a.test.labels == a.class_names.index(cls))
        assert key.sum() == int(np.floor(0.2 * n + 0.5))
    # disjoint and complete (every image is distinct)
    tr = {x.tobytes() for x in a.train.images}
    te = {x.tobytes() for x in a.test.images}
    assert not tr & te and len(tr | te) == total
    # deterministic per seed, different across seeds, same cache entry
    b = load_source("pacs", data_dir=d, seed=1, progress=False)
    np.testing.assert_array_equal(a.test.images, b.test.images)
    np.testing.assert_array_equal(a.test.domains, b.test.domains)
    c = load_source("pacs", data_dir=d, seed=2, progress=False)
    assert {x.tobytes() for x in c.test.images} != te
    assert len(list((tmp_path / "cache").glob("pacs-*"))) == 1


def test_core50_sessions_and_objects_in_natural_order(tmp_path):
    sizes = {(f"s{i}", f"o{j}"): 5 for i in (1, 2, 10, 11) for j in (1, 2, 10)}
    make_pacs(tmp_path / "data" / "core50_128x128", sizes)      # the official layout, unzipped
    a = load_source("core50", data_dir=tmp_path / "data", seed=0, progress=False)
    assert a.domain_names == ["s1", "s2", "s10", "s11"] and a.class_names == ["o1", "o2", "o10"]
    assert len(a.train.labels) + len(a.test.labels) == 60 and a.train.images.shape[1:] == (3, 6, 6)
    assert set(np.unique(a.test.domains)) == {0, 1, 2, 3}


def test_core50_missing_says_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataNotFoundError, match="core50_128x128.zip.*vlomonaco.github.io/core50"):
        load_source("core50", data_dir=tmp_path, progress=False)


def test_digits():
    a = load_source("digits", seed=3)
    assert a.train.images.shape == (1257, 1, 8, 8) and a.test.images.shape == (540, 1, 8, 8)
    assert a.train.images.dtype == np.uint8 and a.train.labels.dtype == np.int64
    assert a.train.images.max() == 255 and a.class_names == [str(i) for i in range(10)]
    counts = np.bincount(a.test.labels) / (np.bincount(a.test.labels) + np.bincount(a.train.labels))
    assert np.all(np.abs(counts - 0.3) < 0.02)
    b = load_source("digits", seed=3)
    np.testing.assert_array_equal(a.test.images, b.test.images)
    c = load_source("digits", seed=4)
    assert not np.array_equal(a.test.labels, c.test.labels) or not np.array_equal(a.test.images, c.test.images)
