import pytest
import torch

from memdistill import engine, metrics
from memdistill.config import ConfigError, RunConfig
from memdistill.data.scenarios import build_scenario
from memdistill.data.sources import load_source
from memdistill.methods import METHODS
from memdistill.methods.compress_recall import CompressRecall, fit_task_memory

ARGS = {"bases": 4, "downsample": 2, "distill_steps": 3, "unroll": 3, "real_batch": 4, "retrain_epochs": 30, "retrain_lr": 0.05}


@pytest.fixture(scope="module")
def digits():
    return load_source("digits", progress=False)


def _scenario(digits, name="seq-digits", n_tasks=None):
    return build_scenario(name, n_tasks, source=digits, progress=False)


def _same(a, b) -> bool:
    """Nested state (dicts, lists, tensors) equal, tensors bit for bit."""
    if torch.is_tensor(a):
        return torch.is_tensor(b) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


def test_ra_and_bti_from_a_hand_made_matrix():
    R = [[90.0, float("nan"), float("nan")], [80.0, 85.0, float("nan")], [70.0, 75.0, 95.0]]
    assert metrics.retained_accuracy(R) == pytest.approx((70 + 75 + 95) / 3)
    assert metrics.backward_transfer_interference(R) == pytest.approx(((70 - 90) + (75 - 85)) / 2)
    s = metrics.summarise(R)
    assert s["ra"] == s["acc"] and s["bti"] == s["bwt"]


def test_registered_and_needs_a_budget():
    assert METHODS["compress-recall"] is CompressRecall
    with pytest.raises(ConfigError, match="--buffer"):
        engine.prepare(RunConfig(method="compress-recall", buffer=0))


def test_memories_stay_within_the_er_budget_and_beat_chance(digits, tmp_path):
    cfg = RunConfig(method="compress-recall", buffer=100, backbone="mlp", method_args=ARGS)
    summary = engine.run(cfg, tmp_path, _scenario(digits), progress=False)
    er = engine.run(RunConfig(method="er", buffer=100, backbone="mlp"), None, _scenario(digits), progress=False)
    # equal bytes: an ER buffer of 100 samples is the budget; 5 tasks' memories fit inside it
    assert 0 < summary["memory_bytes"] <= er["memory_bytes"]
    assert summary["class_il"]["acc"] > 40.0          # 10 classes: chance is 10%
    assert "ra" in summary["class_il"] and "bti" in summary["class_il"]


def test_a_too_small_budget_is_a_clear_error(digits):
    cfg = RunConfig(method="compress-recall", buffer=1, n_tasks=5, method_args={"downsample": 1})
    with pytest.raises(ConfigError, match="cannot hold even one basis"):
        engine.run(cfg, None, _scenario(digits), progress=False)


def test_resume_gives_the_same_results(digits, tmp_path):
    cfg = RunConfig(method="compress-recall", buffer=60, backbone="mlp", method_args=ARGS)
    whole = engine.run(cfg, tmp_path / "whole", _scenario(digits), progress=False)
    with pytest.raises(engine.Interrupted):
        engine.run(cfg, tmp_path / "cut", _scenario(digits), progress=False, stop_after_task=2)
    resumed = engine.run(cfg, tmp_path / "cut", _scenario(digits), progress=False)
    assert resumed["class_il"] == whole["class_il"]
    state = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert len(state["learner"]["memories"]) == 5


def test_inner_batch_samples_the_recalled_set(digits):
    def run(**extra):
        cfg = RunConfig(method="compress-recall", buffer=60, backbone="mlp", n_tasks=2,
                        method_args={**ARGS, **extra})
        return engine.run(cfg, None, _scenario(digits, n_tasks=2), progress=False)["class_il"]["acc"]
    whole = run()
    assert run(inner_batch=10**6) == whole          # a batch larger than the set is the whole set
    assert run(inner_batch=2) != whole              # minibatches of 2 take other steps
    with pytest.raises(ConfigError, match="inner_batch must be a positive integer"):
        run(inner_batch=0)
    assert run(inner_batch=10, inner_sampling="uniform") != run(inner_batch=10)
    with pytest.raises(ConfigError, match="inner_sampling must be one of: uniform, per-class"):
        run(inner_sampling="stratified")


