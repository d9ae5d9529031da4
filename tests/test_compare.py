"""memdistill compare end to end (tiny), the didd method, and compare's input errors."""
import json

import numpy as np
import pytest
import torch

from memdistill import budget as B
from memdistill import engine
from memdistill.cli import main
from memdistill.config import ConfigError, RunConfig
from memdistill.data.scenarios import build_scenario
from memdistill.methods.didd import didd_memory_bytes

from conftest import make_source

TINY = ["--samples-per-task", "40", "--epochs", "1", "--no-progress", "--no-figures"]
KIND_ARGS = ["--kind-arg", "exemplars+ddn:hidden=8",
             *[a for k in ("distilled-images", "distilled-images-uint8", "addressable")
               for a in ("--kind-arg", f"{k}:distill_steps=2", "--kind-arg", f"{k}:retrain_epochs=5",
                         "--kind-arg", f"{k}:unroll=2", "--kind-arg", f"{k}:real_batch=4")],
             "--kind-arg", "addressable:bases=4", "--kind-arg", "addressable:downsample=2",
             "--kind-arg", "generator:generator_steps=2", "--kind-arg", "generator:generator_width=4",
             "--kind-arg", "generator:noise_dim=16"]


def _summaries(out):
    return {str(p.parent.relative_to(out)): json.loads(p.read_text()) for p in out.rglob("summary.json")}


def test_compare_on_digits_runs_every_kind_at_equal_bytes(isolated, capsys):
    out = isolated / "cmp"
    argv = ["compare", "--scenario", "seq-digits", "--budget", "6KB", "12KB", "--out", str(out), *TINY, *KIND_ARGS]
    assert main(argv) == 0
    kinds = B.applicable_kinds("class-incremental")
    assert "synthetic-set" not in kinds and "generator" in kinds
    table = (out / "compare.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| kind")]
    assert len(rows) == (len(kinds) - 1) * 2 + 1           # every kind x budget, the generator once
    assert sum("fixed (one point" in r for r in rows) == 1
    # the "holds" column says what each memory is made of
    holds = {r.split(" | ")[0][2:] + "/" + r.split(" | ")[1]: r.split(" | ")[3] for r in rows}
    assert holds["generator/fixed (one point, not a line)"] == "width 4, fixed size"
    assert holds["exemplars/6KB"].endswith(" samples") and "G_w" in holds["exemplars+ddn/12KB"]
    assert "img/class/task" in holds["distilled-images/12KB"] and "recalls/class/task" in holds["addressable/12KB"]
    assert (out / "compare.png").stat().st_size > 5000
    summaries = _summaries(out)
    assert len(summaries) == len(rows)
    records = json.loads((out / "compare.json").read_text())
    for r in records:
        s = summaries[f"{r['kind']}/{r['label']}/seed0"]
        assert s["memory_kind"] == r["kind"]
        assert sum(s["memory_bytes_detail"].values()) == s["memory_bytes"]
        # what the run holds is what was planned, and within the budget
        assert r["bytes_used"] == [r["planned_bytes"]] == [s["memory_bytes"]], r["kind"]
        if r["budget"] is not None:
            assert s["memory_budget_bytes"] == r["budget"] and s["memory_bytes"] <= r["budget"]
    assert summaries["distilled-images-uint8/12KB/seed0"]["memory_bytes_detail"].keys() == {"images-uint8"}
    assert summaries["exemplars+ddn/6KB/seed0"]["plugin"] == "ddn"
    # again: nothing is run twice (no summary rewritten)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")}
    assert len(stamps) == len(rows)
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")} == stamps
    # --report-only runs nothing: a run without its summary is a row with 0 seeds
    (out / "exemplars" / "6KB" / "seed0" / "summary.json").unlink()
    assert main([*argv, "--report-only"]) == 0
    assert not (out / "exemplars" / "6KB" / "seed0" / "summary.json").exists()
    assert "not in the table yet: exemplars/6KB/seed0" in capsys.readouterr().err
    row = [line for line in (out / "compare.md").read_text().splitlines() if line.startswith("| exemplars | 6KB")]
    assert row and row[0].endswith("| – | – | – | 0 |")
    # --include: rows of another folder fill the row that has no run here, and add rows it lacks
    other = [dict(r) for r in records if r["kind"] == "exemplars"]
    for r in other:
        r.update(acc=[11.0, float("nan")], seeds=1, bytes_used=[r["planned_bytes"]])
    other.append({**other[0], "kind": "tape", "label": "99KB", "budget": 99000, "bytes_used": [99000]})
    (isolated / "other.json").write_text(json.dumps(other))
    assert main([*argv, "--report-only", "--include", str(isolated / "other.json")]) == 0
    merged = {(r["kind"], r["label"]): r for r in json.loads((out / "compare.json").read_text())}
    assert merged[("exemplars", "6KB")]["acc"][0] == 11.0           # no run here: the included row
    assert merged[("exemplars", "12KB")]["acc"][0] != 11.0          # a run here wins
    assert merged[("tape", "99KB")]["from"] == str(isolated / "other.json")
    assert "(not run in this folder): exemplars 6KB, tape 99KB." in (out / "compare.md").read_text()
    (isolated / "bad.json").write_text(json.dumps([{"kind": "x"}]))
    assert main([*argv, "--report-only", "--include", str(isolated / "bad.json")]) == 2
    assert "--include: record 0 of" in capsys.readouterr().err


