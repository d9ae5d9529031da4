import pytest
import torch

from memdistill.data.scenarios import (ScenarioError, build_scenario, permute_pixels,
                                       rotate_images)
from tests.conftest import make_source


def test_class_incremental_tasks_are_disjoint_and_complete(source):
    sc = build_scenario("seq-digits", source=source)
    assert sc.kind == "class-incremental" and sc.task_il
    assert len(sc.tasks) == 5 and sc.num_classes == 10
    seen = set()
    for t, task in enumerate(sc.tasks):
        assert task.classes == [2 * t, 2 * t + 1]
        assert set(task.train_labels.tolist()) == set(task.classes)
        assert set(task.test_labels.tolist()) == set(task.classes)
        assert not seen & set(task.classes)
        seen |= set(task.classes)
        assert task.train_images.dtype == torch.uint8 and task.train_images.shape[1:] == (1, 8, 8)
    assert sum(len(t.train_labels) for t in sc.tasks) == 200


def test_class_order_seed_shuffles_and_remaps(source):
    fixed = build_scenario("seq-digits", source=source)
    shuffled = build_scenario("seq-digits", source=source, class_order_seed=3)
    assert fixed.class_names == [f"c{i}" for i in range(10)]
    assert shuffled.class_names != fixed.class_names
    assert sorted(shuffled.class_names) == sorted(fixed.class_names)
    # remapped label k holds the images of original class class_names[k]
    first = shuffled.tasks[0]
    original = int(shuffled.class_names[0][1:])
    images = source.train.images[source.train.labels == original]
    assert torch.equal(first.train_images[first.train_labels == 0], torch.from_numpy(images))
    assert shuffled.tasks[0].classes == [0, 1]


def test_task_counts_must_divide_classes(source):
    sc = build_scenario("seq-digits", n_tasks=2, source=source)
    assert [len(t.classes) for t in sc.tasks] == [5, 5]
    with pytest.raises(ScenarioError, match="allowed: 1, 2, 5, 10"):
        build_scenario("seq-digits", n_tasks=3, source=source)
    with pytest.raises(ScenarioError, match="choose from"):
        build_scenario("seq-nothing", source=source)


def test_rotated_mnist_tasks_are_fixed_rotations():
    src = make_source(train_per_class=30, shape=(1, 28, 28))
    sc = build_scenario("rot-mnist", n_tasks=4, samples_per_task=50, source=src)
    assert sc.kind == "domain-incremental" and not sc.task_il
    assert [t.name for t in sc.tasks] == ["rotation 0 deg", "rotation 45 deg",
                                          "rotation 90 deg", "rotation 135 deg"]
    assert all(len(t.train_labels) == 50 and t.classes == list(range(10)) for t in sc.tasks)
    # a 90-degree rotation of a uint8 image is exact
    x = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    assert torch.equal(rotate_images(x, 90), torch.rot90(x, 1, dims=(2, 3)))


def test_permuted_mnist_uses_one_permutation_per_task():
    src = make_source(train_per_class=10, shape=(1, 28, 28))
    sc = build_scenario("perm-mnist", n_tasks=3, samples_per_task=1000, source=src)
    x = torch.arange(2 * 16, dtype=torch.uint8).reshape(2, 1, 4, 4)
    perm = torch.randperm(16)
    out = permute_pixels(x, perm)
    assert torch.equal(out.reshape(2, 16), x.reshape(2, 16)[:, perm])
    # every task holds all 100 images, each a pixel permutation of the source image,
    # and different tasks use different permutations
    a, b = sc.tasks[0].train_images.reshape(100, -1), sc.tasks[1].train_images.reshape(100, -1)
    original = torch.from_numpy(src.train.images).reshape(100, -1)
    assert torch.equal(a.sort(1).values, original.sort(1).values)
    assert torch.equal(b.sort(1).values, original.sort(1).values)
    assert not torch.equal(a, b) and not torch.equal(a, original)


def test_pacs_one_task_per_domain():
    src = make_source(num_classes=7, train_per_class=8, shape=(3, 8, 8),
                      domains=["art_painting", "cartoon", "photo", "sketch"])
    sc = build_scenario("pacs", source=src)
    assert [t.name for t in sc.tasks] == ["domain photo", "domain art_painting",
                                          "domain cartoon", "domain sketch"]
    assert sum(len(t.train_labels) for t in sc.tasks) == 56
    with pytest.raises(ScenarioError):
        build_scenario("pacs", n_tasks=3, source=src)


def test_core50_one_task_per_session_in_natural_order():
    sessions = [f"s{i}" for i in range(1, 12)]
    src = make_source(num_classes=3, train_per_class=11, shape=(3, 8, 8), domains=sessions)
    sc = build_scenario("core50", source=src)
    assert [t.name for t in sc.tasks] == [f"domain s{i}" for i in range(1, 12)]
    assert sc.kind == "domain-incremental" and all(t.classes == [0, 1, 2] for t in sc.tasks)
    few = make_source(num_classes=3, train_per_class=8, shape=(3, 8, 8), domains=["s1", "s2"])
    with pytest.raises(ScenarioError, match="needs 11 domains; the data has 2: s1, s2"):
        build_scenario("core50", source=few)
