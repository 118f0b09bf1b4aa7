"""Domain randomisation: make a model trained on phantoms meet the variety of real scanners.

A model trained on one synthetic look learns that look: its noise texture, its exact HU
calibration, its sharpness and its geometry. Real scanners differ in each (DESIGN.md "Phantom
v2": noise sigma 3-6 HU, soft or sharp kernels, gantry tilt up to ~25 deg, slice and pixel
spacing). Randomising them in training makes those differences nuisance variables the model
must ignore. Each function here is pure: a batch of windowed images (B, C, H, W) in [0, 1]
and an explicit ``torch.Generator`` (CPU) in, a new batch out; per-sample parameters are drawn
on the CPU so runs repeat exactly on CPU and GPU.

Changes in HU (calibration, noise) are made in HU and mapped through each channel's window:
the same noise field is brighter in the narrow brain window than in the wide soft-tissue one,
as on a real scan. ``windows`` gives (centre, width) in HU per channel, in channel order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _chance(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


def _window_arrays(
    windows: Sequence[tuple[float, float]], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower HU bound and width per channel, shaped (1, C, 1, 1) on ``x``'s device."""
    if len(windows) != x.shape[1]:
        raise ValueError(f"{len(windows)} windows for {x.shape[1]} channels")
    w = torch.tensor([[c, wd] for c, wd in windows], dtype=torch.float32, device=x.device)
    lo = (w[:, 0] - w[:, 1] / 2).view(1, -1, 1, 1)
    return lo, w[:, 1].view(1, -1, 1, 1)


