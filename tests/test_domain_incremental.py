import json
import math

import pytest
import torch

from memdistill.cli import main
from memdistill.data.scenarios import build_scenario
from memdistill.distill.domain_experiment import DomainDistillConfig, run_domain_distillation
from memdistill.distill.domain_incremental import (DIDDConfig, DomainIncrementalDistiller, RealBatches,
                                                   UpdateRates, linear_rates, segment_accuracies)
from memdistill.distill.matching import MatchingStep, gaussian_mmd, mean_embedding_distance
from memdistill.metrics import final_accuracy, forgetting
from memdistill.nets import ConvNet

from conftest import make_source


# -- distances ------------------------------------------------------------------------

def test_gaussian_mmd_matches_direct_double_sum():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    y = torch.randn(4, 3, generator=g, dtype=torch.float64) + 0.5
    s2 = 0.7

    def k(a, b):
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * s2))

    kxx = sum(k(a, b) for a in x for b in x) / 25
    kyy = sum(k(a, b) for a in y for b in y) / 16
    kxy = sum(k(a, b) for a in x for b in y) / 20
    assert float(gaussian_mmd(x, y, s2)) == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-9)
    assert float(gaussian_mmd(x, x, s2)) == pytest.approx(0.0, abs=1e-12)


def test_mean_embedding_distance_is_squared_distance_of_means():
    x = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    y = torch.tensor([[4.0, 4.0]])
    assert float(mean_embedding_distance(x, y)) == pytest.approx((1 - 4) ** 2 + (1 - 4) ** 2)


def test_stability_loss_is_zero_with_zero_gradient_at_the_previous_set():
    step = MatchingStep(lambda: ConvNet(1, 8, 3, width=8), seed=1, distance="mmd", augment="flip-rotate")
    step.sigma_sq = 4.0
    prev = torch.randn(6, 1, 8, 8)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    x = prev.clone().requires_grad_(True)
    loss = step.set_loss(prev, x, labels)
    (g,) = torch.autograd.grad(loss, x)
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6)
    assert float(g.abs().max()) < 1e-5
    moved = (prev + 0.5 * torch.randn_like(prev)).requires_grad_(True)
    assert float(step.set_loss(prev, moved, labels).detach()) > 1e-4


# -- rates ------------------------------------------------------------------------------

def test_sigmoid_maps_rates_into_their_ranges():
    rates = UpdateRates(4, alpha_range=(0.5, 3.0), beta_range=(0.1, 0.2))
    with torch.no_grad():
        rates.alpha.copy_(torch.tensor([-50.0, -1.0, 0.0, 50.0]))
        rates.beta.copy_(torch.tensor([2.0, 0.0, -2.0, 0.0]))
        a, b = rates.rates()
    sig = torch.sigmoid(torch.tensor([-50.0, -1.0, 0.0, 50.0]))
    torch.testing.assert_close(a, 0.5 + 2.5 * sig)
    assert float(a[2]) == pytest.approx(1.75)                     # σ(0) = 1/2: the middle
    assert 0.5 <= float(a.min()) and float(a.max()) <= 3.0
    assert float(b[1]) == pytest.approx(0.15)
    assert ((b > 0.1) & (b < 0.2)).all()
    with pytest.raises(ValueError):
        UpdateRates(2, alpha_range=(1.0, 1.0))


def test_penalty_gradient_is_lambda_over_n_times_range_times_sigmoid_slope():
    n = 5
    rates = UpdateRates(n, alpha_range=(0.0, 2.0), beta_range=(1.0, 4.0))
    with torch.no_grad():
        rates.alpha.copy_(torch.linspace(-2, 2, n))
        rates.beta.copy_(torch.linspace(1, -1, n))
    la, lb = 0.3, 0.7
    rates.penalty(la, lb).backward()
    s_a, s_b = torch.sigmoid(rates.alpha.detach()), torch.sigmoid(rates.beta.detach())
    torch.testing.assert_close(rates.alpha.grad, la / n * 2.0 * s_a * (1 - s_a))
    torch.testing.assert_close(rates.beta.grad, lb / n * 3.0 * s_b * (1 - s_b))


def test_linear_rates_by_index_within_each_class():
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    a, b = linear_rates(labels, (0.0, 2.0), (1.0, 3.0))
    torch.testing.assert_close(a, torch.tensor([0.0, 1.0, 2.0, 0.0, 1.0, 2.0]))
    torch.testing.assert_close(b, torch.tensor([3.0, 2.0, 1.0, 3.0, 2.0, 1.0]))


