"""Grids: expansion, validation, skipping and resuming, and the executors (in
process, local workers, Ray, submitit) giving the same summaries."""
import os
import sys
from pathlib import Path

import pytest

from memdistill import sweep
from memdistill.cli import main
from memdistill.config import ConfigError
from memdistill.sweep import Job, RunsFailed, comparable, expand, load_grid, run_jobs

SMALL = dict(scenario="seq-digits", buffer=50, epochs=1, samples_per_task=40, test_samples_per_task=20)


def _write(path, text):
    Path(path).write_text(text)
    return path


def test_flat_and_grid_forms_give_the_same_runs(isolated):
    flat = load_grid(_write("flat.yaml", "scenario: seq-digits\nmethod: [er, er+ddn]\nbuffer: [50, 100]\n"
                                         "seed: [0, 1]\nepochs: 1\n"))
    sectioned = load_grid(_write("grid.yaml", "base: {scenario: seq-digits, epochs: 1}\n"
                                              "grid: {seed: [0, 1], buffer: [50, 100], method: [er, er+ddn]}\n"))
    assert [(j.name, j.config) for j in flat] == [(j.name, j.config) for j in sectioned]
    assert len(flat) == 8
    names = [j.name for j in flat]
    assert "er+ddn/buf100/seed1" in names and "er/buf50/seed0" in names
    ddn = next(j for j in flat if j.name == "er+ddn/buf100/seed1")
    assert (ddn.config.method, ddn.config.plugin, ddn.config.buffer, ddn.config.seed) == ("er", "ddn", 100, 1)


def test_scenario_plugin_options_and_dict_sweeps_are_named(isolated):
    jobs = expand({"scenario": ["seq-digits", "seq-mnist"], "method": ["er", "er+label-smoothing:eps=0.5"]})
    assert [j.name for j in jobs] == ["seq-digits/er/seed0", "seq-digits/er+label-smoothing-eps0.5/seed0",
                                      "seq-mnist/er/seed0", "seq-mnist/er+label-smoothing-eps0.5/seed0"]
    assert jobs[1].config.plugin_args == {"eps": 0.5}
    jobs = load_grid(_write("g.yaml", "method: er\nplugin: label-smoothing\n"
                                      "grid: {plugin_args: [{eps: 0.1}, {eps: 0.3}], lr: [0.1, 0.05]}\n"))
    assert [j.name for j in jobs] == ["er+label-smoothing/lr-0.1/plugin_args-eps=0.1/seed0",
                                      "er+label-smoothing/lr-0.1/plugin_args-eps=0.3/seed0",
                                      "er+label-smoothing/lr-0.05/plugin_args-eps=0.1/seed0",
                                      "er+label-smoothing/lr-0.05/plugin_args-eps=0.3/seed0"]
    assert jobs[3].config.plugin_args == {"eps": 0.3} and jobs[3].config.lr == 0.05


def test_a_method_spec_carries_options_for_its_own_method(isolated):
    jobs = expand({"method": ["er", "clser:plastic_prob=0.9", "clser:plastic_prob=0.9+ddn:lr=1e+3"]})
    assert [j.name for j in jobs] == ["er/seed0", "clser-plastic_prob0.9/seed0",
                                      "clser-plastic_prob0.9+ddn-lr1000.0/seed0"]
    assert jobs[0].config.method_args == {}
    assert (jobs[1].config.method, jobs[1].config.method_args, jobs[1].config.plugin) == \
        ("clser", {"plastic_prob": 0.9}, None)
    assert (jobs[2].config.method_args, jobs[2].config.plugin, jobs[2].config.plugin_args) == \
        ({"plastic_prob": 0.9}, "ddn", {"lr": 1000.0})


