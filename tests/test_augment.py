import torch
import torch.nn.functional as F

from memdistill.data.augment import Preprocess, random_crop_flip


def test_crop_flip_matches_a_per_sample_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(x, 2, g)
    # replay the same random draws per sample
    g = torch.Generator().manual_seed(0)
    offsets = torch.randint(0, 5, (2, 16), generator=g)
    flips = torch.rand(16, generator=g) < 0.5
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(16):
        dy, dx = offsets[:, i].tolist()
        ref = padded[i, :, dy:dy + 8, dx:dx + 8]
        if flips[i]:
            ref = ref.flip(-1)
        assert torch.equal(out[i], ref)


def test_crops_vary_and_keep_shape():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(x, 4, g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert (out == 0).any()                  # some padding shows
    assert not torch.equal(out, x)


def test_preprocess_normalises_and_skips_augmentation_at_test_time():
    pre = Preprocess((0.5,), (0.25,), augment=True, device=torch.device("cpu"))
    x = torch.tensor([0, 255], dtype=torch.uint8).reshape(2, 1, 1, 1)
    out = pre(x, train=False)
    assert torch.allclose(out.flatten(), torch.tensor([-2.0, 2.0]))
    cl = Preprocess((0.5,) * 3, (0.25,) * 3, augment=False, device=torch.device("cpu"), channels_last=True)
    y = cl(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))
    assert y.is_contiguous(memory_format=torch.channels_last)
