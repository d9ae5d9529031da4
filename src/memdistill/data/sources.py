"""Image data sources: find the raw data, decode it once, serve cached uint8 arrays.

``load_source(name)`` returns a :class:`SourceData` with ``train`` and ``test`` splits of
uint8 images shaped (N, C, H, W) (channels first) and int64 labels.

Where raw data is looked for, in this order of roots: the ``data_dir`` argument, the
``MEMDISTILL_DATA`` environment variable (``os.pathsep``-separated list allowed),
``./data`` and ``../shared/datasets`` (both relative to the current working directory).
In each root, for a source ``name``:

* a folder ``<name>/`` with ``train/<class>/<image>`` and ``test/<class>/<image>``;
* an archive ``<name>.tar.gz``, ``<name>.tgz`` or ``<name>.tar`` of that tree (one extra
  top-level folder inside is fine);
* ``<name>-download/``, made by ``download=True`` (canonical CIFAR pickles, MNIST IDX files,
  Tiny-ImageNet zip).

Extra names: pacs also as ``pacs_64x64``; its tree is ``<domain>/<class>/<image>`` with
no train/test split (a seeded stratified split is made here). core50 (also
``core50_128x128``, the official release unzipped) has the same kind of tree,
``s1..s11/o1..o50/<image>``: sessions are the domains, the 50 objects the classes,
both in natural order (s2 before s10). tinyimagenet also as
``tiny-imagenet-200`` (folder, .zip or tar) in the official layout
(``train/<wnid>/images/*``, ``val/images/*`` + ``val/val_annotations.txt``; val is the
test split). ``data_dir`` may also point straight at an archive file, or at a folder that
holds ``train/`` and ``test/``.

Decoded arrays are cached as memory-mapped .npy files, see :mod:`memdistill.data.cache`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cache as _cache
from . import download as _download
from .archive import (DataCorruptError, DataError, DataNotFoundError, decode_image, decode_images,
                      is_image_name, iter_files)

__all__ = ["Split", "SourceData", "DataError", "DataNotFoundError", "DataCorruptError", "SOURCES",
           "load_source", "locate_source"]

SOURCES: tuple[str, ...] = ("digits", "mnist", "cifar10", "cifar100", "tinyimagenet", "pacs", "core50")
# Sources laid out as <domain>/<class>/<image>, with no train/test split of their own.
DOMAIN_SOURCES: tuple[str, ...] = ("pacs", "core50")

_CHANNELS = {"mnist": 1, "cifar10": 3, "cifar100": 3, "tinyimagenet": 3, "pacs": 3, "core50": 3}
_STEMS = {"pacs": ("pacs", "pacs_64x64"), "tinyimagenet": ("tinyimagenet", "tiny-imagenet-200"),
          "core50": ("core50", "core50_128x128")}

# (size in bytes, sha256) of the known release archives (shared/datasets/README.md). An archive
# with one of these names and that size is checked when the cache is built; other sizes are
# the user's own archives (a truncated release fails to read anyway).
KNOWN_SHA256 = {
    "cifar10.tar.gz": (19_433_870, "d042b48137a3e4b5ae86e87bafe2e916e69fa7623c17a9a3b590c3a727b95c5b"),
    "mnist.tar.gz": (16_792_498, "f9c103d8a3c25bec39e9aa8bcaf8d04ea3e3325d4795d927febc22d3aa45e709"),
    "pacs_64x64.tar.gz": (56_483_505, "c7b5519594b7f0c9f4adc6ea1992cb9f8c972a13fa6984753fb759a664cdf56c"),
}

DIGITS_TEST_FRACTION = 0.3
PACS_TEST_FRACTION = 0.2   # every domain source's seeded per-(domain, class) test share


@dataclass
class Split:
    images: np.ndarray  # uint8 (N, C, H, W), may be a read-only np.memmap
    labels: np.ndarray  # int64 (N,)
    domains: np.ndarray | None = None  # int64 (N,), multi-domain sources only


@dataclass
class SourceData:
    name: str
    train: Split
    test: Split
    class_names: list[str]
    domain_names: list[str] | None = None


def _check_name(name: str) -> None:
    if name not in SOURCES:
        raise ValueError(f"unknown data source {name!r}; allowed: {', '.join(SOURCES)}")


# ---------------------------------------------------------------- locating

def data_roots(data_dir=None) -> list[tuple[Path, str]]:
    """The roots searched, in order, each with where it came from."""
    roots = []
    if data_dir is not None:
        roots.append((Path(data_dir).expanduser(), "data_dir argument"))
    for p in filter(None, os.environ.get("MEMDISTILL_DATA", "").split(os.pathsep)):
        roots.append((Path(p).expanduser(), "$MEMDISTILL_DATA"))
    roots.append((Path("data"), "./data"))
    roots.append((Path("..") / "shared" / "datasets", "../shared/datasets"))
    return [(Path(os.path.abspath(p)), why) for p, why in roots]


def _candidate_names(name: str) -> list[str]:
    names = []
    for stem in _STEMS.get(name, (name,)):
        names += [stem + "/", stem + ".tar.gz", stem + ".tgz", stem + ".tar"]
        if name == "tinyimagenet":
            names.append(stem + ".zip")
    if name in _download.RESOURCES:
        names.append(f"{name}-download/")
    return names


def _nonempty_dir(p: Path) -> bool:
    try:
        with os.scandir(p) as it:
            return any(True for _ in it)
    except OSError:
        return False


def locate_source(name: str, data_dir=None) -> Path | None:
    """Where the raw data of ``name`` would be read from (None for "digits").

    Cheap: only checks that paths exist. Raises DataNotFoundError, listing every place
    looked at, if the data is nowhere.
    """
    _check_name(name)
    if name == "digits":
        return None
    if data_dir is not None:  # data_dir may name the data itself
        d = Path(os.path.abspath(Path(data_dir).expanduser()))
        if d.is_file():
            return d
        if (d / "train").is_dir() and (d / "test").is_dir():
            return d
    for root, _ in data_roots(data_dir):
        for cand in _candidate_names(name):
            p = root / cand.rstrip("/")
            if cand.endswith("-download/"):
                if _download.is_complete(name, p):
                    return p
            elif cand.endswith("/"):
                if p.is_dir() and _nonempty_dir(p):
                    return p
            elif p.is_file():
                return p
    raise DataNotFoundError(_not_found_message(name, data_dir))


def _not_found_message(name: str, data_dir) -> str:
    """One line: what was looked for, where, and how to get it."""
    places = []
    for root, why in data_roots(data_dir):
        places.append(f"{root} [{why}{'' if root.is_dir() else ', missing'}]")
    if not os.environ.get("MEMDISTILL_DATA"):
        places.append("$MEMDISTILL_DATA [not set]")
    layout = ("<domain>/<class>/<image>" if name in DOMAIN_SOURCES
              else "train/<class>/<image> + test/<class>/<image>")
    fix = (". " + _download.NO_DOWNLOAD_HELP[name] if name in _download.NO_DOWNLOAD_HELP
           else ", or add --download (download=True) to fetch the canonical files")
    return (f"no data for source {name!r}: looked for {', '.join(_candidate_names(name))} "
            f"(a folder laid out as {layout}, or a .tar.gz/.tgz/.tar of it) in "
            f"{'; '.join(places)}. Put the data in one of these, pass --data-dir DIR "
            f"(data_dir=) or set MEMDISTILL_DATA=DIR{fix}")


def _download_root(data_dir) -> Path:
    """First root we can write to (creating it if needed)."""
    for root, _ in data_roots(data_dir):
        p = root
        while not p.exists() and p != p.parent:
            p = p.parent
        if p.is_dir() and os.access(p, os.W_OK):
            return root
    raise DataError("no writable data folder to download into; pass data_dir=<writable folder>")


# ---------------------------------------------------------------- loading

def load_source(name: str, data_dir: str | os.PathLike | None = None, cache_dir=None,
                download: bool = False, seed: int = 0, progress: bool = True) -> SourceData:
    """Load a source as uint8 (N, C, H, W) arrays, decoding the raw data at most once.

    ``seed`` only matters where this module makes the split (digits, pacs). With
    ``download=True`` the canonical files are fetched when no local data is found.
    """
    _check_name(name)
    if name == "digits":
        return _load_digits(seed)
    try:
        src = locate_source(name, data_dir)
    except DataNotFoundError as e:
        if not download:
            raise
        if name not in _download.RESOURCES:
            raise
        try:
            src = _download.download(name, _download_root(data_dir), progress=progress)
        except DataError as de:
            raise type(de)(f"{de}\n\n(Download was tried because:)\n{e}") from de
    arrays, meta = _cache.load_or_build(name, src, lambda w: _build(name, src, w, progress), cache_dir)
    return _assemble(name, arrays, meta, seed)


def _load_digits(seed: int) -> SourceData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.round(d.images * 255.0 / 16.0).astype(np.uint8)[:, None]  # values 0..16 -> 0..255
    labels = d.target.astype(np.int64)
    idx_tr, idx_te = train_test_split(np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION,
                                      random_state=seed, stratify=labels)
    idx_tr.sort()
    idx_te.sort()
    return SourceData("digits", Split(images[idx_tr], labels[idx_tr]), Split(images[idx_te], labels[idx_te]),
                      [str(i) for i in range(10)])


def _assemble(name: str, arrays: dict, meta: dict, seed: int) -> SourceData:
    classes = list(meta["class_names"])
    if meta["layout"] == "split":
        train = Split(arrays["train_images"], np.array(arrays["train_labels"]))
        test = Split(arrays["test_images"], np.array(arrays["test_labels"]))
        return SourceData(name, train, test, classes)
    labels, domains = np.array(arrays["all_labels"]), np.array(arrays["all_domains"])
    idx_tr, idx_te = stratified_split(domains * len(classes) + labels, PACS_TEST_FRACTION, seed)
    images = arrays["all_images"]

    def part(idx):
        return Split(np.ascontiguousarray(images[idx]), labels[idx], domains[idx])

    return SourceData(name, part(idx_tr), part(idx_te), classes, list(meta["domain_names"]))


def stratified_split(groups: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split putting round(test_fraction * n) of every group in test; sorted indices."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for g in np.unique(groups):
        idx = rng.permutation(np.flatnonzero(groups == g))
        n_test = int(np.floor(test_fraction * len(idx) + 0.5))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


# ---------------------------------------------------------------- building the cache

def _build(name: str, src: Path, writer: _cache.CacheWriter, progress: bool) -> dict:
    if src.name == f"{name}-download":
        if name == "tinyimagenet":
            return _build_tree(name, src / _download.RESOURCES[name][0][0], writer, progress)
        parsed = _download.read_mnist(src) if name == "mnist" else _download.read_cifar(name, src)
        return _write_parsed(parsed, writer)
    return _build_tree(name, src, writer, progress)


def _write_parsed(parsed: dict, writer) -> dict:
    # Same class order as the folder format (sorted names), whatever order the files use.
    names = list(parsed["class_names"])
    order = sorted(range(len(names)), key=lambda i: names[i])
    remap = np.empty(len(names), np.int64)
    remap[order] = np.arange(len(names))
    for split in ("train", "test"):
        x, y = parsed[split]
        writer.put(f"{split}_images", np.ascontiguousarray(x, np.uint8))
        writer.put(f"{split}_labels", remap[y])
    return {"layout": "split", "class_names": [names[i] for i in order], "domain_names": None}


def _natural_key(s: str):
    # "2.png" before "10.png"; str/int positions alternate, so keys always compare
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s))


def _keep(parts) -> bool:
    return is_image_name(parts[-1]) or parts[-1] == "val_annotations.txt"


def _build_tree(name: str, src: Path, writer, progress: bool) -> dict:
    size, expected = KNOWN_SHA256.get(src.name, (None, None))
    if not src.is_file() or src.stat().st_size != size:
        expected = None
    files = list(iter_files(src, _keep, expected_sha256=expected, progress=progress))
    where = (lambda parts: str(src.joinpath(*parts))) if src.is_dir() else (lambda parts: f"{src}:{'/'.join(parts)}")
    if name in DOMAIN_SOURCES:
        files = _strip_top(files, lambda first, lengths: min(lengths) >= 4)
        entries = [(p[0], p[1], p, d) for p, d in files if len(p) == 3 and is_image_name(p[-1])]
        if not entries:
            raise DataCorruptError(f"{src}: no images laid out as <domain>/<class>/<image>; "
                                   "check the archive/folder (or delete it and fetch it again).")
        domain_names = sorted({e[0] for e in entries}, key=_natural_key)
        class_names = sorted({e[1] for e in entries}, key=_natural_key)
        entries.sort(key=lambda e: (_natural_key(e[0]), _natural_key(e[1]), _natural_key(e[2][-1]), e[2]))
        groups = {"all": entries}
    else:
        files = _strip_top(files, lambda first, lengths: first not in ("train", "test", "val"))
        train, test = _split_entries(files, src)
        class_names = sorted({c for c, _, _ in train} | {c for c, _, _ in test})
        domain_names = None
        groups = {}
        for split, ents in (("train", train), ("test", test)):
            groups[split] = sorted([(None, c, p, d) for c, p, d in ents],
                                   key=lambda e: (e[1], _natural_key(e[2][-1]), e[2]))
    del files

    mode = "L" if _CHANNELS[name] == 1 else "RGB"
    first = next(iter(groups.values()))[0]
    shape = decode_image(first[3], mode, where(first[2])).shape
    cls_index = {c: i for i, c in enumerate(class_names)}
    jobs = []
    for split, ents in groups.items():
        images = writer.create(f"{split}_images", (len(ents),) + shape, np.uint8)
        jobs.append((images, [(where(p), d) for _, _, p, d in ents]))
        writer.put(f"{split}_labels", np.array([cls_index[c] for _, c, _, _ in ents], np.int64))
        if domain_names is not None:
            dom_index = {dname: i for i, dname in enumerate(domain_names)}
            writer.put(f"{split}_domains", np.array([dom_index[dm] for dm, _, _, _ in ents], np.int64))
    decode_images(jobs, mode, shape, progress=progress, desc=f"decoding {name}")
    for images, _ in jobs:
        images.flush()
    del jobs, images  # release the memmaps before the cache hashes the files
    return {"layout": "domains" if domain_names else "split", "class_names": class_names,
            "domain_names": domain_names}


def _strip_top(files, is_wrapper):
    """Drop one extra top-level folder when every file sits under the same one."""
    if not files:
        return files
    firsts = {p[0] for p, _ in files}
    lengths = [len(p) for p, _ in files]
    if len(firsts) == 1 and min(lengths) >= 2 and is_wrapper(next(iter(firsts)), lengths):
        return [(p[1:], d) for p, d in files]
    return files


def _split_entries(files, src: Path):
    """(class, parts, bytes) lists for train and test, from the plain or official Tiny-ImageNet layout."""
    std = {"train": [], "test": [], "val": []}
    tiny_train, tiny_val, annotations = [], [], None
    for parts, data in files:
        if parts[-1] == "val_annotations.txt":
            annotations = {}
            for line in data.decode("utf-8", "replace").splitlines():
                cols = line.split("\t")
                if len(cols) >= 2:
                    annotations[cols[0]] = cols[1]
        elif len(parts) == 4 and parts[0] == "train" and parts[2] == "images":
            tiny_train.append((parts[1], parts, data))
        elif len(parts) == 3 and parts[:2] == ("val", "images"):
            tiny_val.append((parts, data))
        elif len(parts) == 3 and parts[0] in std and is_image_name(parts[-1]):
            std[parts[0]].append((parts[1], parts, data))
    if tiny_train:  # official Tiny-ImageNet: test/ has no labels, val/ is the test split
        if annotations is None:
            raise DataCorruptError(f"{src}: Tiny-ImageNet layout without val/val_annotations.txt; "
                                   "the archive is incomplete, fetch it again.")
        missing = [p for p, _ in tiny_val if p[-1] not in annotations]
        if missing:
            raise DataCorruptError(f"{src}: {'/'.join(missing[0])} has no entry in val/val_annotations.txt; "
                                   "the archive is incomplete or mixed, fetch it again.")
        train, test = tiny_train, [(annotations[p[-1]], p, d) for p, d in tiny_val]
    else:
        train, test = std["train"], std["test"] or std["val"]
    if not train or not test:
        raise DataCorruptError(
            f"{src}: expected images under train/<class>/ and test/<class>/ (found {len(train)} train, "
            f"{len(test)} test). Check the folder/archive layout.")
    return train, test
