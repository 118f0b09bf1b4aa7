"""Domain randomisation: exact small cases for each pure function, and the batch hook."""

from __future__ import annotations

import math

import pytest
import torch

from ich.data import randomize
from ich.data.augment import AugmentConfig, BatchAugment, make_batch_augment
from ich.errors import ConfigError

#: brain 40/80 and soft tissue 40/380, (centre, width) HU.
WINDOWS = [(40.0, 80.0), (40.0, 380.0)]


def _gen(seed: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_hu_jitter_offset_moves_each_window_by_its_width() -> None:
    x = torch.full((3, 2, 4, 4), 0.5)  # 40 HU in both windows
    out = randomize.hu_jitter(x, WINDOWS, scale=0.0, offset_hu=10.0, gen=_gen())
    shift_brain = (out[:, 0] - 0.5) * 80.0  # back to HU
    shift_soft = (out[:, 1] - 0.5) * 380.0
    assert torch.allclose(shift_brain, shift_soft, atol=1e-4)  # one HU offset per sample
    assert shift_brain.abs().max() <= 10.0 + 1e-4
    assert shift_brain[:, 0, 0].unique().numel() == 3  # differs between samples
    same = randomize.hu_jitter(x, WINDOWS, scale=0.0, offset_hu=0.0, gen=_gen())
    assert torch.allclose(same, x)


def test_hu_jitter_scale_is_about_zero_hu() -> None:
    # 40 HU with slope 1.1 reads 44 HU: +4/80 in the brain window.
    x = torch.full((1, 2, 2, 2), 0.5)
    g = _gen()
    s = 1 + 0.1 * (2 * torch.rand(1, generator=_gen()) - 1)  # what hu_jitter will draw first
    out = randomize.hu_jitter(x, WINDOWS, scale=0.1, offset_hu=0.0, gen=g)
    assert torch.allclose(out[0, 0], torch.full((2, 2), 0.5 + 40 * (float(s) - 1) / 80), atol=1e-5)


def test_correlated_noise_level_and_texture() -> None:
    x = torch.full((4, 2, 64, 64), 0.5)
    white = randomize.correlated_noise(x, WINDOWS, (5.0, 5.0), (0.0, 0.0), _gen(1))
    blotchy = randomize.correlated_noise(x, WINDOWS, (5.0, 5.0), (2.0, 2.0), _gen(1))
    for out in (white, blotchy):
        hu = (out[:, 0] - 0.5) * 80.0
        assert abs(float(hu.std()) - 5.0) < 0.3  # the asked σ in HU
        # the same field in both windows, scaled by the width ratio
        assert torch.allclose((out[:, 1] - 0.5) * 380.0, hu, atol=1e-3)

    def neighbour_corr(out: torch.Tensor) -> float:
        a = out[:, 0, :, :-1].flatten() - 0.5
        b = out[:, 0, :, 1:].flatten() - 0.5
        return float((a * b).mean() / (a.std() * b.std()))

    assert abs(neighbour_corr(white)) < 0.05
    assert neighbour_corr(blotchy) > 0.7


def test_low_resolution_removes_fine_detail_only_when_chosen() -> None:
    checker = (torch.arange(32).view(1, -1) + torch.arange(32).view(-1, 1)) % 2
    x = checker.float().expand(2, 1, 32, 32).contiguous()
    assert torch.equal(randomize.low_resolution(x, 0.0, (2.0, 2.0), _gen()), x)
    out = randomize.low_resolution(x, 1.0, (2.0, 2.0), _gen())
    assert float(out.std()) < 0.1 * float(x.std())  # the 1-pixel pattern is gone
    smooth = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(1, 1, 32, 32)
    kept = randomize.low_resolution(smooth.contiguous(), 1.0, (2.0, 2.0), _gen())
    assert float((kept - smooth)[..., 2:-2].abs().max()) < 0.02  # a ramp survives


def test_calcified_dots_land_in_tissue_with_a_calcium_core() -> None:
    """Dots are centred in brain or CSF (-5 to 50 HU), never in air; each has a core no blood
    reaches (>= 150 HU) and the wider ones a rim of intermediate, blood-like density."""
    windows = [(40.0, 80.0), (300.0, 1000.0)]  # brain, and a wide one that never clips a dot
    x = torch.zeros((8, 2, 32, 32))  # air (-200 HU in the wide window)...
    x[:, 0, 8:24, 8:24] = 0.375  # ...around a square of 30 HU tissue
    x[:, 1, 8:24, 8:24] = (30.0 + 200.0) / 1000.0
    out = randomize.calcified_dots(x, windows, p=0.5, gen=_gen(3))
    hu = -200.0 + out[:, 1] * 1000.0
    added = hu - (-200.0 + x[:, 1] * 1000.0)
    changed = added.abs().amax(dim=(1, 2)) > 1.0
    assert 0 < int(changed.sum()) < 8  # only the chosen samples
    assert (added >= -1e-3).all()  # calcium only adds density
    # A dot (radius <= 1.8 px) is centred in the tissue; 3 px beyond it the air is untouched.
    assert (added[:, :5].abs().max() < 1.0) and (added[:, :, :5].abs().max() < 1.0)
    peaks = hu[changed].flatten(1).argmax(dim=1)
    rows, cols = peaks // 32, peaks % 32
    assert ((rows >= 8) & (rows < 24) & (cols >= 8) & (cols < 24)).all()
    assert (hu[changed].amax(dim=(1, 2)) >= 150.0).all()  # every dot set has a core
    assert ((hu[changed] > 50.0) & (hu[changed] < 100.0)).any()  # a blood-like rim
    assert torch.equal(randomize.calcified_dots(x, windows, p=0.0, gen=_gen(3)), x)


def test_tilt_matrices() -> None:
    assert torch.equal(randomize.tilt_matrices(3, 0.0, 25.0, _gen()), torch.eye(2).expand(3, 2, 2))
    m = randomize.tilt_matrices(200, 1.0, 25.0, _gen())
    det = torch.linalg.det(m)
    assert float(det.min()) >= math.cos(math.radians(25.0)) - 1e-6
    assert float(det.max()) <= 1.0
    assert float(det.min()) < 0.93  # real tilts drawn
    theta = torch.zeros(1, 2, 3)
    theta[0, :, :2] = torch.eye(2)
    theta[0, :, 2] = torch.tensor([0.1, -0.2])
    out = randomize.compose_tilt(theta, m[:1])
    assert torch.allclose(out[0, :, :2], m[0]) and torch.equal(out[0, :, 2], theta[0, :, 2])


def test_elastic_offsets_are_smooth_bounded_and_zero_when_not_chosen() -> None:
    field = randomize.elastic_offsets(64, 0.5, 0.03, (48, 40), _gen())
    assert field.shape == (64, 48, 40, 2)
    moved = field.flatten(1).abs().amax(dim=1) > 0
    assert 16 < int(moved.sum()) < 48  # about half the samples, the rest untouched
    assert torch.count_nonzero(field[~moved]) == 0
    # Smooth: neighbouring pixels move almost alike (a 5 x 5 control grid over the image)...
    step = (field[:, 1:] - field[:, :-1]).abs().max()
    assert step < 0.2 * field.abs().max()
    # ...by a few per cent of the half side, in proportion to the strength.
    assert 0.02 < float(field[moved].std()) < 0.04
    stronger = randomize.elastic_offsets(64, 0.5, 0.06, (48, 40), _gen())
    assert torch.allclose(stronger, 2 * field, atol=1e-6)
    assert torch.count_nonzero(randomize.elastic_offsets(8, 0.0, 0.03, (8, 8), _gen())) == 0


def test_batch_augment_elastic_bends_shapes_and_keeps_intensities() -> None:
    off = {"hflip_p": 0.0, "affine_p": 0.0, "crop_p": 0.0, "blur_p": 0.0, "contrast_p": 0.0,
           "noise_std": 0.0}
    x = torch.zeros(4, 1, 64, 64)
    x[:, :, 16:48, 16:48] = 1.0  # a square that a warp makes non-square
    same = BatchAugment(AugmentConfig(**off), seed=0).train()(x)  # type: ignore[arg-type]
    bent = BatchAugment(AugmentConfig(**off, elastic_p=1.0), seed=0).train()(x)  # type: ignore[arg-type]
    assert torch.allclose(same, x, atol=1e-5)
    changed = (bent - x).abs() > 0.5
    assert int(changed.sum()) > 20 and bool((changed[:, :, 30:34, 30:34] == 0).all())
    area = bent.sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))
    assert bool(((area > 0.8) & (area < 1.2)).all())  # bent, not erased or inflated
    with pytest.raises(ConfigError, match=r"augment\.elastic"):
        AugmentConfig(elastic_strength=-0.1)


def test_batch_augment_randomisation_is_seeded_and_off_by_default() -> None:
    cfg = AugmentConfig(
        hu_scale=0.05, hu_offset=8.0, noise_hu=(1.0, 6.0), lowres_p=0.5, tilt_p=0.5
    )
    x = torch.rand(6, 2, 32, 32)
    a = BatchAugment(cfg, seed=3, windows=WINDOWS).train()(x)
    b = make_batch_augment(cfg, seed=3, windows=WINDOWS)
    assert b is not None
    assert torch.equal(a, b.train()(x))
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    plain = BatchAugment(AugmentConfig(), seed=3, windows=WINDOWS).train()(x)
    no_windows = BatchAugment(AugmentConfig(), seed=3).train()(x)
    assert torch.equal(plain, no_windows)  # defaults leave the old augmentation unchanged
    assert not torch.allclose(a, plain)


@pytest.mark.parametrize(
    "bad", [{"lowres_p": 1.5}, {"noise_hu": (5.0, 1.0)}, {"lowres_factor": (0.0, 2.0)},
            {"elastic_p": 1.5}, {"dots_p": -0.1}]
)
def test_bad_randomisation_config_is_named(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=r"augment\."):
        AugmentConfig(**bad)  # type: ignore[arg-type]