def _write_tiny_mnist(root, classes=4, per_class=12, size=8):
    from PIL import Image
    rng = np.random.RandomState(0)
    for split, n in (("train", per_class), ("test", 4)):
        for c in range(classes):
            folder = root / split / str(c)
            folder.mkdir(parents=True)
            for i in range(n):
                img = rng.randint(0, 40, (size, size)).astype(np.uint8)
                img[c, :] = 255                            # the class is a bright row
                Image.fromarray(img, mode="L").save(folder / f"{i}.png")


def test_compare_on_a_tiny_rotated_scenario(isolated):
    _write_tiny_mnist(isolated / "mnist")
    out = isolated / "rot"
    argv = ["compare", "--scenario", "rot-mnist", "--n-tasks", "3", "--budget-ipc", "4", "--kinds", "exemplars",
            "synthetic-set", "--kind-arg", "synthetic-set:iterations=2", "--kind-arg", "synthetic-set:real_batch=4",
            "--kind-arg", "synthetic-set:retrain_epochs=5", "--data-dir", str(isolated / "mnist"),
            "--out", str(out), "--no-progress", "--no-figures", "--samples-per-task", "24"]
    assert main(argv) == 0
    summaries = _summaries(out)
    assert set(summaries) == {"exemplars/ipc4/seed0", "synthetic-set/ipc4/seed0"}
    budget = 4 * 4 * (64 + 16)                             # 4 images per class as exemplars
    didd = summaries["synthetic-set/ipc4/seed0"]
    assert didd["memory_bytes"] == didd_memory_bytes(budget // didd_memory_bytes(1, 4, (1, 8, 8)), 4, (1, 8, 8))
    assert didd["memory_bytes"] <= budget and summaries["exemplars/ipc4/seed0"]["memory_bytes"] == budget
    assert len((out / "compare.md").read_text().splitlines()) >= 6


def _rot(n_tasks=3):
    return build_scenario("rot-mnist", n_tasks, source=make_source(num_classes=4, train_per_class=15),
                          samples_per_task=40, progress=False)


DIDD_ARGS = {"ipc": 2, "iterations": 3, "real_batch": 6, "retrain_epochs": 10}


def test_didd_method_keeps_one_fixed_size_set_and_resumes(tmp_path):
    cfg = RunConfig(scenario="rot-mnist", n_tasks=3, method="didd", backbone="mlp", method_args=DIDD_ARGS)
    whole = engine.run(cfg, tmp_path / "whole", _rot(), progress=False)
    assert whole["memory_bytes"] == didd_memory_bytes(2, 4, (1, 8, 8)) == 8 * (256 + 16)
    assert whole["memory_bytes_detail"] == {"synthetic_images": 8 * 256, "labels": 64, "update_rates": 64}
    assert len(whole["distill_s_per_task"]) == 3 and whole["class_il"]["acc"] > 0
    with pytest.raises(engine.Interrupted):
        engine.run(cfg, tmp_path / "cut", _rot(), progress=False, stop_after_task=1)
    resumed = engine.run(cfg, tmp_path / "cut", _rot(), progress=False)
    assert resumed["class_il"] == whole["class_il"]
    stable = engine.run(RunConfig(**{**cfg.to_dict(), "method_args": {**DIDD_ARGS, "strategy": "stable"}}),
                        None, _rot(), progress=False)
    assert stable["memory_bytes"] == didd_memory_bytes(2, 4, (1, 8, 8), "stable")
    # more images per class than the first domain has: the set still has its planned size
    big = engine.run(RunConfig(**{**cfg.to_dict(), "method_args": {**DIDD_ARGS, "ipc": 15}}), None, _rot(),
                     progress=False)
    assert big["memory_bytes"] == didd_memory_bytes(15, 4, (1, 8, 8))


def test_didd_refuses_class_incremental_scenarios_and_joint():
    with pytest.raises(ConfigError, match="--method: method didd does not apply"):
        engine.prepare(RunConfig(method="didd"), progress=False)
    with pytest.raises(ConfigError, match="strategy must be one of"):
        engine.run(RunConfig(scenario="rot-mnist", n_tasks=3, method="didd", backbone="mlp",
                             method_args={"strategy": "joint"}), None, _rot(), progress=False)
    with pytest.raises(ConfigError, match="alpha_min must be below alpha_max"):
        engine.run(RunConfig(scenario="rot-mnist", n_tasks=3, method="didd", backbone="mlp",
                             method_args={"alpha_min": 2.0}), None, _rot(), progress=False)


@pytest.mark.parametrize("argv,needle", [
    (["--kinds", "tape"], "--kinds: unknown memory kind 'tape'; allowed: exemplars"),
    (["--kinds", "synthetic-set"], "--kinds: kind synthetic-set does not apply"),
    (["--budget", "12XB"], "--budget: cannot read '12XB'; allowed: bytes"),
    (["--budget", "100"], "--budget: 100 bytes is too small for kind exemplars"),
    (["--kind-arg", "tape:x=1"], "--kind-arg: unknown memory kind 'tape'"),
    (["--kinds", "addressable", "--kind-arg", "addressable:nope=1"], "--method-arg: method compress-recall has no option"),
    (["--include", "no-such.json"], "--include: no such file: no-such.json"),
])
def test_bad_input_exits_2_before_any_folder(isolated, capsys, argv, needle):
    base = ["compare", "--scenario", "seq-digits", "--out", str(isolated / "out"), "--no-progress"]
    if "--budget" not in argv:
        base += ["--budget", "50KB"]
    assert main(base + argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not (isolated / "out").exists()


def test_compare_takes_no_method_or_buffer(isolated):
    with pytest.raises(SystemExit) as e:
        main(["compare", "--budget", "50KB", "--method", "er"])
    assert e.value.code == 2


def test_presets_plan_without_running(capsys):
    from memdistill.compare import CompareSpec, plan_compare
    from memdistill.config import load_preset
    for name in ("compare/split-cifar10", "compare/rot-mnist"):
        options = load_preset(name)
        assert len(options["budget"]) == 3 and options["seed"] == [0, 1, 2]
    # planned from the preset's settings on a stand-in scenario of the same shape
    spec = CompareSpec.from_options({**load_preset("compare/rot-mnist"), "n_tasks": 3})
    rows, shape = plan_compare(spec, scenario=_rot(3))
    assert {r.plan.kind for r in rows} == set(B.applicable_kinds("domain-incremental"))
    assert all(r.plan.planned_bytes <= r.plan.budget for r in rows)
    assert len(rows[0].jobs) == 3
