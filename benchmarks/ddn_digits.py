"""Soft-label sources for ER on seq-digits, over several seeds: a fast check of the
DDN plug-in's variants (the Table 3 comparison of the DDN paper, in miniature).

    python benchmarks/ddn_digits.py --seeds 5                 # the quickstart setting
    python benchmarks/ddn_digits.py --seeds 5 --online --buffer 50
    python benchmarks/ddn_digits.py --seeds 5 --online --buffer 50 --only ddn   # a subset
    python benchmarks/ddn_digits.py --seeds 5 --online --buffer 50 --sweep fig4  # Fig. 4's alpha, beta

Prints one line per variant: class-IL ACC and FM, mean ± std over seeds, and the
mean training seconds (compare those only within one run of this script).
"""
from __future__ import annotations

import argparse
import statistics

from memdistill import engine
from memdistill.config import RunConfig
from memdistill.data.scenarios import build_scenario
from memdistill.data.sources import load_source

# (label, plug-in, plug-in options)
VARIANTS = [
    ("er", None, {}),
    ("er, buffer CE counted twice", "label-smoothing", {"eps": 0.0, "hard": True}),
    ("ddn (defaults: hard, step, every 2)", "ddn", {}),
    ("ddn, G's scores centred (center=true)", "ddn", {"center": True}),
    ("ddn, class-balanced outer loss", "ddn", {"outer_balance": True}),
    ("ddn, centred, class-balanced outer loss", "ddn", {"center": True, "outer_balance": True}),
    ("ddn, full look-ahead every step", "ddn", {"lookahead": "own", "every": 1}),
    ("ddn, hard label replaced (Eq. 7 alone)", "ddn", {"hard": False, "lookahead": "own", "every": 1}),
    ("ddn, G frozen at init, hard replaced", "ddn", {"hard": False, "lr": 1e-12}),
    ("label smoothing 0.1", "label-smoothing", {"eps": 0.1}),
    ("label smoothing 0.5", "label-smoothing", {"eps": 0.5}),
    ("random labels", "random-labels", {}),
    ("l2y", "l2y", {}),
]

# Fig. 4 of the DDN paper: alpha at beta 0.9 (a), beta at alpha 1.0 (b); the values of the
# ddn/fig4-alpha and ddn/fig4-beta presets
FIG4 = ([("er", None, {})]
        + [(f"ddn, alpha {a}", "ddn", {"alpha": a}) for a in (0.1, 0.5, 1.0, 1.5, 2.0)]
        + [(f"ddn, beta {b}", "ddn", {"beta": b}) for b in (0.0, 0.5, 0.7, 0.99)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--buffer", type=int, default=100)
    parser.add_argument("--online", action="store_true", help="one pass, batch 10 (default: the quickstart's offline setting)")
    parser.add_argument("--only", metavar="TEXT", help="run only the variants whose label contains TEXT")
    parser.add_argument("--sweep", choices=("sources", "fig4"), default="sources",
                        help="sources: the soft-label sources (Table 3 in miniature, default); "
                             "fig4: DDN's alpha and beta (Fig. 4; beta 0.9 is the alpha 1.0 row)")
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error("--seeds: need at least 2 for a standard deviation")
    source = load_source("digits", progress=False)
    setting = dict(setting="online", batch_size=10) if args.online else {}
    print(f"seq-digits, buffer {args.buffer}, {'online' if args.online else 'offline 5 epochs'}, "
          f"{args.seeds} seeds")
    variants = [v for v in (FIG4 if args.sweep == "fig4" else VARIANTS) if args.only is None or args.only in v[0]]
    if not variants:
        parser.error(f"--only: no variant label contains {args.only!r}")
    for label, plugin, options in variants:
        accs, fms, secs = [], [], []
        for seed in range(args.seeds):
            cfg = RunConfig(method="er", buffer=args.buffer, seed=seed, plugin=plugin,
                            plugin_args=options, **setting)
            scenario = build_scenario("seq-digits", source=source, seed=seed, progress=False)
            summary = engine.run(cfg, None, scenario, progress=False)
            accs.append(summary["class_il"]["acc"])
            fms.append(summary["class_il"]["fm"])
            secs.append(summary["train_s"])
        print(f"{label:42s} ACC {statistics.mean(accs):5.1f} ± {statistics.stdev(accs):4.1f}   "
              f"FM {statistics.mean(fms):5.1f} ± {statistics.stdev(fms):4.1f}   "
              f"train {statistics.mean(secs):6.2f} s", flush=True)


if __name__ == "__main__":
    main()