# -- the distiller ----------------------------------------------------------------------

def _tiny_domains(n_tasks=2, per_class=12):
    src = make_source(num_classes=3, train_per_class=per_class, test_per_class=4, shape=(1, 8, 8))
    return build_scenario("rot-mnist", n_tasks, source=src, progress=False)


def _distiller(strategy, **kw):
    sc = _tiny_domains()
    cfg = DIDDConfig(strategy=strategy, ipc=2, iterations=2, real_batch=6, **kw)
    d = DomainIncrementalDistiller(cfg, lambda: ConvNet(1, 8, 3, width=8), 3, sc.mean, sc.std)
    reals = [RealBatches(t.train_images, t.train_labels, 3, sc.mean, sc.std) for t in sc.tasks]
    return d, reals


def test_one_meta_step_moves_rates_downhill_on_the_meta_loss():
    d, reals = _distiller("asymmetric", meta_optimizer="sgd", meta_lr=0.1, lambda_alpha=0.05, lambda_beta=0.05)
    d.learn_domain(reals[0])
    d.learn_domain(reals[1], iterations=1)            # creates rates, sets x̂^{t−1}; now a step by hand
    d.previous = d.previous + 0.3 * torch.randn_like(d.previous)   # a stability loss to work against
    step = d._matching_step()
    target = step.real_features(reals[1].sample(6, torch.Generator().manual_seed(0)))
    x, labels = d.sets[0].images, d.sets[0].labels
    (g_p,) = torch.autograd.grad(step.class_loss(target, x, labels), x)
    (g_s,) = torch.autograd.grad(step.set_loss(d.previous, x, labels), x)
    before = d.meta_objective(step, target, x, labels, g_s, g_p)
    grad_a, grad_b = torch.autograd.grad(before, [d.rates.alpha, d.rates.beta])
    alpha0, beta0 = d.rates.alpha.detach().clone(), d.rates.beta.detach().clone()
    d.meta_step(step, target, x, labels, g_s, g_p)
    after = d.meta_objective(step, target, x, labels, g_s, g_p)
    assert float(after.detach()) < float(before.detach())
    torch.testing.assert_close(d.rates.alpha.detach() - alpha0, -0.1 * grad_a)
    torch.testing.assert_close(d.rates.beta.detach() - beta0, -0.1 * grad_b)
    assert float((grad_a - grad_a.mean()).abs().max()) > 0       # per-sample, not one shared rate


def test_first_domain_is_the_same_for_every_single_set_strategy():
    finals = []
    for strategy in ("finetune", "stable", "asymmetric", "asymmetric-linear"):
        d, reals = _distiller(strategy)
        d.learn_domain(reals[0])
        finals.append(d.memory.images.detach())
    for f in finals[1:]:
        torch.testing.assert_close(f, finals[0])


@pytest.mark.parametrize("strategy", ["stable", "asymmetric", "ewc", "mas", "lwf"])
def test_second_domain_differs_from_finetune(strategy):
    results = {}
    for s in ("finetune", strategy):
        d, reals = _distiller(s)
        for r in reals:
            log = d.learn_domain(r)
        results[s] = (d.memory.images.detach(), log)
        assert torch.isfinite(d.memory.images).all()
    if strategy in ("ewc", "mas"):                    # Ω scaled to max 1: a step pulls back ≤ λ of the drift
        assert float(d.importance.max()) == pytest.approx(1.0) and float(d.importance.min()) >= 0
    assert not torch.allclose(results["finetune"][0], results[strategy][0])
    if strategy in ("stable", "asymmetric"):
        assert len(results[strategy][1].cosine_gs_gp) == 2
        assert all(-1.0 <= c <= 1.0 for c in results[strategy][1].cosine_gs_gp)


def test_segments_of_the_final_row():
    assert segment_accuracies([10, 20, 30, 40, 50, 60, 70], size=3) == {"1-3": 20.0, "4-6": 50.0, "7-7": 70.0}


# -- runs ------------------------------------------------------------------------------------

def _cfg(strategy, **kw):
    return DomainDistillConfig(scenario="rot-mnist", strategy=strategy, ipc=1, iterations=2, real_batch=4,
                               eval_epochs=3, eval_networks=1, segment=2, backbone="convnet", **kw)


