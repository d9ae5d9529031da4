"""Bytes of every memory kind against hand computation, and budget -> run planning."""
import pytest
import torch

from memdistill import budget as B
from memdistill import engine
from memdistill.config import ConfigError, RunConfig
from memdistill.data.scenarios import build_scenario
from memdistill.distill.inversion import ImageGenerator
from memdistill.distill.memories import (AddressableMemory, QuantizedAddressable, QuantizedImages, SyntheticImages,
                                         fit_addressable,
                                         fit_images, image_memory_bytes, load_memory)
from memdistill.memory import ReservoirBuffer
from memdistill.methods.didd import didd_memory_bytes

from conftest import make_source

CIFAR = (3, 32, 32)


def _add(buffer, n, extras=None):
    images = torch.randint(0, 255, (n, *buffer.images.shape[1:]), dtype=torch.uint8)
    buffer.add(images, torch.arange(n) % 10, 0, torch.Generator().manual_seed(0), extras=extras)


def test_exemplar_buffer_bytes_without_and_with_logits():
    plain = ReservoirBuffer(5, CIFAR)
    _add(plain, 3)
    # uint8 image 3*32*32 = 3072, int64 label 8, int64 task id 8; only the 3 stored samples count
    assert plain.nbytes == 3 * (3072 + 8 + 8) == 9264
    assert plain.nbytes_detail == {"samples": 9264}
    derpp = ReservoirBuffer(5, CIFAR, extras={"logits": (10,)})
    _add(derpp, 4, extras={"logits": torch.randn(4, 10)})
    assert derpp.nbytes_detail == {"samples": 4 * 3088, "logits": 4 * 10 * 4}
    assert derpp.nbytes == 4 * (3088 + 40)
    assert ReservoirBuffer.sample_bytes(CIFAR, {"logits": (10,)}) == 3128


def test_ddn_soft_label_nets_count_g_w_and_g_old():
    # G: C -> h -> h -> C with biases: 10*200 + 200 + 200*200 + 200 + 200*10 + 10 = 44,410 floats
    assert B.soft_label_net_bytes(10, 200) == 4 * 44_410 == 177_640
    assert B.soft_label_net_bytes(100, 50) == 4 * (100 * 50 + 50 + 50 * 50 + 50 + 50 * 100 + 100)
    scenario = build_scenario("seq-digits", source=make_source(shape=(1, 4, 4)), progress=False)
    cfg = RunConfig(method="er", buffer=20, backbone="mlp", plugin="ddn", plugin_args={"hidden": 16},
                    epochs=1, samples_per_task=20)
    summary = engine.run(cfg, None, scenario, progress=False)
    g = 4 * (10 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10)
    assert summary["memory_bytes_detail"] == {"samples": 20 * (16 + 16), "soft_label_net": g,
                                              "soft_label_net_old": g}
    assert summary["memory_bytes"] == 20 * 32 + 2 * g


