"""Train-time augmentation: per-sample torchvision v2 transforms, or one batched op on device.

Two ways to run the same augmentation (``AugmentConfig.mode``):

* ``"batch"`` (default, fast): the loader workers do only what needs the HU values or is free
  (window jitter, in :class:`ich.data.datasets.SliceDataset`); everything geometric (flip,
  rotate, scale, shift, random resized crop, composed into one affine matrix per sample) and
  photometric (contrast, blur, noise) runs in :class:`BatchAugment` on the whole batch, on the
  training device, after the batch is moved there. One ``affine_grid`` + ``grid_sample`` call
  replaces 64 per-sample warps: this is what keeps a 2-core machine at > 1,500 slices/s and a GPU
  from waiting.
* ``"sample"``: :func:`build_sample_transform` - a ``torchvision.transforms.v2`` pipeline applied
  per sample inside the dataset. Simple and familiar; too slow for 256 px on few cores.

Evaluation never augments: pass ``augment=None`` to the dataset and call ``BatchAugment`` only in
training (it is also a no-op in ``eval()`` mode).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torchvision.transforms import v2

from ich.data import randomize
from ich.errors import ConfigError

AugmentMode = Literal["batch", "sample"]


@dataclass
class AugmentConfig:
    """What to augment, how strongly and how often (probabilities are per sample).

    Attributes:
        enabled: Master switch; ``False`` turns every augmentation off.
        mode: ``"batch"`` (BatchAugment on device) or ``"sample"`` (v2 per sample in workers).
        hflip_p: Horizontal flip (left/right brain symmetry: bleeds occur on both sides).
        affine_p: Probability of a rotate/scale/shift.
        rotate_deg: Rotation range (±degrees); heads are tilted in the gantry.
        scale: Zoom range (head size varies between patients).
        shift_frac: Shift range as a fraction of the image side (±).
        crop_p: Probability of a random resized crop.
        crop_scale: Area fraction range of the crop (square crops).
        window_center_hu: Window centre jitter (± HU), per sample and window; scanners differ
            in calibration by a few HU.
        window_width_frac: Window width jitter (± fraction of the width).
        noise_std: Maximum Gaussian noise σ on the windowed [0, 1] image (σ ~ U(0, max)).
        blur_p: Probability of a Gaussian blur (soft reconstruction kernels).
        blur_sigma: Blur σ range in pixels.
        contrast_p: Probability of a contrast change.
        contrast: Contrast factor range 1 ± this, around each channel's mean.
        hu_scale: Domain randomisation (:mod:`ich.data.randomize`, batch mode, 0 = off): HU
            slope jitter ± this fraction, coherent across a sample's channels.
        hu_offset: HU calibration offset jitter (± HU).
        noise_hu: Range of correlated noise σ in HU ((0, 0) = off).
        noise_grain: Range of the noise correlation length in pixels (0 = white).
        lowres_p: Probability of a down/up-sampling (resolution loss).
        lowres_factor: Down-sampling factor range.
        tilt_p: Probability of a gantry-tilt-like stretch and shear.
        tilt_deg: Maximum tilt (degrees).
        elastic_p: Probability of a smooth elastic warp (anatomy that differs in shape).
        elastic_strength: Its control-point displacement sigma, a fraction of half the side.
        dots_p: Probability of small calcium-dense dots pasted into the head
            (:func:`ich.data.randomize.calcified_dots`; needs the windows).
    """

    enabled: bool = True
    mode: AugmentMode = "batch"
    hflip_p: float = 0.5
    affine_p: float = 0.75
    rotate_deg: float = 15.0
    scale: tuple[float, float] = (0.9, 1.1)
    shift_frac: float = 0.0625
    crop_p: float = 0.3
    crop_scale: tuple[float, float] = (0.7, 1.0)
    window_center_hu: float = 10.0
    window_width_frac: float = 0.1
    noise_std: float = 0.02
    blur_p: float = 0.1
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    contrast_p: float = 0.5
    contrast: float = 0.1
    hu_scale: float = 0.0
    hu_offset: float = 0.0
    noise_hu: tuple[float, float] = (0.0, 0.0)
    noise_grain: tuple[float, float] = (0.0, 2.0)
    lowres_p: float = 0.0
    lowres_factor: tuple[float, float] = (1.0, 2.0)
    tilt_p: float = 0.0
    tilt_deg: float = 25.0
    elastic_p: float = 0.0
    elastic_strength: float = 0.03
    dots_p: float = 0.0

    def __post_init__(self) -> None:
        for name in ("hflip_p", "affine_p", "crop_p", "blur_p", "contrast_p", "lowres_p", "tilt_p",
                     "elastic_p", "dots_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"augment.{name} must be a probability in [0, 1], got {value}")
        if self.mode not in ("batch", "sample"):
            raise ConfigError(f"augment.mode must be 'batch' or 'sample', got {self.mode!r}")
        for name in ("scale", "crop_scale", "blur_sigma", "lowres_factor"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ConfigError(f"augment.{name} must be (low, high) with 0 < low <= high")
        for name in ("noise_hu", "noise_grain"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ConfigError(f"augment.{name} must be (low, high) with 0 <= low <= high")
        if self.elastic_strength < 0:
            raise ConfigError(f"augment.elastic_strength must be >= 0, got {self.elastic_strength}")
        if self.crop_scale[1] > 1.0:
            raise ConfigError("augment.crop_scale must not exceed 1.0 (a crop is a part)")

    def to_dict(self) -> dict[str, Any]:
        """Plain types for YAML / checkpoints (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        """Inverse of :meth:`to_dict`; unknown keys are a ConfigError (typos must not pass)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown augment keys {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**values)


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    """(n,) floats uniform in [low, high) from ``gen`` (CPU)."""
    return low + (high - low) * torch.rand(n, generator=gen)


def _chance(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """(n,) bools, each True with probability p."""
    return torch.rand(n, generator=gen) < p


def random_affine_matrices(cfg: AugmentConfig, n: int, gen: torch.Generator) -> torch.Tensor:
    """Per-sample output->input affine matrices (n, 2, 3) in ``affine_grid``'s [-1, 1] coords.

    Flip, rotation, zoom (scale x crop zoom), shift and crop centre are composed so one
    ``grid_sample`` does them all: ``p_in = R @ F @ p_out / zoom + shift + crop_centre``.
    """
    flip = torch.where(_chance(n, cfg.hflip_p, gen), -1.0, 1.0)  # (n,)
    do_affine = _chance(n, cfg.affine_p, gen)
    angle = torch.where(do_affine, _uniform(n, -1, 1, gen) * math.radians(cfg.rotate_deg), 0.0)
    zoom = torch.where(do_affine, _uniform(n, *cfg.scale, gen), 1.0)
    shift = torch.where(do_affine.unsqueeze(1), _uniform(2 * n, -1, 1, gen).view(n, 2), 0.0)
    shift = shift * 2.0 * cfg.shift_frac  # normalised coords span 2 per image side
    do_crop = _chance(n, cfg.crop_p, gen)
    side = torch.where(do_crop, _uniform(n, *cfg.crop_scale, gen).sqrt(), 1.0)  # crop side frac
    centre = _uniform(2 * n, -1, 1, gen).view(n, 2) * (1.0 - side).unsqueeze(1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    scale = side / zoom  # (n,) input span per output span
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos * flip * scale
    theta[:, 0, 1] = -sin * scale
    theta[:, 1, 0] = sin * flip * scale
    theta[:, 1, 1] = cos * scale
    theta[:, :, 2] = shift + centre
    return theta


def _gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Normalised 1D Gaussian kernels (n, 2*radius+1); sigma 0 gives a delta (no blur)."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)  # (k,)
    s = sigma.clamp(min=1e-3).unsqueeze(1)  # (n, 1)
    k = torch.exp(-0.5 * (x / s) ** 2)
    return k / k.sum(dim=1, keepdim=True)


class BatchAugment(nn.Module):
    """Vectorised geometric + photometric augmentation of a whole batch on its device.

    Per-sample random parameters are drawn on the CPU from a seeded generator (a few numbers per
    sample), so runs are reproducible on CPU and GPU alike; noise is drawn on the batch's device
    from a generator seeded by the CPU one. In ``eval()`` mode, or with ``enabled=False``, the
    batch passes through untouched.

    Args:
        cfg: The augmentation settings.
        seed: Seed of the parameter generator (``None``: a fresh random seed).
        windows: (centre, width) HU per input channel; needed by the HU-space randomisation
            (``hu_scale``, ``hu_offset``, ``noise_hu``), which is skipped without it.
    """

    def __init__(
        self,
        cfg: AugmentConfig,
        seed: int | None = None,
        windows: Sequence[tuple[float, float]] | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.windows = list(windows) if windows is not None else None
        self.gen = torch.Generator()
        self.gen.manual_seed(seed if seed is not None else int(torch.seed() % (2**63)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Augment windowed images (B, C, H, W): float in [0, 1] or uint8 -> float32 in [0, 1]."""
        x = to_unit_float(x)
        if not self.training or not self.cfg.enabled or x.shape[0] == 0:
            return x
        n, cfg = x.shape[0], self.cfg
        theta = random_affine_matrices(cfg, n, self.gen)  # (B, 2, 3)
        if cfg.tilt_p > 0:
            theta = randomize.compose_tilt(
                theta, randomize.tilt_matrices(n, cfg.tilt_p, cfg.tilt_deg, self.gen)
            )
        theta = theta.to(x.device)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
        if cfg.elastic_p > 0:
            grid = grid + randomize.elastic_offsets(
                n, cfg.elastic_p, cfg.elastic_strength, (x.shape[2], x.shape[3]), self.gen
            ).to(x.device)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        x = self._blur(x)
        x = self._randomize(x)
        do_contrast = _chance(n, cfg.contrast_p, self.gen)
        amount = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, self.gen)
        factor = torch.where(do_contrast, amount, 1.0)
        mean = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        x = (x - mean) * factor.to(x.device).view(n, 1, 1, 1) + mean
        if cfg.noise_std > 0:
            sigma = _uniform(n, 0.0, cfg.noise_std, self.gen).to(x.device).view(n, 1, 1, 1)
            dev_gen = torch.Generator(device=x.device)
            dev_gen.manual_seed(int(torch.randint(0, 2**62, (1,), generator=self.gen)))
            x = x + sigma * torch.randn(x.shape, generator=dev_gen, device=x.device)
        return x.clamp_(0.0, 1.0)

    def _randomize(self, x: torch.Tensor) -> torch.Tensor:
        """Domain randomisation (:mod:`ich.data.randomize`): resolution, HU calibration, noise."""
        cfg = self.cfg
        if cfg.lowres_p > 0:
            x = randomize.low_resolution(x, cfg.lowres_p, cfg.lowres_factor, self.gen)
        if self.windows is None:
            return x
        if cfg.hu_scale > 0 or cfg.hu_offset > 0:
            x = randomize.hu_jitter(x, self.windows, cfg.hu_scale, cfg.hu_offset, self.gen)
        if cfg.dots_p > 0:  # before the noise: a real calcification is as noisy as the rest
            x = randomize.calcified_dots(x, self.windows, cfg.dots_p, self.gen)
        if cfg.noise_hu[1] > 0:
            x = randomize.correlated_noise(x, self.windows, cfg.noise_hu, cfg.noise_grain, self.gen)
        return x

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian blur with a per-sample σ, on the chosen samples only."""
        n, c, h, w = x.shape
        chosen = torch.nonzero(_chance(n, self.cfg.blur_p, self.gen)).flatten()  # (m,)
        sigma = _uniform(len(chosen), *self.cfg.blur_sigma, self.gen)  # (m,)
        if len(chosen) == 0:
            return x
        m = len(chosen)
        radius = max(1, math.ceil(3 * self.cfg.blur_sigma[1]))
        k = _gaussian_kernels(sigma, radius).to(x.device).repeat_interleave(c, dim=0)  # (m*c, k)
        sel = chosen.to(x.device)
        flat = x[sel].reshape(m * c, h, w)
        flat = _blur_axis(flat, k, radius, axis=1)
        flat = _blur_axis(flat, k, radius, axis=2)
        x = x.clone()
        x[sel] = flat.view(m, c, h, w)
        return x


def _blur_axis(img: torch.Tensor, kernels: torch.Tensor, radius: int, axis: int) -> torch.Tensor:
    """1D blur of (N, H, W) along ``axis`` (1 or 2) with one kernel (N, taps) per image.

    A weighted sum of shifted copies of the reflect-padded image: faster than a depthwise conv
    with per-image kernels on the CPU, and as fast on a GPU.
    """
    n, h, w = img.shape
    pad = (0, 0, radius, radius) if axis == 1 else (radius, radius, 0, 0)
    padded = F.pad(img.unsqueeze(1), pad, mode="reflect").squeeze(1)  # (N, H(+2r), W(+2r))
    out = torch.zeros_like(img)
    for t in range(2 * radius + 1):
        weight = kernels[:, t].view(n, 1, 1)
        out += weight * (padded[:, t : t + h, :] if axis == 1 else padded[:, :, t : t + w])
    return out


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 windowed images (0..255) -> float32 in [0, 1]; float input -> float32 as is."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


def prepare_batch(
    x: torch.Tensor, device: torch.device | str, augment: BatchAugment | None = None
) -> torch.Tensor:
    """Loader batch -> model input: to the device (uint8 if so: 4x less to copy), to float32
    in [0, 1], then the batch augmentation when training (None at evaluation).

    Args:
        x: (B, C, S, S) from :class:`ich.data.datasets.SliceDataset` (float32 or uint8).
        device: The training device.
        augment: From :func:`make_batch_augment`; it is skipped in ``eval()`` mode.
    """
    x = x.to(device, non_blocking=True)
    return augment(x) if augment is not None else to_unit_float(x)


def make_batch_augment(
    cfg: AugmentConfig | None,
    seed: int | None = None,
    windows: Sequence[tuple[float, float]] | None = None,
) -> BatchAugment | None:
    """The training loop's batch step for ``cfg``, or None when nothing is done per batch.

    ``windows``: (centre, width) HU per channel, for the HU-space domain randomisation.
    """
    if cfg is None or not cfg.enabled or cfg.mode != "batch":
        return None
    return BatchAugment(cfg, seed=seed, windows=windows)


class RandomContrast(nn.Module):
    """Scale each channel around its mean by 1 ± ``amount`` with probability ``p`` (C, H, W)."""

    def __init__(self, amount: float, p: float) -> None:
        super().__init__()
        self.amount, self.p = amount, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to one (C, H, W) image with values in [0, 1]."""
        if float(torch.rand(())) >= self.p:
            return x
        factor = 1.0 + self.amount * (2.0 * float(torch.rand(())) - 1.0)
        mean = x.mean(dim=(-2, -1), keepdim=True)
        return ((x - mean) * factor + mean).clamp(0.0, 1.0)