@pytest.mark.parametrize("grid,needle", [
    ("method: [er, nonsense]\n", "--method: unknown value 'nonsense'; allowed: finetune"),
    ("buffer: [50, -1]\nmethod: er\n", "--buffer: must be an integer >= 0 (got -1) (run er/buf-1/seed0)"),
    ("learning_rate: [0.1]\n", "learning_rate: unknown option in grid file g.yaml"),
    ("seed: []\n", "seed: a swept option needs a non-empty list"),
    ("grid: [1, 2]\n", "grid: must be a mapping"),
    ("method: er\nplugin_args: {eps: 2}\nplugin: label-smoothing\n", "--plugin-arg: plugin label-smoothing"),
    ("method: [er, er+ddn:every=0]\n", "--plugin-arg: plugin ddn"),
    ("method: [er, finetune]\nmethod_args: {alpha: 1}\n", "--method-arg: method er has no option 'alpha'"),
    ("method: [er, 'er:alpha=1+ddn']\n", "--method-arg: method er has no option 'alpha'"),
    ("scenario: seq-cifar10\n", "cifar10"),      # missing data is found before any run starts
    ("seed: [0, 0]\n", "grid: two runs would share the folder er/seed0"),
    ("method: [er\n", "GRID: g.yaml is not valid YAML"),
])
def test_bad_grid_exits_2_naming_the_key_before_running_anything(isolated, capsys, grid, needle):
    _write("g.yaml", grid)
    assert main(["sweep", "g.yaml", "--out", "out", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("memdistill sweep: error:"), err
    assert needle in err[0], err[0]
    assert not Path("out").exists()


def test_dry_run_lists_folders_and_runs_nothing(isolated, capsys):
    _write("g.yaml", "method: [finetune, er]\nseed: [0, 1]\n")
    assert main(["sweep", "g.yaml", "--out", "o", "--dry-run"]) == 0
    assert capsys.readouterr().out.split() == ["o/finetune/seed0", "o/finetune/seed1", "o/er/seed0", "o/er/seed1"]
    assert not Path("o").exists()


def test_missing_optional_executors_say_what_to_install(isolated, monkeypatch):
    jobs = expand({**SMALL, "method": "finetune"})
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(ConfigError, match=r"--ray: needs Ray: pip install 'memdistill\[ray\]'"):
        run_jobs(jobs, "o", ray="auto")
    with pytest.raises(ConfigError, match=r"needs submitit: pip install 'memdistill\[slurm\]'"):
        run_jobs(jobs, "o", slurm={"slurm_partition": "x"})
    with pytest.raises(ConfigError, match="choose one executor"):
        run_jobs(jobs, "o", workers=2, ray="auto")
    assert not Path("o").exists()


def test_a_failed_run_does_not_stop_the_others_and_a_rerun_finishes(isolated, capsys):
    _write("g.yaml", "scenario: seq-digits\nmethod: [finetune, er]\nbuffer: 50\nepochs: 1\n"
                     "samples_per_task: 40\n")
    # er/seed0 holds a checkpoint of other options: that run fails, finetune still runs.
    assert main(["run", "--method", "er", "--buffer", "20", "--epochs", "1", "--samples-per-task", "40",
                 "--out", "o/er/seed0", "--no-progress"]) == 0
    os.remove("o/er/seed0/summary.json")
    capsys.readouterr()
    assert main(["sweep", "g.yaml", "--out", "o"]) == 1
    err = capsys.readouterr().err
    assert "[sweep 2/2] FAILED er/seed0: ConfigError: --out:" in err and "different options (buffer)" in err
    assert "1 of 2 runs failed; run the same command again to finish" in err
    assert Path("o/finetune/seed0/summary.json").exists()
    import shutil
    shutil.rmtree("o/er/seed0")
    assert main(["sweep", "g.yaml", "--out", "o"]) == 0
    captured = capsys.readouterr()
    assert "skipped (finished) finetune/seed0" in captured.err and "finished er/seed0" in captured.err
    assert "| finetune |" in captured.out and "| er |" in captured.out
    assert captured.out == Path("o/report.md").read_text() + "\n"


def _stamp(path):
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


def test_sweep_with_a_killed_worker_completes_on_rerun_without_repeating_runs(isolated, monkeypatch):
    jobs = expand({**SMALL, "method": ["finetune", "er"], "seed": [0, 1]})
    victim = "er/seed1"
    monkeypatch.setenv(sweep.KILL_HOOK_ENV, f"{victim}@1")   # SIGKILL after task 1's checkpoint
    with pytest.raises(RunsFailed) as failed:
        run_jobs(jobs, "out", workers=2, threads_per_run=1, progress=False)
    assert list(failed.value.failures) == [victim]
    assert "worker process died (exit code -9)" in failed.value.failures[victim]
    assert sum(s is not None for s in failed.value.summaries) == 3
    killed = Path("out") / victim
    assert (killed / "checkpoints/task_1.pt").exists() and not (killed / "summary.json").exists()
    finished = [Path("out") / j.name for j in jobs if j.name != victim]
    before = {f / name: _stamp(f / name) for f in finished for name in ("summary.json", "config.yaml", "log.jsonl")}
    kept = {p: _stamp(p) for p in (killed / "checkpoints/task_0.pt", killed / "checkpoints/task_1.pt")}

    monkeypatch.delenv(sweep.KILL_HOOK_ENV)
    summaries = run_jobs(jobs, "out", workers=2, threads_per_run=1, progress=False)
    assert {p: _stamp(p) for p in before} == before             # finished runs not touched
    assert {p: _stamp(p) for p in kept} == kept                 # tasks 0-1 not trained again
    assert (killed / "checkpoints/task_4.pt").exists() and (killed / "summary.json").exists()

    clean = run_jobs(jobs, "clean", threads_per_run=1, progress=False)
    assert [comparable(s) for s in summaries] == [comparable(s) for s in clean]


def test_ray_local_cluster_gives_the_one_by_one_summaries(isolated):
    ray = pytest.importorskip("ray", reason="Ray is in the test extra: pip install -e '.[test]'")
    jobs = expand({**SMALL, "method": ["finetune", "er", "er+ddn"], "seed": [0, 1]})
    one_by_one = run_jobs(jobs, "seq", threads_per_run=1, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        through_ray = run_jobs(jobs, "ray", ray="auto", threads_per_run=1, progress=False)
    finally:
        ray.shutdown()
    assert len(through_ray) == 6
    assert [comparable(s) for s in through_ray] == [comparable(s) for s in one_by_one]
    assert all((Path("ray") / j.name / "summary.json").exists() for j in jobs)


def test_submitit_executor_runs_the_jobs(isolated):
    pytest.importorskip("submitit", reason="submitit is the optional 'slurm' extra")
    jobs = expand({**SMALL, "method": "er", "seed": [0, 1]})
    reference = run_jobs(jobs, "seq", threads_per_run=1, progress=False)
    # submitit's "debug" cluster runs each submitted job in this process, through the same code path.
    summaries = run_jobs(jobs, "slurm", slurm={"cluster": "debug"}, threads_per_run=1, progress=False)
    assert [comparable(s) for s in summaries] == [comparable(s) for s in reference]
    assert Path("slurm/.submitit").is_dir()


def test_lr_milestones_is_one_list_valued_option_and_sweeps_as_lists_of_lists():
    one = expand({"method": "er", "lr_milestones": [2, 3]})
    assert len(one) == 1 and one[0].config.lr_milestones == [2, 3]
    two = expand({"method": "er"}, {"lr_milestones": [[2], [2, 3]]})
    assert [j.config.lr_milestones for j in two] == [[2], [2, 3]]
    assert len({j.name for j in two}) == 2
