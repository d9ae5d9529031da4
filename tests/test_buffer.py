import numpy as np
import pytest
import torch

from memdistill.memory import ClassBalancedBuffer, ReservoirBuffer


def _offer(buffer, n, batch, generator, num_classes=10):
    for start in range(0, n, batch):
        ids = torch.arange(start, min(start + batch, n))
        images = (ids % 256).to(torch.uint8).reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
        buffer.add(images, ids, ids // (n // 5 + 1), generator, extras={"id": ids[:, None].float()})


def test_reservoir_keeps_a_uniform_sample():
    # Each of n offered samples must end up stored with probability capacity / n.
    n, capacity, repeats = 100, 10, 2000
    counts = np.zeros(n)
    g = torch.Generator().manual_seed(0)
    for _ in range(repeats):
        buf = ReservoirBuffer(capacity, (1, 2, 2), extras={"id": (1,)})
        _offer(buf, n, 7, g)
        assert len(buf) == capacity
        counts[buf.extras["id"][:, 0].long().numpy()] += 1
    expected = repeats * capacity / n
    chi2 = ((counts - expected) ** 2 / expected).sum()
    # chi-square with 99 dof: the 99.9% quantile is ~148.2
    assert chi2 < 148.2, chi2
    # early and late halves of the stream are equally represented
    assert abs(counts[:50].sum() - counts[50:].sum()) < 0.05 * counts.sum()


def test_reservoir_is_not_uniform_when_broken():
    # Sanity check of the statistic: a buffer that keeps only the first samples fails it.
    counts = np.zeros(100)
    counts[:10] = 2000
    expected = 2000 * 10 / 100
    assert ((counts - expected) ** 2 / expected).sum() > 148.2


def test_reservoir_stores_images_labels_tasks_and_extras_together():
    g = torch.Generator().manual_seed(1)
    buf = ReservoirBuffer(20, (1, 2, 2), extras={"id": (1,)})
    _offer(buf, 300, 32, g)
    ids = buf.extras["id"][:, 0].long()
    assert torch.equal(buf.labels, ids)
    assert torch.equal(buf.images[:, 0, 0, 0].long(), ids % 256)
    assert len(set(ids.tolist())) == 20            # no duplicates
    assert buf.seen == 300


def test_buffer_bytes_count_what_is_stored():
    g = torch.Generator().manual_seed(0)
    buf = ReservoirBuffer(50, (3, 4, 4), extras={"logits": (10,)})
    assert buf.nbytes == 0
    x = torch.zeros(20, 3, 4, 4, dtype=torch.uint8)
    buf.add(x, torch.zeros(20, dtype=torch.long), 0, g, extras={"logits": torch.zeros(20, 10)})
    per_sample = 3 * 4 * 4 * 1 + 8 + 8 + 10 * 4
    assert buf.nbytes == 20 * per_sample


def test_sample_without_replacement_and_capped_at_size():
    g = torch.Generator().manual_seed(0)
    buf = ReservoirBuffer(30, (1, 2, 2), extras={"id": (1,)})
    _offer(buf, 12, 12, g)
    batch = buf.sample(32, g)
    assert len(batch) == 12
    assert len(set(batch.indices.tolist())) == 12
    with pytest.raises(ValueError):
        ReservoirBuffer(5, (1,)).sample(1, g)


def test_missing_extras_is_an_error():
    buf = ReservoirBuffer(5, (1, 2, 2), extras={"logits": (3,)})
    with pytest.raises(ValueError, match="logits"):
        buf.add(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), 0,
                torch.Generator())


def test_class_balanced_buffer_balances_classes():
    g = torch.Generator().manual_seed(0)
    buf = ClassBalancedBuffer(30, (1, 2, 2))
    # 5 tasks of 2 classes, 200 samples each, in order
    for task in range(5):
        for _ in range(10):
            labels = torch.randint(2 * task, 2 * task + 2, (20,), generator=g)
            buf.add(torch.zeros(20, 1, 2, 2, dtype=torch.uint8), labels, task, g)
    counts = torch.bincount(buf.labels, minlength=10)
    assert len(buf) == 30
    assert counts.max() - counts.min() <= 1, counts


def test_state_dict_round_trip():
    g = torch.Generator().manual_seed(0)
    buf = ReservoirBuffer(10, (1, 2, 2), extras={"id": (1,)})
    _offer(buf, 40, 8, g)
    other = ReservoirBuffer(10, (1, 2, 2), extras={"id": (1,)})
    other.load_state_dict(buf.state_dict())
    assert torch.equal(other.labels, buf.labels) and other.seen == 40 and len(other) == 10