def build_sample_transform(cfg: AugmentConfig, size: int) -> v2.Compose:
    """The same augmentation as a per-sample ``torchvision.transforms.v2`` pipeline.

    Used when ``cfg.mode == "sample"`` and as the benchmark's naive baseline. Works on (C, H, W)
    float tensors with any number of channels; draws from torch's global RNG (seeded per loader
    worker by the DataLoader).
    """
    ops: list[nn.Module] = [v2.RandomHorizontalFlip(cfg.hflip_p)]
    ops.append(v2.RandomApply([v2.RandomAffine(
        degrees=cfg.rotate_deg, translate=(cfg.shift_frac, cfg.shift_frac), scale=cfg.scale,
        interpolation=v2.InterpolationMode.BILINEAR,
    )], p=cfg.affine_p))
    ops.append(v2.RandomApply([v2.RandomResizedCrop(
        size, scale=cfg.crop_scale, ratio=(1.0, 1.0), antialias=True,
    )], p=cfg.crop_p))
    radius = max(1, math.ceil(3 * cfg.blur_sigma[1]))
    blur = v2.GaussianBlur(2 * radius + 1, sigma=cfg.blur_sigma)
    ops.append(v2.RandomApply([blur], p=cfg.blur_p))
    ops.append(RandomContrast(cfg.contrast, cfg.contrast_p))
    if cfg.noise_std > 0:
        ops.append(v2.GaussianNoise(mean=0.0, sigma=cfg.noise_std, clip=True))
    return v2.Compose(ops)
