"""The device splits and their augmentation (batches.py): each operation does what it says, seeded."""

import pytest
import torch
from conftest import SIZE

from raybench import batches


def augment(ops, x, seed=0, fill=(0.5,)):
    return batches.Augmentation(ops, generator=torch.Generator().manual_seed(seed), fill=fill)(x)


def test_flip_and_rot90_give_flipped_and_turned_images():
    x = torch.rand(64, 1, 8, 8)
    flipped, turned = augment(["flip"], x), augment(["rot90"], x)
    counts = {"flip": set(), "rot90": set()}
    for image, a, b in zip(x, flipped, turned, strict=True):
        flips = [image, image.flip(-1), image.flip(-2), image.flip(-1).flip(-2)]
        counts["flip"].add(next(i for i, f in enumerate(flips) if torch.equal(a, f)))
        counts["rot90"].add(next(k for k in range(4) if torch.equal(b, torch.rot90(image, k, (-2, -1)))))
    assert counts == {"flip": {0, 1, 2, 3}, "rot90": {0, 1, 2, 3}}


def test_shift_translates_by_up_to_8_percent_padding_with_the_mean():
    x = torch.rand(32, 3, SIZE, SIZE)
    fill = (0.2, 0.5, 0.8)
    shifted = augment(["shift"], x, fill=fill)
    pad = round(0.08 * SIZE)
    moves = set()
    for image, out in zip(x, shifted, strict=True):
        found = None
        for dy in range(-pad, pad + 1):
            for dx in range(-pad, pad + 1):
                expected = torch.tensor(fill).view(3, 1, 1).expand(3, SIZE, SIZE).clone()
                src = image[:, max(dy, 0) : SIZE + min(dy, 0), max(dx, 0) : SIZE + min(dx, 0)]
                expected[:, max(-dy, 0) : SIZE + min(-dy, 0), max(-dx, 0) : SIZE + min(-dx, 0)] = src
                if torch.equal(out, expected):
                    found = (dy, dx)
        assert found is not None
        moves.add(found)
    assert len(moves) > 10  # each image draws its own


def test_jitter_changes_exposure_and_contrast_and_noise_adds_a_little():
    x = 0.4 + 0.2 * torch.rand(16, 1, 8, 8)  # mid-grey: nothing is clipped
    jittered = augment(["jitter"], x)
    for image, out in zip(x, jittered, strict=True):
        centred, out_centred = image - image.mean(), out - out.mean()
        contrast = float(out_centred.std() / centred.std())
        assert 0.8 <= contrast <= 1.2 and torch.allclose(out_centred, centred * contrast, atol=1e-5)
        assert abs(float(out.mean() - image.mean())) <= 0.1 + 1e-6
    noisy = augment(["noise"], x)
    assert float((noisy - x).std()) == pytest.approx(0.02, rel=0.1) and abs(float((noisy - x).mean())) < 0.002
    assert torch.equal(augment(["noise"], x, seed=3), augment(["noise"], x, seed=3))