def test_float32_and_uint8_synthetic_images(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = SyntheticImages.random((1, 8, 8), 3, 2, g)
    # 6 images of 64 float32 pixels + an int64 label each
    assert images.nbytes == 6 * (64 * 4 + 8) == 1584 == image_memory_bytes(3, 2, (1, 8, 8))
    q = QuantizedImages.quantise(images)
    # 6 uint8 codes of 64 pixels + int64 labels + one float32 scale and offset
    assert q.nbytes == 6 * (64 + 8) + 4 + 4 == 440 == image_memory_bytes(3, 2, (1, 8, 8), "uint8")
    x, y = q.recall(range(2))
    assert torch.equal(y, images.labels)
    assert (x - images.images.detach()).abs().max() <= q.scale.item() / 2 + 1e-6   # dequantised
    back = load_memory(q.save(tmp_path / "q.pt"))
    assert isinstance(back, QuantizedImages) and back.nbytes == 440 and torch.equal(back.codes, q.codes)
    # images per class that fit: floor(bytes / (C * per image))
    assert fit_images(1584, 2, (1, 8, 8)) == 3 and fit_images(1583, 2, (1, 8, 8)) == 2
    assert fit_images(440, 2, (1, 8, 8), "uint8") == 3 and fit_images(439, 2, (1, 8, 8), "uint8") == 2


def test_addressable_bases_plus_addressing_eq4():
    # Eq. 4: K bases of C x H/ds x W/ds + r matrices of d_y x K floats <= the budget.
    budget_floats = 1000
    fitted = fit_addressable(budget_floats, 2, (1, 8, 8), 3, downsample=2)
    base = 1 * 4 * 4
    r = (budget_floats - 3 * base) // (2 * 3)          # (1000 - 48) // 6 = 158
    assert (fitted.num_bases, fitted.recalls) == (3, 158)
    assert fitted.nbytes == 4 * (3 * base + r * 2 * 3) == 3984
    memory = AddressableMemory.initialise((1, 8, 8), 2, 3, fitted.recalls, 2, torch.Generator().manual_seed(0))
    assert memory.nbytes == fitted.nbytes


def test_uint8_addressable_memory_recalls_within_the_rounding_and_takes_a_quarter_of_the_bytes(tmp_path):
    g = torch.Generator().manual_seed(0)
    memory = AddressableMemory.initialise((1, 8, 8), 2, 3, 5, 2, g)
    q = QuantizedAddressable.quantise(memory)
    # 3 bases of 4x4 + 5 matrices of 2x3 one-byte codes, + two float32 (scale, offset) pairs
    assert q.nbytes == 3 * 16 + 5 * 2 * 3 + 16 == 94
    assert memory.nbytes == 4 * (3 * 16 + 5 * 2 * 3)
    x, y = q.recall(range(2))
    x0, y0 = memory.recall(range(2))
    assert torch.equal(y, y0) and x.shape == x0.shape
    # each recalled pixel is a sum over K of coefficient x basis: its error is bounded by the
    # two roundings (half a step each) times the largest values they multiply
    a, b = memory.addressing.detach().abs().max(), memory.bases.detach().abs().max()
    bound = 3 * (q.addressing_scale.item() / 2 * (b + q.base_scale.item() / 2) + a * q.base_scale.item() / 2)
    assert 0 < (x - x0.detach()).abs().max() <= bound
    back = load_memory(q.save(tmp_path / "q.pt"))
    assert isinstance(back, QuantizedAddressable) and back.nbytes == 94
    assert torch.equal(back.recall(range(2))[0], x)
    # Eq. 4 in one-byte values: the budget's nbytes is what the quantised memory takes
    fitted = fit_addressable(94 - 16, 2, (1, 8, 8), 3, downsample=2, quantize="uint8")
    assert (fitted.recalls, fitted.nbytes) == (5, 94)


def test_addressable_kind_with_quantize_uint8_is_planned_in_one_byte_values():
    plain = B.plan("addressable", 700_000, ROT, {"bases": 20, "downsample": 2})
    q = B.plan("addressable", 700_000, ROT, {"bases": 20, "downsample": 2, "quantize": "uint8"})
    assert q.detail.keys() == {"addressable-uint8"} and q.method_args["quantize"] == "uint8"
    share = 700_000 // ROT.num_tasks
    fitted = fit_addressable(share - 16, 10, (1, 28, 28), 20, 2, quantize="uint8")
    assert q.planned_bytes == ROT.num_tasks * fitted.nbytes <= 700_000
    assert f"{fitted.recalls} recalls/class/task" in q.note and fitted.recalls > 4 * int(plain.note.split()[4])


def test_generator_parameters_and_statistics():
    # noise 10, width 4, 8x8x1: init 2x2; Linear 10 -> 8*2*2 (352), BN(8) 4*8, conv 8->8 (584),
    # BN(8) 32, conv 8->4 (292), BN(4) 16, conv 4->1 (37), BN(1, no affine) 2 floats;
    # + one int64 num_batches_tracked per batch norm (4).
    floats = 352 + 32 + 584 + 32 + 292 + 16 + 37 + 2
    assert B.generator_bytes((1, 8, 8), 10, 4) == 4 * floats + 4 * 8 == 5420
    assert ImageGenerator((1, 8, 8), 10, 4).nbytes == 5420
    assert B.generator_bytes(CIFAR) == ImageGenerator(CIFAR).nbytes


def test_generator_fits_the_budget_unless_its_width_is_given():
    plan = B.plan("generator", 1_544_000, SHAPE, {"noise_dim": 100})
    width = plan.method_args["generator_width"]
    assert plan.planned_bytes == B.generator_bytes(CIFAR, 100, width) <= 1_544_000
    assert B.generator_bytes(CIFAR, 100, width + 1) > 1_544_000
    assert B.plan("generator", 10**9, SHAPE).method_args["generator_width"] == 64   # the paper's, at most
    assert not B.KINDS["generator"].fixed_size({"noise_dim": 100})
    fixed = B.plan("generator", 1_544_000, SHAPE, {"generator_width": 8})
    assert fixed.budget is None and fixed.planned_bytes == B.generator_bytes(CIFAR, 1000, 8) > 1_544_000
    assert B.KINDS["generator"].fixed_size({"generator_width": 8})
    with pytest.raises(ConfigError, match="--budget.*generator.*noise_dim"):
        B.plan("generator", 100_000, SHAPE)


def test_domain_incremental_synthetic_set():
    # ipc x C float32 images + int64 labels (+ two float32 rates per image for asymmetric)
    assert didd_memory_bytes(3, 4, (1, 8, 8)) == 12 * (256 + 8 + 8) == 3264
    assert didd_memory_bytes(3, 4, (1, 8, 8), "stable") == 12 * 264


SHAPE = B.ScenarioShape("seq-cifar10", "class-incremental", 10, CIFAR, (2, 2, 2, 2, 2))
ROT = B.ScenarioShape("rot-mnist", "domain-incremental", 10, (1, 28, 28), (10,) * 5)


@pytest.mark.parametrize("shape", [SHAPE, ROT])
@pytest.mark.parametrize("budget", [700_000, 1_544_000])
def test_every_kind_plans_within_one_unit_of_the_budget(shape, budget):
    for kind in B.applicable_kinds(shape.kind):
        plan = B.plan(kind, budget, shape)
        assert sum(plan.detail.values()) == plan.planned_bytes
        if kind == "generator":                  # the widest generator within the budget
            width = plan.method_args["generator_width"]
            assert plan.planned_bytes <= budget < B.generator_bytes(shape.input_shape, 1000, width + 1)
            continue
        c, h, w = shape.input_shape
        unit = {"exemplars": shape.exemplar_bytes, "exemplars+ddn": shape.exemplar_bytes,
                "exemplars+logits": shape.exemplar_bytes + 4 * shape.num_classes,
                # per-task memories: less than one unit left in each task's share (+ the rounding of B/T)
                "distilled-images": shape.num_tasks * (4 * c * h * w + 8) * max(shape.classes_per_task) + shape.num_tasks,
                "distilled-images-uint8": shape.num_tasks * (c * h * w + 8) * max(shape.classes_per_task) + shape.num_tasks,
                "addressable": shape.num_tasks * 4 * max(shape.classes_per_task) * 20 + shape.num_tasks,
                "synthetic-set": shape.num_classes * (4 * c * h * w + 16)}[kind]
        assert budget - unit < plan.planned_bytes <= budget, kind


def test_planning_by_hand_for_exemplars_ddn_and_logits():
    ddn = B.plan("exemplars+ddn", 1_000_000, SHAPE)
    assert ddn.buffer == (1_000_000 - 2 * 177_640) // 3088 == 208
    assert ddn.plugin == "ddn" and ddn.method == "er"
    assert B.plan("exemplars+logits", 1_000_000, SHAPE).buffer == 1_000_000 // (3088 + 40)
    assert B.plan("exemplars", 1_000_000, SHAPE).buffer == 1_000_000 // 3088
    single = B.ScenarioShape("x", "class-incremental", 10, CIFAR, (10,))
    assert B.plan("exemplars+ddn", 1_000_000, single).detail.keys() == {"samples", "soft_label_net"}


def test_budgets_too_small_or_kinds_not_applicable_are_errors():
    with pytest.raises(ConfigError, match="--budget.*exemplars\\+ddn"):
        B.plan("exemplars+ddn", 300_000, SHAPE)
    with pytest.raises(ConfigError, match="--budget.*too small for kind exemplars"):
        B.plan("exemplars", 3000, SHAPE)
    with pytest.raises(ConfigError, match="--budget.*addressable"):
        B.plan("addressable", 100, SHAPE)
    with pytest.raises(ConfigError, match="--kinds.*allowed: exemplars"):
        B.plan("synthetic-set", 10**6, SHAPE)
    with pytest.raises(ConfigError, match="--kinds.*allowed"):
        B.plan("generator", 10**6, ROT)
    with pytest.raises(ConfigError, match="--kinds: unknown memory kind 'tape'"):
        B.plan("tape", 10**6, SHAPE)


@pytest.mark.parametrize("text,value", [("4096", 4096), ("50KB", 50_000), ("50kib", 51_200),
                                        ("1.5MB", 1_500_000), ("2 MiB", 2 * 1024 ** 2), ("10B", 10)])
def test_parse_budget(text, value):
    assert B.parse_budget(text) == value


@pytest.mark.parametrize("text", ["", "12XB", "KB", "-5", "0"])
def test_unparsable_budgets(text):
    with pytest.raises(ConfigError, match="--budget"):
        B.parse_budget(text)


def test_ipc_budget_and_labels():
    assert B.ipc_budget(5, SHAPE) == 5 * 10 * 3088
    assert B.budget_label(50_000) == "50KB" and B.budget_label(51_200) == "50KiB" and B.budget_label(1234) == "1234B"
