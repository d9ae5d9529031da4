"""Choose the number of bases K of an addressable memory on a held-out validation set, as
Remember the Past does (Sec. 5.1, Fig. 4): for each K, distil on 90 % of the training set
and score on the other 10 %; write a table and a plot of validation accuracy against K.
The budget (``--ipc``) fixes the bytes, so each K has its own number of recalls (Eq. 4).

    python benchmarks/rtp_choose_bases.py --bases 16 24 32 --out benchmarks/out/rtp-mnist-choose-k -- \\
        --dataset mnist --ipc 1 --steps 80 --unroll 10 --real-batch 16 --eval-networks 2 --no-progress

Everything after ``--`` is passed to ``memdistill distill`` unchanged; a K whose folder
already holds a summary is read back, not run again.
"""
import argparse
import json
import sys
from pathlib import Path

from memdistill.cli import main as memdistill


def main():
    argv = sys.argv[1:]
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bases", type=int, nargs="+", required=True, help="the K values to try")
    p.add_argument("--validation-fraction", type=float, default=0.1)
    p.add_argument("--out", required=True)
    args = p.parse_args(own)
    out = Path(args.out)
    rows = []
    for k in args.bases:
        folder = out / f"bases{k}"
        if not (folder / "summary.json").exists():
            code = memdistill(["distill", "--memory", "addressable", *rest, "--bases", str(k),
                               "--validation-fraction", str(args.validation_fraction), "--out", str(folder)])
            if code:
                sys.exit(code)
        s = json.loads((folder / "summary.json").read_text())
        rows.append((k, s))
    rows.sort(key=lambda r: r[0])
    lines = ["| K (bases) | recalls / class | bytes | validation accuracy (%) | distill s |", "|---|---|---|---|---|"]
    for k, s in rows:
        lines.append(f"| {k} | {s['addressable']['recalls_per_class']} | {s['memory_bytes']} | "
                     f"{s['accuracy']['mean']:.2f} ± {s['accuracy']['std']:.2f} | {s['distill_s']:.0f} |")
    best = max(rows, key=lambda r: r[1]["accuracy"]["mean"])
    lines += ["", f"best K on validation: {best[0]}"]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.errorbar([k for k, _ in rows], [s["accuracy"]["mean"] for _, s in rows],
                yerr=[s["accuracy"]["std"] for _, s in rows], marker="o", capsize=3)
    ax.set_xlabel("number of bases K")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"{rows[0][1]['dataset']}, budget {rows[0][1]['ipc']} image(s) per class")
    fig.tight_layout()
    fig.savefig(out / "validation_vs_bases.png", dpi=120)


if __name__ == "__main__":
    main()