def test_checkpoint_every_changes_memory_not_results(digits):
    """Keeping every unrolled step (k = 1) or recomputing from sparse checkpoints gives the
    same exact hypergradient, hence the same run; a bad interval is refused up front."""
    def run(**extra):
        cfg = RunConfig(method="compress-recall", buffer=60, backbone="mlp", n_tasks=2,
                        method_args={**ARGS, "unroll": 4, **extra})
        return engine.run(cfg, None, _scenario(digits, n_tasks=2), progress=False)["class_il"]["acc"]
    assert run(checkpoint_every=1) == pytest.approx(run(checkpoint_every=3), abs=1e-9)
    # unset: keep every step while 2 x unroll parameter sets fit KEEP_EVERY_STEP_BYTES
    from memdistill.methods.compress_recall import KEEP_EVERY_STEP_BYTES, checkpoint_interval
    from memdistill.nets.small import MLP
    mlp = MLP(784, 10)                                   # 89,610 float32 parameters
    assert checkpoint_interval(mlp, 30, None) == 1 and checkpoint_interval(mlp, 30, 4) == 4
    longest = KEEP_EVERY_STEP_BYTES // (2 * 89_610 * 4)
    assert checkpoint_interval(mlp, longest, None) == 1 and checkpoint_interval(mlp, longest + 1, None) is None
    with pytest.raises(ConfigError, match="checkpoint_every must be a positive integer"):
        run(checkpoint_every=0)


def test_uint8_addressable_memories_hold_four_times_the_values_and_resume(digits, tmp_path):
    args = {**ARGS, "quantize": "uint8"}
    cfg = RunConfig(method="compress-recall", buffer=60, backbone="mlp", method_args=args)
    whole = engine.run(cfg, tmp_path / "whole", _scenario(digits), progress=False)
    budget = engine.run(RunConfig(method="er", buffer=60, backbone="mlp"), None, _scenario(digits),
                        progress=False)["memory_bytes"]
    assert whole["memory_bytes_detail"].keys() == {"addressable-uint8"}
    assert budget - 5 * 4 * 2 * 4 < whole["memory_bytes"] <= budget   # 5 tasks, less than a matrix left each
    share, shape = budget // 5, (1, 8, 8)
    q = fit_task_memory(share, 2, shape, quantize="uint8", bases=4, downsample=2)
    f = fit_task_memory(share, 2, shape, bases=4, downsample=2)
    assert q.num_bases == f.num_bases == 4 and q.recalls >= 4 * f.recalls
    with pytest.raises(engine.Interrupted):
        engine.run(cfg, tmp_path / "cut", _scenario(digits), progress=False, stop_after_task=2)
    resumed = engine.run(cfg, tmp_path / "cut", _scenario(digits), progress=False)
    assert resumed["class_il"] == whole["class_il"]


def test_streaming_distillation_steps_on_every_minibatch_once_the_memory_starts(digits):
    """stream_steps=k: k outer steps per streamed minibatch from the first one whose batch and
    held samples show every class of the task, then distill_steps on the held samples."""
    scenario = _scenario(digits, n_tasks=2)
    cfg = RunConfig(method="compress-recall", buffer=60, backbone="mlp", n_tasks=2,
                    method_args={**ARGS, "stream_steps": 2, "distill_steps": 1})
    cfg, _, device = engine.prepare(cfg, scenario, progress=False)
    learner = engine.build_learner(cfg, scenario, device)
    task = scenario.tasks[0]
    learner.begin_task(task)
    batches = 0
    for i in range(0, 50, 10):
        logs = learner.observe(task.train_images[i:i + 10], task.train_labels[i:i + 10], 0)
        batches += learner.stream_distiller is not None
        assert ("distill_loss" in logs) == (learner.stream_distiller is not None)
    assert batches >= 4                                  # two classes: present after a batch or two
    distiller = learner.stream_distiller
    assert distiller.step == 2 * batches
    learner.end_task(task)
    assert distiller.step == 2 * batches + 1
    assert learner.stream_distiller is None and len(learner.memories) == 1
    assert learner.memory_classes == [sorted(task.classes)]
    assert learner.memories[0].nbytes <= learner.task_bytes


def test_streaming_distillation_runs_end_to_end_and_is_checked(digits):
    def run(n_tasks=5, **extra):
        cfg = RunConfig(method="compress-recall", buffer=60, backbone="mlp", n_tasks=n_tasks,
                        method_args={**ARGS, **extra})
        return engine.run(cfg, None, _scenario(digits, n_tasks=n_tasks), progress=False)
    # ARGS' 3-step unroll overfits over a stream's ~20 outer steps a task (so do as many steps
    # at the task's end), so a 10-step unroll here
    streamed = run(stream_steps=1, unroll=10, real_batch=16)
    assert streamed["class_il"]["acc"] > 40.0               # 10 classes: chance is 10%
    assert streamed["memory_bytes"] <= 60 * (64 + 16)       # ER's 60 samples of 8x8 uint8 + label + task id
    images = run(2, stream_steps=1, memory="images", quantize="uint8")
    assert images["memory_bytes_detail"].keys() == {"images-uint8"}
    with pytest.raises(ConfigError, match="stream_steps must be a non-negative integer"):
        run(stream_steps=-1)


