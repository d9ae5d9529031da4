import json
import os
from pathlib import Path

import pytest

from memdistill.cli import main




def _error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


@pytest.mark.parametrize("argv,needle", [
    (["--scenario", "seq-nothing"], "--scenario: unknown value 'seq-nothing'; allowed: seq-digits"),
    (["--method", "ewc2"], "--method: unknown value 'ewc2'; allowed: finetune, joint, er"),
    (["--backbone", "vgg"], "--backbone: unknown value 'vgg'; allowed: resnet18"),
    (["--buffer", "-5"], "--buffer: must be an integer >= 0 (got -5)"),
    (["--batch-size", "0"], "--batch-size: must be an integer >= 1"),
    (["--lr", "0"], "--lr: must be a positive number"),
    (["--n-tasks", "3"], "--n-tasks: 10 classes of seq-digits do not divide into 3 tasks; allowed: 1, 2, 5, 10"),
    (["--precision", "fp8"], "--precision: unknown value 'fp8'; allowed: fp32, bf16"),
    (["--setting", "sometimes"], "--setting: unknown value 'sometimes'; allowed: online, offline"),
    (["--method", "er", "--buffer", "0"], "--buffer: method er replays from memory"),
    (["--preset", "no-such-preset"], "--preset: no preset 'no-such-preset'"),
    (["--method-arg", "alpha=1"], "--method-arg: method er has no option 'alpha'"),
    (["--plugin", "magic"], "--plugin: unknown value 'magic'; allowed: ddn"),
    (["--method", "finetune", "--plugin", "ddn"], "--plugin: plugin ddn needs a replay method that takes plug-ins; allowed: er"),
    (["--plugin-arg", "every=2"], "--plugin-arg: given without --plugin"),
])
def test_bad_input_exits_2_with_a_clear_message_and_writes_nothing(isolated, capsys, argv, needle):
    code = main(["run", "--out", "out", "--no-progress"] + argv)
    assert code == 2
    line = _error(capsys)
    assert needle in line, line
    assert line.startswith("memdistill run: error:")
    assert not (isolated / "out").exists()


