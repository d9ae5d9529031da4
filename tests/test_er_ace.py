import types

import torch
import torch.nn.functional as F

from memdistill.memory import MemoryBatch
from memdistill.methods import METHODS, LearnerContext
from memdistill.methods.er_ace import ERACE
from memdistill.nets import MLP

C = 8


def learner(tasks) -> ERACE:
    ctx = LearnerContext(num_classes=C, num_tasks=4, input_shape=(1, 4, 4), mean=(0.0,), std=(1.0,),
                         augment=False, device=torch.device("cpu"), buffer=10)
    out = ERACE(MLP(16, C, hidden=8), ctx)
    for index, classes in enumerate(tasks):
        out.begin_task(types.SimpleNamespace(index=index, classes=classes))
    return out


def batch_of(labels) -> MemoryBatch:
    n = len(labels)
    return MemoryBatch(torch.zeros(n, 1, 4, 4, dtype=torch.uint8), torch.tensor(labels),
                       torch.zeros(n, dtype=torch.long), torch.arange(n))


def test_registered():
    assert METHODS["er-ace"] is ERACE


def test_first_task_masks_nothing():
    ace = learner([[0, 1]])
    logits, labels = torch.randn(3, C), torch.tensor([0, 0, 0])
    assert torch.allclose(ace.stream_loss(logits, labels), F.cross_entropy(logits, labels))


def test_stream_loss_masks_exactly_the_seen_classes_absent_from_the_batch():
    ace = learner([[0, 1], [2, 3]])          # seen 0..3; the batch holds only class 2
    logits = torch.randn(3, C, requires_grad=True)
    labels = torch.tensor([2, 2, 2])
    loss = ace.stream_loss(logits, labels)
    kept = [2, 4, 5, 6, 7]                   # present, and not seen yet
    direct = -torch.log_softmax(logits[:, kept], 1)[:, 0].mean()
    assert torch.allclose(loss, direct)
    loss.backward()
    assert torch.all(logits.grad[:, [0, 1, 3]] == 0)
    assert torch.all(logits.grad[:, kept] != 0)


def test_memory_loss_runs_over_all_seen_classes():
    ace = learner([[0, 1], [2, 3]])
    logits = torch.randn(4, C, requires_grad=True)
    batch = batch_of([0, 1, 3, 2])
    loss = ace.memory_loss(logits, batch)
    assert torch.allclose(loss, F.cross_entropy(logits[:, :4], batch.labels))
    loss.backward()
    assert torch.all(logits.grad[:, 4:] == 0) and torch.all(logits.grad[:, :4] != 0)


def test_memory_loss_with_soft_targets_is_finite():
    ace = learner([[0, 1], [2, 3]])
    soft = torch.zeros(2, C)
    soft[:, :4] = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.2, 0.6]])

    class Soft:
        def memory_targets(self, batch, logits):
            return soft
    ace.plugins = [Soft()]
    logits = torch.randn(2, C)
    loss = ace.memory_loss(logits, batch_of([0, 3]))
    assert torch.isfinite(loss)
    assert torch.allclose(loss, -(soft[:, :4] * torch.log_softmax(logits[:, :4], 1)).sum(1).mean())