def hu_jitter(
    x: torch.Tensor,
    windows: Sequence[tuple[float, float]],
    scale: float,
    offset_hu: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """Per-sample HU calibration change ``hu' = hu * s + d`` seen through the windows.

    Scanners differ in water calibration (offset of a few HU) and effective energy (a slightly
    different slope), so a blood clot of 60 HU on one may read 55 on another. The same (s, d)
    applies to every channel of a sample. Values the window had clipped stay clipped.

    Args:
        x: (B, C, H, W) windowed images in [0, 1].
        windows: (centre, width) in HU per channel.
        scale: s ~ U(1 - scale, 1 + scale).
        offset_hu: d ~ U(-offset_hu, +offset_hu) HU.
        gen: Parameter generator (CPU).
    """
    n = x.shape[0]
    s = _uniform(n, 1 - scale, 1 + scale, gen).to(x.device).view(n, 1, 1, 1)
    d = _uniform(n, -offset_hu, offset_hu, gen).to(x.device).view(n, 1, 1, 1)
    lo, width = _window_arrays(windows, x)
    hu = lo + x * width
    return ((hu * s + d - lo) / width).clamp(0.0, 1.0)


def _gaussian_blur(img: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur (N, 1, H, W) with a per-image Gaussian sigma (N,) in pixels (FFT, periodic)."""
    n, _, h, w = img.shape
    fy = torch.fft.fftfreq(h, device=img.device).view(1, 1, h, 1)
    fx = torch.fft.rfftfreq(w, device=img.device).view(1, 1, 1, w // 2 + 1)
    s = sigma.to(img.device).view(n, 1, 1, 1)
    gain = torch.exp(-2 * (math.pi**2) * (s**2) * (fy**2 + fx**2))  # Gaussian's transfer fn
    return torch.fft.irfft2(torch.fft.rfft2(img) * gain, s=(h, w))


def correlated_noise(
    x: torch.Tensor,
    windows: Sequence[tuple[float, float]],
    sigma_hu: tuple[float, float],
    grain: tuple[float, float],
    gen: torch.Generator,
) -> torch.Tensor:
    """Add spatially correlated Gaussian noise of a random level and texture, in HU.

    CT noise is not white: a soft reconstruction kernel gives blotchy noise, a sharp one fine
    grain. White noise blurred by a Gaussian of ``grain`` pixels, rescaled to ``sigma_hu``,
    imitates both. One field per sample, shared by its channels (the same HU noise seen through
    each window).

    Args:
        x: (B, C, H, W) windowed images in [0, 1].
        windows: (centre, width) in HU per channel.
        sigma_hu: Range of the noise standard deviation in HU.
        grain: Range of the correlation length (Gaussian sigma, pixels); 0 = white.
        gen: Parameter generator (CPU); the field itself is drawn from a generator seeded by it.
    """
    n, _, h, w = x.shape
    sigma = _uniform(n, *sigma_hu, gen)
    length = _uniform(n, *grain, gen)
    dev_gen = torch.Generator(device=x.device)
    dev_gen.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
    white = torch.randn((n, 1, h, w), generator=dev_gen, device=x.device)
    field = torch.where(
        (length > 0.05).to(x.device).view(n, 1, 1, 1), _gaussian_blur(white, length), white
    )
    field = field / field.std(dim=(2, 3), keepdim=True).clamp(min=1e-6)
    _, width = _window_arrays(windows, x)
    return (x + field * sigma.to(x.device).view(n, 1, 1, 1) / width).clamp(0.0, 1.0)


def low_resolution(
    x: torch.Tensor, p: float, factor: tuple[float, float], gen: torch.Generator
) -> torch.Tensor:
    """Down-sample by a random factor and back up, on a chosen fraction ``p`` of the samples.

    Thick slices, large pixels and soft kernels all remove fine detail; a model must not depend
    on detail that the next scanner does not resolve.
    """
    n, _, h, w = x.shape
    chosen = torch.nonzero(_chance(n, p, gen)).flatten().tolist()
    factors = _uniform(n, *factor, gen).tolist()
    if not chosen:
        return x
    out = x.clone()
    for i in chosen:  # a few per batch; sizes differ per sample
        small = (max(4, round(h / factors[i])), max(4, round(w / factors[i])))
        down = F.interpolate(x[i : i + 1], size=small, mode="bilinear", antialias=True,
                             align_corners=False)
        out[i : i + 1] = F.interpolate(down, size=(h, w), mode="bilinear", align_corners=False)
    return out


def calcified_dots(
    x: torch.Tensor,
    windows: Sequence[tuple[float, float]],
    p: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """Add one to three small calcium-dense dots inside the head (brain or CSF) of a fraction
    ``p`` of the samples, labels unchanged.

    Real heads hold calcifications that no phantom places everywhere they occur (choroid
    plexus, pineal, habenula, basal ganglia, dura, vessels, old granulomas), and a thick slice
    that grazes one shows a rim as dense as blood around a core no blood reaches (150-500 HU).
    A model that has met such dots anywhere in the head learns the core, not the position; one
    that met them only where its phantom puts them calls the next one hemorrhage (a choroid
    plexus calcification in the atrium reads as ventricular blood, a pineal one beside the
    cisterns as subarachnoid blood).

    Args:
        x: (B, C, H, W) windowed images in [0, 1].
        windows: (centre, width) in HU per channel; the widest reads the HU under a dot.
        p: Probability per sample.
        gen: Parameter generator (CPU).
    """
    n, _, h, w = x.shape
    chosen = torch.nonzero(_chance(n, p, gen)).flatten().tolist()
    counts = torch.randint(1, 4, (n,), generator=gen).tolist()
    if not chosen:
        return x
    low, width = _window_arrays(windows, x)
    ref = int(torch.argmax(width.flatten()))
    yy = torch.arange(h, device=x.device, dtype=torch.float32).view(h, 1)
    xx = torch.arange(w, device=x.device, dtype=torch.float32).view(1, w)
    out = x.clone()
    for i in chosen:  # a few per batch
        hu = low[0, ref, 0, 0] + x[i, ref] * width[0, ref, 0, 0]  # (H, W)
        tissue = torch.nonzero(((hu > -5.0) & (hu < 50.0)).flatten().cpu()).flatten()
        if tissue.numel() == 0:
            continue
        added = torch.zeros_like(hu)
        for _ in range(counts[i]):
            k = int(tissue[int(torch.randint(tissue.numel(), (1,), generator=gen))])
            radius = float(_uniform(1, 0.7, 1.8, gen))  # pixels: ~1-3 mm at 128 px
            core = float(_uniform(1, 150.0, 500.0, gen))
            r2 = ((yy - k // w) ** 2 + (xx - k % w) ** 2) / radius**2
            cover = torch.exp(-(r2**2))  # a soft disc: partial volume at its edge
            added = torch.maximum(added, cover * (core - hu))
        out[i] = (x[i] + added / width[0, :, :, :]).clamp(0.0, 1.0)
    return out


def tilt_matrices(n: int, p: float, max_deg: float, gen: torch.Generator) -> torch.Tensor:
    """(n, 2, 2) in-plane matrices that imitate gantry tilt: an antero-posterior stretch
    1 / cos(t) and a small shear, identity for samples not chosen.

    A slice cut at tilt t through the head shows it elongated front-to-back by 1 / cos(t) and
    its structures sheared as the plane passes through different heights.
    """
    tilt = torch.where(_chance(n, p, gen), _uniform(n, -1, 1, gen) * math.radians(max_deg), 0.0)
    shear = 0.5 * torch.tan(tilt) * _uniform(n, -1, 1, gen)
    m = torch.zeros(n, 2, 2)
    m[:, 0, 0] = 1.0
    m[:, 0, 1] = shear
    m[:, 1, 1] = torch.cos(tilt)  # output->input: a stretched image samples less of the input
    return m


def compose_tilt(theta: torch.Tensor, tilt: torch.Tensor) -> torch.Tensor:
    """Apply ``tilt`` (n, 2, 2) before the affine ``theta`` (n, 2, 3): ``p_in = A @ T @ p``."""
    out = theta.clone()
    out[:, :, :2] = theta[:, :, :2] @ tilt
    return out


#: Control points per side of the elastic displacement field (:func:`elastic_offsets`).
ELASTIC_CELLS = 5


def elastic_offsets(
    n: int, p: float, strength: float, size: tuple[int, int], gen: torch.Generator
) -> torch.Tensor:
    """Smooth random displacements (n, H, W, 2) to add to an ``affine_grid``, zero for samples
    not chosen (probability ``p``).

    Anatomy differs between people in shape, not only in size: ventricles, sulci, the skull's
    outline. A phantom draws a few parametric shapes; bending them a little keeps a model from
    learning those exact outlines. Each sample gets an ``ELASTIC_CELLS`` x ``ELASTIC_CELLS``
    grid of control-point offsets (normal, sigma ``strength`` in ``grid_sample``'s [-1, 1]
    coordinates, i.e. a fraction of half the side) interpolated bicubically over the image, so
    the warp bends structures over a fifth of the head without tearing them at a few per cent.
    """
    chosen = _chance(n, p, gen).float().view(n, 1, 1, 1)
    coarse = torch.randn(n, 2, ELASTIC_CELLS, ELASTIC_CELLS, generator=gen) * strength * chosen
    field = F.interpolate(coarse, size=size, mode="bicubic", align_corners=True)
    return field.permute(0, 2, 3, 1)
