import numpy as np
import pytest

from memdistill.data.sources import SourceData, Split


def make_source(num_classes=10, train_per_class=20, test_per_class=5, shape=(1, 8, 8),
                domains=None, seed=0) -> SourceData:
    """Random images whose class is visible in the pixels (so a net can learn it)."""
    rng = np.random.RandomState(seed)

    def split(per_class):
        labels = np.repeat(np.arange(num_classes), per_class).astype(np.int64)
        images = rng.randint(0, 60, size=(len(labels), *shape)).astype(np.uint8)
        flat = images.reshape(len(labels), -1)
        flat[np.arange(len(labels)), labels % flat.shape[1]] = 255
        dom = None if domains is None else np.tile(np.arange(len(domains)), len(labels))[: len(labels)]
        return Split(images, labels, dom)

    return SourceData("synthetic", split(train_per_class), split(test_per_class),
                      [f"c{i}" for i in range(num_classes)], list(domains) if domains else None)


@pytest.fixture
def source():
    return make_source()


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Run in an empty folder with no dataset search path outside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MEMDISTILL_DATA", raising=False)
    monkeypatch.setenv("MEMDISTILL_CACHE", str(tmp_path / "cache"))
    return tmp_path
