import pytest
import torch

from memdistill.nets import BACKBONES, build_backbone


@pytest.mark.parametrize("name,shape,feature_dim", [
    ("resnet18", (3, 32, 32), 512),
    ("reduced-resnet18", (3, 32, 32), 160),
    ("resnet32", (3, 32, 32), 64),
    ("convnet", (1, 28, 28), 2048),
    ("convnet", (3, 32, 32), 2048),
    ("convnet", (3, 64, 64), 2048),
    ("mlp", (1, 28, 28), 100),
])
def test_features_and_logits(name, shape, feature_dim):
    net = build_backbone(name, shape, 7)
    x = torch.randn(2, *shape)
    feats = net.features(x)
    assert feats.shape == (2, feature_dim) == (2, net.feature_dim)
    logits = net(x)
    assert logits.shape == (2, 7)
    assert torch.allclose(net.head(feats), logits, atol=1e-5)


def test_parameter_counts_match_the_reference_networks():
    count = lambda n: sum(p.numel() for p in n.parameters())
    # Mammoth's resnet18 for CIFAR-10 has 11,173,962 parameters
    assert count(build_backbone("resnet18", (3, 32, 32), 10)) == 11_173_962
    reduced = build_backbone("reduced-resnet18", (3, 32, 32), 10)
    widths = [reduced.body.get_submodule(f"layer{i}")[0].conv1.out_channels for i in range(1, 5)]
    assert widths == [20, 40, 80, 160]
    # CIFAR ResNet-32 with 100 classes: ~0.47M
    assert 460_000 < count(build_backbone("resnet32", (3, 32, 32), 100)) < 475_000


def test_resnet18_has_no_maxpool_and_a_3x3_stem():
    net = build_backbone("resnet18", (3, 32, 32), 10)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())
    assert net.body.conv1.kernel_size == (3, 3) and net.body.conv1.stride == (1, 1)


def test_convnet_uses_instance_norm():
    net = build_backbone("convnet", (3, 32, 32), 10)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 3 and all(m.num_groups == m.num_channels == 128 for m in norms)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="choose from"):
        build_backbone("vgg", (3, 32, 32), 10)
    assert set(BACKBONES) == {"resnet18", "reduced-resnet18", "resnet32", "convnet", "mlp"}
