"""How the bi-level step moves the per-sample rates ᾱ (stability) and β̄ (plasticity):
their mean and range after each domain, distillation only (no evaluation), under the
``didd-rot-mnist-20`` preset's settings.  Used to compare the meta optimiser (Adam, our
default, against the paper's plain gradient step) in docs/benchmarks.md.

    python benchmarks/didd_rates_trajectory.py --meta-optimizer sgd --meta-lr 1000 --ipc 10 --domains 6
"""
import argparse

from memdistill.data.scenarios import build_scenario
from memdistill.distill.domain_experiment import DomainDistillConfig
from memdistill.distill.domain_incremental import DomainIncrementalDistiller, RealBatches
from memdistill.nets import build_backbone


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--meta-optimizer", choices=["adam", "sgd"], default="adam")
    p.add_argument("--meta-lr", type=float, default=0.05)
    p.add_argument("--ipc", type=int, default=1)
    p.add_argument("--domains", type=int, default=6, help="how many of the 20 domains to distil")
    p.add_argument("--seed", type=int, default=0)
    defaults = DomainDistillConfig()
    for name in ("alpha_min", "alpha_max", "beta_min", "beta_max", "lambda_alpha", "lambda_beta"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name),
                       help=f"a rate range end or penalty weight (default {getattr(defaults, name):g})")
    args = p.parse_args()
    sc = build_scenario("rot-mnist", 20, seed=args.seed, samples_per_task=300, test_samples_per_task=200,
                        progress=False)
    cfg = DomainDistillConfig(scenario="rot-mnist", strategy="asymmetric", ipc=args.ipc, iterations=20,
                              real_batch=16, meta_optimizer=args.meta_optimizer, meta_lr=args.meta_lr,
                              alpha_min=args.alpha_min, alpha_max=args.alpha_max, beta_min=args.beta_min,
                              beta_max=args.beta_max, lambda_alpha=args.lambda_alpha,
                              lambda_beta=args.lambda_beta, seed=args.seed)
    distiller = DomainIncrementalDistiller(cfg.didd(), lambda: build_backbone("convnet", sc.input_shape, 10),
                                           sc.num_classes, sc.mean, sc.std)
    for t in range(args.domains):
        task = sc.tasks[t]
        distiller.learn_domain(RealBatches(task.train_images, task.train_labels, sc.num_classes, sc.mean, sc.std))
        a, b = (r.numpy() for r in distiller.current_rates())
        print(f"{args.meta_optimizer} lr {args.meta_lr} domain {t + 1}: alpha mean {a.mean():.2f} "
              f"[{a.min():.2f}, {a.max():.2f}]  beta mean {b.mean():.2f} [{b.min():.2f}, {b.max():.2f}]", flush=True)


if __name__ == "__main__":
    main()
