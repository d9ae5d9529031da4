"""How far a few distribution-matching iterations move a synthetic set, by image step size η_x.

Used to pick η_x for a scenario: the Gaussian MMD's pixel gradients shrink with the image
size, so an η_x that moves 28x28 MNIST images moves 64x64x3 PACS images ~10x less.  For each
η_x, a fresh set is initialised from the first domain's real images, distilled with the
``finetune`` strategy for ITERATIONS iterations, and the relative L2 change of the set
(in the network's input space) is printed with the mean plastic (MMD) loss.

    python benchmarks/didd_step_probe.py --scenario pacs --ipc 10 --img-lr 100,1000,10000
"""
import argparse
import time

import torch

from memdistill.data.scenarios import build_scenario
from memdistill.distill.domain_experiment import DomainDistillConfig
from memdistill.distill.domain_incremental import DomainIncrementalDistiller, RealBatches
from memdistill.nets import build_backbone


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", choices=["rot-mnist", "pacs"], default="pacs")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--img-lr", default="100,1000,10000", help="comma-separated η_x values")
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    sizes = {"samples_per_task": 300} if args.scenario == "rot-mnist" else {}
    n_tasks = 20 if args.scenario == "rot-mnist" else 4
    sc = build_scenario(args.scenario, n_tasks, seed=args.seed, test_samples_per_task=200, progress=False, **sizes)
    task = sc.tasks[0]
    real = RealBatches(task.train_images, task.train_labels, sc.num_classes, sc.mean, sc.std)
    for lr in (float(v) for v in args.img_lr.split(",")):
        cfg = DomainDistillConfig(scenario=args.scenario, strategy="finetune", ipc=args.ipc,
                                  iterations=args.iterations, real_batch=16, img_lr=lr, seed=args.seed)
        distiller = DomainIncrementalDistiller(
            cfg.didd(), lambda: build_backbone("convnet", sc.input_shape, sc.num_classes),
            sc.num_classes, sc.mean, sc.std)
        distiller.sets.append(distiller._new_set(real))      # the seeded real start, kept to compare
        x0 = distiller.memory.images.detach().clone()
        started = time.perf_counter()
        log = distiller.learn_domain(real)
        x1 = distiller.memory.images.detach()
        change = float((x1 - x0).norm() / x0.norm())
        print(f"{args.scenario} ipc {args.ipc} η_x {lr:g}: relative change {change:.3f}, "
              f"mean plastic loss {log.plastic_loss:.4f}, {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
