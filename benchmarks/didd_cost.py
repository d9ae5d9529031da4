"""Distillation cost per iteration of each domain-incremental strategy, measured in one process.

The strategies take turns on the same domains (round r: every strategy learns domain r + 1 for
ITERATIONS iterations), so a load change on a shared machine hits all of them alike and the
ratios to ``finetune`` are fair even when the seconds drift.  The time of a ``learn_domain``
call includes everything a strategy does for a domain (the meta step of ``asymmetric``, the
importance draws of EWC / MAS at the domain's end).  Evaluation is not included.

    python benchmarks/didd_cost.py --ipc 10 --rounds 4 --iterations 4
"""
import argparse
import time

from memdistill.data.scenarios import build_scenario
from memdistill.distill.domain_experiment import DomainDistillConfig
from memdistill.distill.domain_incremental import DomainIncrementalDistiller, RealBatches
from memdistill.nets import build_backbone

STRATEGIES = ["finetune", "stable", "asymmetric-linear", "asymmetric", "ewc", "mas", "lwf"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ipc", type=int, default=1)
    p.add_argument("--rounds", type=int, default=4, help="domains after the first, each timed once per strategy")
    p.add_argument("--iterations", type=int, default=4, help="DM iterations per timed domain")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    sc = build_scenario("rot-mnist", 20, seed=args.seed, samples_per_task=300, test_samples_per_task=200,
                        progress=False)
    real = [RealBatches(t.train_images, t.train_labels, sc.num_classes, sc.mean, sc.std) for t in sc.tasks]
    distillers = {}
    for s in STRATEGIES:
        cfg = DomainDistillConfig(scenario="rot-mnist", strategy=s, ipc=args.ipc, iterations=args.iterations,
                                  real_batch=16, seed=args.seed)
        distillers[s] = DomainIncrementalDistiller(
            cfg.didd(), lambda: build_backbone("convnet", sc.input_shape, sc.num_classes),
            sc.num_classes, sc.mean, sc.std)
        distillers[s].learn_domain(real[0], iterations=1)   # a previous set for the stability terms
    seconds = {s: 0.0 for s in STRATEGIES}
    for r in range(args.rounds):
        for s in STRATEGIES:
            started = time.perf_counter()
            distillers[s].learn_domain(real[1 + r])
            seconds[s] += time.perf_counter() - started
    n = args.rounds * args.iterations
    base = seconds["finetune"] / n
    print(f"IPC {args.ipc}, {args.rounds} rounds x {args.iterations} iterations, real batch 16 per class")
    print("| strategy | s / iteration | × finetune |\n|---|---|---|")
    for s in STRATEGIES:
        print(f"| {s} | {seconds[s] / n:.2f} | {seconds[s] / n / base:.2f} |")


if __name__ == "__main__":
    main()