def test_distill_gather_bytes_grow_linearly(tmp_path):
    sc = _tiny_domains(n_tasks=3)
    s = run_domain_distillation(_cfg("distill-gather"), tmp_path / "g", progress=False, scenario=sc)
    per_set = 3 * 1 * (1 * 8 * 8 * 4 + 8)            # C · ipc · (float32 image + int64 label)
    assert s["bytes_after_domain"] == [per_set, 2 * per_set, 3 * per_set]
    f = run_domain_distillation(_cfg("finetune"), tmp_path / "f", progress=False, scenario=sc)
    assert f["bytes_after_domain"] == [per_set] * 3


def test_end_to_end_rot_mnist_like_run(tmp_path):
    sc = _tiny_domains(n_tasks=3)
    s = run_domain_distillation(_cfg("asymmetric"), tmp_path / "a", progress=False, scenario=sc)
    R = [[math.nan if v is None else v for v in row] for row in s["accuracy_matrix"]]
    assert len(R) == 3 and all(math.isnan(R[0][j]) for j in (1, 2)) and not math.isnan(R[2][2])
    import numpy as np
    Rf = np.nan_to_num(np.asarray(R))
    assert s["A_T"] == pytest.approx(final_accuracy(Rf), abs=1e-3)
    assert s["F_T"] == pytest.approx(forgetting(Rf), abs=1e-3)
    assert set(s["segments"]) == {"1-2", "3-3"}
    assert s["distill_s_total"] == pytest.approx(sum(s["distill_s_per_domain"]), abs=0.01)
    assert len(s["distill_s_per_domain"]) == 3 and s["cosine_gs_gp_per_domain"][0] is None
    assert s["cosine_gs_gp_per_domain"][1] is not None
    rates = json.loads((tmp_path / "a" / "rates.json").read_text())
    assert len(rates["alpha"]) == len(rates["beta"]) == 3
    assert (tmp_path / "a" / "stability_plasticity.png").exists() and (tmp_path / "a" / "cosine_gs_gp.png").exists()
    assert (tmp_path / "a" / "memory.pt").exists() and len((tmp_path / "a" / "log.jsonl").read_text().splitlines()) == 3
    j = run_domain_distillation(_cfg("joint"), tmp_path / "j", progress=False, scenario=sc)
    assert j["F_T"] is None and j["accuracy_matrix"][0][0] is None and len(j["distill_s_per_domain"]) == 1


@pytest.mark.parametrize("argv, flag", [
    (["--scenario", "cifar"], "--scenario"),
    (["--scenario", "rot-mnist", "--strategy", "finetune,nope"], "--strategy"),
    (["--scenario", "rot-mnist", "--bases", "4"], "--bases"),
    (["--scenario", "pacs", "--beta-min", "3"], "--beta-max"),
    (["--scenario", "rot-mnist", "--iterations", "0"], "--iterations"),
    (["--preset", "didd-nope"], "--preset"),
])
def test_cli_bad_options_exit_2_with_one_line(argv, flag, capsys, tmp_path):
    assert main(["distill", *argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0]
    assert not (tmp_path / "x").exists()


def test_cli_runs_several_strategies_into_one_folder_each(tmp_path, monkeypatch, capsys):
    import memdistill.data.scenarios as scenarios
    sc = _tiny_domains(n_tasks=2)
    monkeypatch.setattr(scenarios, "build_scenario", lambda *a, **k: sc)
    out = tmp_path / "cli"
    code = main(["distill", "--scenario", "rot-mnist", "--strategy", "finetune,asymmetric-linear", "--ipc", "2",
                 "--iterations", "2", "--real-batch", "4", "--eval-epochs", "2", "--out", str(out), "--no-progress"])
    assert code == 0
    for s in ("finetune", "asymmetric-linear"):
        summary = json.loads((out / s / "summary.json").read_text())
        assert summary["strategy"] == s and summary["ipc"] == 2 and summary["domains"] == 2
    table = (out / "table.md").read_text()
    assert "| finetune |" in table and "| asymmetric-linear |" in table
    captured = capsys.readouterr()
    assert "| asymmetric-linear |" in captured.out
    # without the bar, each finished domain still prints one line (2 strategies x 2 domains)
    lines = [l for l in captured.err.splitlines() if l.startswith("[didd ")]
    assert len(lines) == 4 and "domain 2/2: mean accuracy on the 2 domains seen" in lines[1]
    assert lines[1].endswith("ETA 0s") and "\r" not in captured.err


def test_every_preset_is_a_valid_config():
    from memdistill.distill.domain_experiment import PRESETS, validate
    for name, preset in PRESETS.items():
        for strategy in preset["strategies"]:
            validate(DomainDistillConfig(**{**preset["options"], "strategy": strategy}))
