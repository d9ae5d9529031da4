from pathlib import Path

from memdistill import report


def summary(scenario, seed):
    return {"scenario": scenario, "method": "er", "plugin": None, "backbone": "mlp", "buffer": 10,
            "setting": "online", "precision": "fp32", "seed": seed, "num_tasks": 2,
            "class_il": {"acc": 50.0 + seed, "fm": 10.0}, "wall_s": 1.0, "samples_per_s": 100.0}


def test_accuracy_columns_say_which_setting_the_scenario_is():
    assert report.accuracy_label("rot-mnist") == "domain-IL"
    assert report.accuracy_label("seq-digits") == "class-IL"
    assert report.accuracy_label("no-such-scenario") == "class-IL"
    domain = report.markdown_table([(Path(f"r{s}"), summary("rot-mnist", s)) for s in (0, 1)])
    assert "| domain-IL ACC | domain-IL FM |" in domain and "class-IL" not in domain
    assert "50.50 ± 0.71" in domain
    classes = report.markdown_table([(Path("c"), summary("seq-digits", 0))])
    assert "| class-IL ACC | class-IL FM |" in classes
    mixed = report.markdown_table([(Path("r"), summary("rot-mnist", 0)), (Path("c"), summary("seq-digits", 0))])
    assert "class-/domain-IL ACC" in mixed


def test_runs_that_use_the_task_identity_are_a_row_of_their_own_and_marked():
    def recall_run(seed, per_task):
        return {**summary("rot-mnist", seed), "method": "compress-recall",
                "recall": "per-task" if per_task else "joint", "uses_task_identity": per_task,
                "class_il": {"acc": (70.0 if per_task else 60.0) + seed, "fm": 0.0}}
    runs = [(Path(f"{p}{s}"), recall_run(s, p)) for p in (True, False) for s in (0, 1)]
    table = report.markdown_table(runs)
    rows = [line for line in table.splitlines() if line.startswith("| compress-recall")]
    assert len(rows) == 2          # not averaged together as if they were seeds
    assert any("(per task) †" in r and "70.50 ± 0.71" in r for r in rows)
    assert any("†" not in r and "60.50 ± 0.71" in r for r in rows)
    assert report.TASK_IDENTITY_NOTE in table
    assert report.TASK_IDENTITY_NOTE not in report.markdown_table(runs[2:])