def test_balance_steps_moves_the_end_steps_of_a_task_the_raw_part_cannot_hold_into_its_stream(digits):
    """balance_steps=true: a task whose raw part holds a fraction f of its samples takes
    round(f x distill_steps) steps at its end and the rest spread over its streamed minibatches,
    so it takes as many outer steps as without; a task held whole keeps all its end steps."""
    scenario = _scenario(digits, n_tasks=2)
    task = scenario.tasks[0]
    samples = len(task.train_labels)

    def learner_for(buffer, balance):
        cfg = RunConfig(method="compress-recall", buffer=buffer, backbone="mlp", n_tasks=2, batch_size=10,
                        method_args={**ARGS, "stream_steps": 1, "distill_steps": 12, "balance_steps": balance})
        cfg, _, device = engine.prepare(cfg, scenario, progress=False)
        learner = engine.build_learner(cfg, scenario, device)
        learner.begin_task(task)
        return learner

    def stream_and_end(learner):
        per_batch = []
        for i in range(0, samples, 10):
            before = learner.outer_steps_taken
            learner.observe(task.train_images[i:i + 10], task.train_labels[i:i + 10], 0)
            per_batch.append(learner.outer_steps_taken - before)
        before = learner.outer_steps_taken
        learner.end_task(task)
        return per_batch, learner.outer_steps_taken - before

    batches = -(-samples // 10)
    held = learner_for(60, True)                          # raw part of 60 samples, task of `samples`
    assert held.raw.capacity < samples
    end = round(12 * held.raw.capacity / samples)
    assert held.end_steps == end and held.moved_steps == 12 - end and held.task_outer_steps == batches + 12
    assert sum(held._stream_steps_now() - 1 for _ in range(batches)) == 12 - end   # spread, none lost
    per_batch, at_end = stream_and_end(learner_for(60, True))
    assert at_end == end and max(per_batch) - min(per_batch[2:]) <= 1         # even, once it starts
    per_batch, at_end = stream_and_end(learner_for(60, False))
    assert at_end == 12 and set(per_batch[2:]) == {1}
    whole = learner_for(10 * samples, True)               # the raw part holds the whole task
    assert whole.end_steps == 12 and whole.moved_steps == 0
    with pytest.raises(ConfigError, match="balance_steps must be true or false"):
        engine.run(RunConfig(method="compress-recall", buffer=60, n_tasks=2,
                             method_args={**ARGS, "balance_steps": "yes"}), None, scenario, progress=False)


def test_collapse_guard_is_a_no_op_on_healthy_memories_and_reports_its_rollbacks(digits, tmp_path):
    scenario = _scenario(digits, n_tasks=2)

    def run(guard, out):
        cfg = RunConfig(method="compress-recall", buffer=60, backbone="mlp", n_tasks=2, batch_size=10,
                        method_args={**ARGS, "stream_steps": 1, "collapse_guard": guard})
        return engine.run(cfg, out, scenario, progress=False)

    plain, guarded = run(False, tmp_path / "plain"), run(True, tmp_path / "guarded")
    assert guarded["class_il"] == plain["class_il"]
    assert guarded["collapse_rollbacks"] == {} and "collapse_rollbacks" not in plain
    with pytest.raises(ConfigError, match="collapse_guard must be true or false"):
        engine.run(RunConfig(method="compress-recall", buffer=60, n_tasks=2,
                             method_args={**ARGS, "collapse_guard": 1}), None, scenario, progress=False)


def test_per_task_recall_answers_each_task_with_a_network_of_its_own(digits, tmp_path):
    """recall=per-task: task t's test images are answered by a network trained on task t's
    recalls alone, so a task's accuracy is fixed once it is learned (BTI 0, as in Table 3)."""
    cfg = RunConfig(method="compress-recall", buffer=100, backbone="mlp", method_args={**ARGS, "recall": "per-task"})
    scenario = _scenario(digits)
    summary = engine.run(cfg, tmp_path / "per-task", scenario, progress=False)
    assert summary["recall"] == "per-task" and summary["uses_task_identity"] is True
    assert summary["class_il"]["bti"] == 0.0 and summary["class_il"]["fm"] == 0.0
    joint = engine.run(RunConfig(method="compress-recall", buffer=100, backbone="mlp", method_args=ARGS),
                       tmp_path / "joint", scenario, progress=False)
    assert joint["recall"] == "joint" and joint["uses_task_identity"] is False
    # two classes a task, each answered among its own task's classes
    assert summary["class_il"]["acc"] > joint["class_il"]["acc"]
    # the recall does not touch the distillation: both runs store the same memories, so a joint
    # run's checkpoint can be evaluated per task afterwards (benchmarks/compress_recall_retrain.py)
    stored = [torch.load(tmp_path / run / "checkpoint.pt", weights_only=True)["learner"]["memories"]
              for run in ("per-task", "joint")]
    assert _same(*stored)

    cfg, scenario, device = engine.prepare(cfg, scenario)
    learner = engine.build_learner(cfg, scenario, device)
    learner.load_state_dict(torch.load(tmp_path / "per-task" / "checkpoint.pt", weights_only=True)["learner"])
    assert learner.memory_tasks == [0, 1, 2, 3, 4] and not learner.task_networks
    images, labels = learner.recalled_dataset(2)
    assert set(labels.tolist()) == set(scenario.tasks[2].classes)   # task 2's recalls only
    test = scenario.tasks[2].test_images[:16]
    by_hand = learner._train_on_recalls(2, only_task=2)
    by_hand.eval()
    with torch.no_grad():
        expected = by_hand(learner.preprocess(test, train=False))
    assert torch.allclose(learner.predict(test, task_id=2), expected)
    with pytest.raises(ValueError, match="pass task_id"):
        learner.predict(test)


def test_per_task_recall_resumes_and_checks_its_option(digits, tmp_path):
    cfg = RunConfig(method="compress-recall", buffer=60, backbone="mlp", method_args={**ARGS, "recall": "per-task"})
    whole = engine.run(cfg, tmp_path / "whole", _scenario(digits), progress=False)
    with pytest.raises(engine.Interrupted):
        engine.run(cfg, tmp_path / "cut", _scenario(digits), progress=False, stop_after_task=2)
    resumed = engine.run(cfg, tmp_path / "cut", _scenario(digits), progress=False)
    assert resumed["class_il"] == whole["class_il"]
    bad = RunConfig(method="compress-recall", buffer=60, method_args={**ARGS, "recall": "by-task"})
    with pytest.raises(ConfigError, match="recall must be one of: joint, per-task"):
        engine.run(bad, None, _scenario(digits), progress=False)


def test_cosine_outer_rate_decays_over_the_tasks_outer_steps(digits):
    scenario = _scenario(digits, n_tasks=2)
    cfg = RunConfig(method="compress-recall", buffer=60, backbone="mlp", n_tasks=2, batch_size=10,
                    method_args={**ARGS, "stream_steps": 2, "distill_steps": 4, "outer_lr": 0.1,
                                 "outer_lr_decay": "cosine"})
    cfg, scenario, device = engine.prepare(cfg, scenario)
    learner = engine.build_learner(cfg, scenario, device)
    learner.begin_task(scenario.tasks[0])
    batches = -(-len(scenario.tasks[0].train_labels) // 10)
    assert learner.task_outer_steps == 2 * batches + 4

    class Recorder:                      # stands in for the BPTT distiller: records the rate of each step
        def __init__(self):
            self.optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
            self.rates = []
            self.rollbacks = 0           # collapse_guard's count, which the learner reads after the steps

        def outer_step(self):
            self.rates.append(self.optimizer.param_groups[0]["lr"])
            return {"outer_loss": 1.0}
    recorder = Recorder()
    learner._outer_steps(recorder, learner.task_outer_steps)
    rates = recorder.rates
    assert rates[0] == pytest.approx(0.1) and all(a > b for a, b in zip(rates, rates[1:]))
    assert rates[len(rates) // 2] == pytest.approx(0.05, abs=0.01) and rates[-1] < 0.001

    with pytest.raises(ConfigError, match="outer_lr_decay must be one of: none, cosine"):
        engine.run(RunConfig(method="compress-recall", buffer=60, n_tasks=2,
                             method_args={**ARGS, "outer_lr_decay": "linear"}), None, scenario, progress=False)
    runs = [engine.run(RunConfig(method="compress-recall", buffer=60, backbone="mlp", n_tasks=2,
                                 method_args={**ARGS, "stream_steps": 1, "outer_lr_decay": decay}),
                       None, scenario, progress=False)["class_il"]["acc"] for decay in ("none", "cosine")]
    assert runs[0] != runs[1]            # the decay changes the memories


def test_cifar100_preset_fits_its_share_and_runs_on_colour_images(tmp_path):
    """The Incremental CIFAR-100 preset cannot be measured here (no CIFAR-100 on this machine):
    its memory must fit each task's share as its comment says, and its settings must run end
    to end on 3 x 32 x 32 images through ConvNet-3."""
    from conftest import make_source
    from memdistill.config import load_preset
    from memdistill.sweep import expand
    jobs = {j.config.method: j.config for j in expand(load_preset("cifar100-compress-recall"))}
    cfg = jobs["compress-recall"]
    assert cfg.scenario == "seq-cifar100" and cfg.n_tasks == 20 and cfg.backbone == "convnet"
    fake = make_source(num_classes=100, train_per_class=2, test_per_class=1, shape=(3, 32, 32))
    scenario = build_scenario("seq-cifar100", 20, source=fake, progress=False)
    cfg_p, scenario, device = engine.prepare(cfg, scenario)
    learner = engine.build_learner(cfg_p, scenario, device)
    assert learner.budget_bytes == 200 * (3 * 32 * 32 + 16) and learner.task_bytes == 30_880
    fitted = learner._fit(5)
    assert (fitted.num_bases, fitted.recalls, fitted.downsample) == (16, 232, 2)
    # the same method options, scaled down: 2 tasks of 5 classes, a short unroll and retraining
    small = make_source(num_classes=10, train_per_class=10, test_per_class=4, shape=(3, 32, 32))
    for split in (small.train, small.test):    # a class a ConvNet sees at once: bright rows 3c..3c+2
        for c in range(10):
            split.images[split.labels == c, :, 3 * c:3 * c + 3, :] = 255
    args = {**cfg.method_args, "unroll": 2, "inner_batch": 10, "real_batch": 2, "retrain_epochs": 20,
            "retrain_lr": 0.05}
    run = RunConfig(**{**cfg.__dict__, "n_tasks": 2, "buffer": 6, "method_args": args})
    summary = engine.run(run, tmp_path, build_scenario("seq-cifar100", 2, source=small, progress=False),
                         progress=False)
    assert summary["uses_task_identity"] is True and summary["memory_bytes"] <= 6 * (3 * 32 * 32 + 16)
    assert summary["class_il"]["acc"] > 50.0      # chance: 10 % over all classes, 20 % within a task


def test_rotated_preset_runs_the_memory_its_comment_says():
    """600 outer steps a task (6 per streamed minibatch) through a 30-step unroll, the rate decaying
    over the task, a collapsed memory rolled back, one network per task."""
    from memdistill.config import load_preset
    from memdistill.sweep import expand
    jobs = {j.config.method: j.config for j in expand(load_preset("rot-mnist-compress-recall"))}
    args = jobs["compress-recall"].method_args
    assert jobs["compress-recall"].scenario == "rot-mnist" and jobs["compress-recall"].buffer == 200
    assert (args["stream_steps"], args["distill_steps"], args["unroll"]) == (6, 0, 30)
    assert args["outer_lr_decay"] == "cosine" and args["collapse_guard"] is True and args["recall"] == "per-task"
    assert set(jobs) == {"compress-recall", "er", "finetune", "agem", "ewc"}


def test_many_permutations_preset_fits_its_share():
    """The MANY preset's memory is what its comment says: 4,000 bytes a task hold 12 uint8 bases
    at 14 x 14 and 13 recalls per class, distilled with a 30-step unroll and a decaying rate, the end
    steps of late tasks moved into their stream."""
    from conftest import make_source
    from memdistill.config import load_preset
    from memdistill.sweep import expand
    jobs = {j.config.method: j.config for j in expand(load_preset("many-perm-mnist-compress-recall"))}
    cfg = jobs["compress-recall"]
    assert cfg.scenario == "perm-mnist" and cfg.n_tasks == 100 and cfg.buffer == 500
    fake = make_source(num_classes=10, train_per_class=1, test_per_class=1, shape=(1, 28, 28))
    scenario = build_scenario("perm-mnist", 100, source=fake, progress=False)
    cfg_p, scenario, device = engine.prepare(cfg, scenario)
    learner = engine.build_learner(cfg_p, scenario, device)
    assert learner.task_bytes == 4_000
    fitted = learner._fit(10)
    assert (fitted.num_bases, fitted.recalls, fitted.downsample) == (12, 13, 2)
    assert fitted.nbytes <= learner.task_bytes
    assert learner.opts["unroll"] == 30 and learner.opts["outer_lr_decay"] == "cosine"
    assert learner.opts["recall"] == "per-task" and learner.opts["balance_steps"] is True