def test_missing_data_names_where_it_looked(isolated, capsys):
    code = main(["run", "--scenario", "seq-cifar10", "--out", "out", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "cifar10" in err and "MEMDISTILL_DATA" in err
    assert not (isolated / "out").exists()


def test_argparse_errors_exit_2(isolated):
    with pytest.raises(SystemExit) as e:
        main(["run", "--buffer", "many"])
    assert e.value.code == 2


def test_run_several_methods_and_seeds_then_report(isolated, capsys):
    code = main(["run", "--scenario", "seq-digits", "--method", "er", "finetune", "--buffer", "100",
                 "--seed", "0", "1", "--epochs", "1", "--out", "runs", "--no-progress"])
    assert code == 0
    out, err = capsys.readouterr()
    assert "| er |" in out and "| finetune |" in out and "±" in out
    # no bars, but a line per finished task of each run (what a background run's log needs)
    assert err.count("after task 5/5: class-IL") == 4 and "it/s" not in err
    summaries = sorted(Path("runs").rglob("summary.json"))
    assert len(summaries) == 4
    assert {json.loads(p.read_text())["seed"] for p in summaries} == {0, 1}
    assert main(["report", "runs"]) == 0
    assert Path("runs/report.md").exists() and Path("runs/heatmap.png").stat().st_size > 1000


def test_run_resumes_and_skips_a_finished_run(isolated, capsys):
    argv = ["run", "--scenario", "seq-digits", "--method", "finetune", "--epochs", "1",
            "--out", "one", "--no-progress"]
    assert main(argv) == 0
    first = json.loads(Path("one/summary.json").read_text())
    mtime = os.stat("one/summary.json").st_mtime_ns
    assert main(argv) == 0
    assert json.loads(Path("one/summary.json").read_text()) == first
    assert os.stat("one/summary.json").st_mtime_ns == mtime


def test_preset_file_and_overrides(isolated, capsys):
    Path("p.yaml").write_text("scenario: seq-digits\nmethod: finetune\nepochs: 1\nseed: [3]\n")
    assert main(["run", "--preset", "p.yaml", "--lr", "0.05", "--out", "o", "--no-progress"]) == 0
    summary = json.loads(Path("o/summary.json").read_text())
    assert summary["seed"] == 3 and summary["method"] == "finetune"
    assert "lr: 0.05" in Path("o/config.yaml").read_text()
    Path("bad.yaml").write_text("scenario: seq-digits\nbogus: 1\n")
    assert main(["run", "--preset", "bad.yaml", "--out", "o2", "--no-progress"]) == 2
    assert "bogus" in _error(capsys)


def test_plugin_runs_and_is_labelled(isolated, capsys):
    code = main(["run", "--scenario", "seq-digits", "--method", "er", "--plugin", "label-smoothing",
                 "--plugin-arg", "eps=0.1", "--buffer", "50", "--epochs", "1", "--out", "ls", "--no-progress"])
    assert code == 0
    assert "| er+label-smoothing:eps=0.1 |" in capsys.readouterr().out
    assert json.loads(Path("ls/summary.json").read_text())["plugin"] == "label-smoothing"


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ["er", "finetune", "joint", "seq-cifar10", "rot-mnist", "pacs", "reduced-resnet18"]:
        assert name in out


def test_list_one_method_or_plugin_shows_its_options(capsys):
    assert main(["list", "compress-recall"]) == 0
    out = capsys.readouterr().out
    assert "--method-arg KEY=VALUE" in out and "inner_batch" in out and "retrain_epochs         300" in out
    assert main(["list", "ddn"]) == 0
    out = capsys.readouterr().out
    assert "--method METHOD+ddn:KEY=VALUE" in out and "beta                   0.9" in out
    assert main(["list", "kinds"]) == 0
    assert "distilled-images-uint8" in capsys.readouterr().out
    assert main(["list", "bogus"]) == 2
    assert "unknown section, method or plug-in 'bogus'; allowed: methods" in _error(capsys)


def test_report_without_runs(isolated, capsys):
    assert main(["report", "nothing-here"]) == 2
    assert "no run folders" in _error(capsys)


def test_method_plus_plugin_specs_in_one_sweep(isolated, capsys):
    """METHOD+PLUGIN[:k=v] puts a plug-in (with its options) on one run of a sweep only."""
    code = main(["run", "--scenario", "seq-digits", "--method", "er", "er+label-smoothing:eps=0.5",
                 "finetune", "--buffer", "50", "--epochs", "1", "--out", "mix", "--no-progress"])
    assert code == 0
    table = capsys.readouterr().out
    assert "| er |" in table and "| er+label-smoothing:eps=0.5 |" in table and "| finetune |" in table
    summary = json.loads(Path("mix/er+label-smoothing-eps0.5/seed0/summary.json").read_text())
    assert summary["plugin"] == "label-smoothing" and summary["plugin_args"] == {"eps": 0.5}
    assert json.loads(Path("mix/er/seed0/summary.json").read_text())["plugin"] is None


def test_method_spec_conflicting_with_plugin_flag(isolated, capsys):
    assert main(["run", "--method", "er+ddn", "--plugin", "l2y", "--out", "x", "--no-progress"]) == 2
    assert "--plugin: er+ddn names plugin ddn, but --plugin is l2y" in _error(capsys)
    assert not Path("x").exists()


def test_presets_in_subfolders_are_listed_and_load(capsys):
    from memdistill.config import load_preset
    assert main(["list", "presets"]) == 0
    out = capsys.readouterr().out
    assert "ddn/table1-cifar10-online-m200" in out and "ddn/table3-cifar10-online-m500" in out
    table1 = load_preset("ddn/table1-cifar10-online-m200")
    assert table1["buffer"] == 200 and table1["lr"] == 0.03 and table1["backbone"] == "resnet18"
    assert {"er", "er+ddn", "derpp+ddn", "clser+ddn", "er-ace+ddn"} <= set(table1["method"])


def test_every_run_preset_expands_into_valid_runs():
    from memdistill.config import load_preset, preset_names
    from memdistill.sweep import check_jobs, expand
    for name in preset_names():
        if name.startswith("compare/"):        # `memdistill compare` plans, tested in test_compare.py
            continue
        jobs = expand(load_preset(name), source=f"preset {name}")
        assert jobs and check_jobs(jobs), name
    # a grid that gives every seed its own class order
    jobs = expand(load_preset("abd/table1-cifar100-10tasks"))
    assert {(j.config.resolved().seed, j.config.resolved().class_order_seed) for j in jobs} == {(0, 0), (1, 1), (2, 2)}
    assert len(jobs) == 7 * 3 and {j.name.split("/")[0] for j in jobs} >= {"abd", "joint", "deepinversion", "dgr"}
    ablations = expand(load_preset("abd/table3-cifar100-10tasks"))
    assert len(ablations) == 6 * 3
    assert {j.config.method_args.get("kd_real", True) for j in ablations} == {True, False}
