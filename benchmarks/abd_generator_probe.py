"""Does ABD's generator collapse onto one class with more steps, or less?  (issue 6)

Trains a ResNet-32 on the first K classes of CIFAR-10 (offline, a few epochs: the
frozen theta_{n-1} of a task boundary), then trains the ABD generator against it
(Eq. 7, Table F weights, Adam lr 1e-3) and every ``--every`` steps prints how the
frozen model labels 256 fresh samples (eval-mode generator, as the learner samples
them) and the loss terms.  The paper trains 10,000 steps at width 64; the CPU preset
50 at width 16, where docs/benchmarks.md found 190 of 256 samples in one class.

    python benchmarks/abd_generator_probe.py --classes 4 --steps 600 --width 16
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from memdistill.data.augment import Preprocess
from memdistill.data.scenarios import NORMALISATION
from memdistill.data.sources import load_source
from memdistill.distill.inversion import (BatchNormStatistics, ImageGenerator, SynthesisWeights,
                                          synthesis_loss)
from memdistill.nets import build_backbone


def train_classifier(k: int, per_class: int, epochs: int, seed: int) -> tuple[torch.nn.Module, float]:
    """ResNet-32 on classes 0..k-1 of CIFAR-10; returns it (eval mode) and its test accuracy."""
    data = load_source("cifar10", progress=False)
    g = torch.Generator().manual_seed(seed)
    labels = torch.from_numpy(data.train.labels)
    idx = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in range(k)])
    x, y = torch.from_numpy(data.train.images[idx.numpy()]), labels[idx]
    mean, std = NORMALISATION["cifar10"]
    prep = Preprocess(mean, std, True, torch.device("cpu"))
    torch.manual_seed(seed)
    model = build_backbone("resnet32", (3, 32, 32), 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    model.train()
    for _ in range(epochs):
        for b in torch.randperm(len(x), generator=g).split(64):
            loss = F.cross_entropy(model(prep(x[b], g))[:, :k], y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    test_labels = torch.from_numpy(data.test.labels)
    tidx = torch.nonzero(test_labels < k).flatten()
    with torch.no_grad():
        pred = model(prep(torch.from_numpy(data.test.images[tidx.numpy()]), train=False))[:, :k].argmax(1)
    return model, (pred == test_labels[tidx]).float().mean().item() * 100


def histogram(generator: ImageGenerator, model: torch.nn.Module, k: int, n: int, train_mode: bool) -> list[int]:
    generator.train(train_mode)
    with torch.no_grad():
        x = generator.sample(n, torch.Generator().manual_seed(123))
        pred = model(x)[:, :k].argmax(1)
    generator.train()
    return torch.bincount(pred, minlength=k).tolist()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--classes", type=int, default=4, help="K old classes (CIFAR-10 classes 0..K-1)")
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    t0 = time.perf_counter()
    model, acc = train_classifier(args.classes, args.per_class, args.epochs, args.seed)
    model.requires_grad_(False)
    print(json.dumps({"classifier_test_acc": round(acc, 1), "seconds": round(time.perf_counter() - t0)}))
    torch.manual_seed(args.seed)
    generator = ImageGenerator((3, 32, 32), width=args.width)
    opt = torch.optim.Adam(generator.parameters(), lr=1e-3)
    noise = torch.Generator().manual_seed(args.seed)
    classes = list(range(args.classes))
    t0 = time.perf_counter()
    with BatchNormStatistics(model) as stats:
        for step in range(args.steps + 1):
            if step % args.every == 0:
                print(json.dumps({"step": step, "seconds": round(time.perf_counter() - t0),
                                  "eval_mode_classes": histogram(generator, model, args.classes, 256, False),
                                  "train_mode_classes": histogram(generator, model, args.classes, 256, True),
                                  **({k: round(v, 4) for k, v in parts.items()} if step else {})}), flush=True)
            if step == args.steps:
                break
            generator.train()
            loss, parts = synthesis_loss(generator, model, classes, args.batch, SynthesisWeights(), noise, stats)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


if __name__ == "__main__":
    main()
