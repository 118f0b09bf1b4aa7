"""How a CT scanner sees the phantom: kernel-shaped noise, beam hardening, partial volume, motion.

Real head CT noise is not white: filtered back-projection shapes it (soft kernels give a blotchy
grain, sharp kernels a fine one), its level is 3-6 HU in the supratentorial brain and higher in
the posterior fossa, where the petrous bones starve the beam. Dense bone hardens the beam: dark
streaks between the petrous ridges (the Hounsfield bar), a bright rim under the inner table and
residual cupping. Obliquely cut bone at the vertex and skull base is volume-averaged into the
brain and looks like an extra-axial density. Values from DESIGN.md "Phantom v2".
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import scipy.fft

from ich.phantom.grid import StudyGrid, flat_view

#: (0018,0050) Slice Thickness (mm) choices and their probabilities: 5 mm typical, some thin.
THICKNESS_CHOICES = (5.0, 3.0, 2.5, 1.25, 0.625)
THICKNESS_P = (0.62, 0.08, 0.12, 0.1, 0.08)
_PSF = np.array([0.125, 0.75, 0.125], dtype=np.float32)


@dataclass(frozen=True)
class Acquisition:
    """Per-study scanner choices that change the image (not the headers' storage).

    Attributes:
        sigma: noise std (HU) in the supratentorial brain.
        cutoff: reconstruction kernel cut-off (cycles/mm): low = soft, blotchy noise.
        fossa_gain: noise factor in the posterior fossa (> 1).
        streak: depth (HU) of the Hounsfield bar between the petrous ridges.
        rim: brightening (HU) of the brain touching the inner table (bone partial volume and
            beam hardening); it fades inward as exp(-depth / rim_mm).
        rim_mm: decay length of that rim (mm). Measured on the real RSNA sample, the median
            HU under the inner table is 90-125 in the first mm, 55-85 in the second, 30-65 in
            the third: a band that reads like a thin extra-axial collection, and is normal.
        rim_phase: where around the head the rim is widest (it varies 30 % around it).
        cupping: residual cupping (HU darker in the centre than at the edge).
        thickness: slice thickness (mm); thin slices are noisier and less volume-averaged.
        motion: slice indices (fractions of the series) blurred by motion, empty if none.
    """

    sigma: float
    cutoff: float
    fossa_gain: float
    streak: float
    rim: float
    rim_mm: float
    cupping: float
    thickness: float
    motion: tuple[float, float] = (0.0, 0.0)
    rim_phase: float = 0.0


def sample_acquisition(rng: np.random.Generator) -> Acquisition:
    """Draw one study's acquisition (5 % of studies get a short burst of motion)."""
    thickness = float(rng.choice(THICKNESS_CHOICES, p=THICKNESS_P))
    sharp = rng.random() < 0.25
    motion = (0.0, 0.0)
    if rng.random() < 0.05:
        start = float(rng.uniform(0.0, 0.8))
        motion = (start, start + float(rng.uniform(0.05, 0.2)))
    return Acquisition(
        # 3-6 HU, most near 4 as in the real RSNA sample; thin slices are noisier.
        sigma=(3.0 + 3.0 * float(rng.beta(1.2, 3.5))) * min(1.4, (5.0 / thickness) ** 0.25),
        cutoff=float(rng.uniform(0.3, 0.45) if sharp else rng.uniform(0.14, 0.24)),
        fossa_gain=float(rng.uniform(1.3, 1.8)),
        streak=float(rng.uniform(8.0, 28.0)),
        rim=float(rng.uniform(60.0, 120.0)),
        rim_mm=float(rng.uniform(0.7, 1.8)),
        cupping=float(rng.uniform(0.0, 4.0)),
        thickness=thickness,
        motion=motion,
        rim_phase=float(rng.uniform(0.0, 2.0 * np.pi)),
    )


def noise_field(rng: np.random.Generator, size: int, spacing: float, acq: Acquisition
                ) -> np.ndarray:
    """A (size, size) noise field with a CT-like power spectrum and std ``acq.sigma``.

    Filtered back-projection gives a noise power spectrum rising with frequency (the ramp
    filter) until the kernel's apodisation cuts it: NPS(f) ~ f * exp(-(f / cutoff)^2). A faint
    low-frequency component (a fifth to a third of the power, structure of ~1 cm) stands for the
    parenchymal heterogeneity that real brain shows and a flat phantom lacks; the measured
    spectra of real RSNA brain patches fall steeply from low to high frequency
    (benchmarks/realism_report.py).
    """
    white = rng.standard_normal((size, size), dtype=np.float32)
    fy = np.fft.fftfreq(size, d=spacing).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(size, d=spacing).astype(np.float32)[None, :]
    f = np.hypot(fy, fx)
    ramp = f * np.exp(-((f / np.float32(acq.cutoff)) ** 2))
    texture = np.float32(0.3 * acq.cutoff) * np.exp(-((f / np.float32(0.06)) ** 2))
    amplitude = np.sqrt(ramp + texture)
    spectrum = scipy.fft.rfft2(white) * amplitude  # single precision: twice as fast
    out = scipy.fft.irfft2(spectrum, s=(size, size)).astype(np.float32, copy=False)
    out *= np.float32(acq.sigma / max(float(out.std()), 1e-6))
    return out


def beam_hardening(hu: np.ndarray, grid: StudyGrid, t: float, brain: np.ndarray,
                   depth_in: np.ndarray, acq: Acquisition) -> None:
    """Bright rim under the inner table, cupping, and the dark Hounsfield bar (in place)."""
    # The rim is a thin band: gather it once by flat index (hu, depth_in: C-contiguous).
    rim = np.flatnonzero(brain & (depth_in < 5.0 * acq.rim_mm))
    wave = 1.0 + 0.3 * np.sin(3.0 * grid.theta.ravel()[rim] + acq.rim_phase)
    flat_view(hu)[rim] += (np.float32(acq.rim) * wave
                            * np.exp(-depth_in.ravel()[rim] / np.float32(acq.rim_mm))
                            ).astype(np.float32)
    if acq.cupping:
        core = grid.core
        hu[core] -= np.float32(acq.cupping) * grid.centre_weight * brain[core]
    if 0.05 <= t <= 0.22:  # streaks between the petrous ridges, across the pons
        w = grid.window(0.0, 6.0, 40.0)
        u, v = grid.u[w], grid.v[w]
        strength = np.sin(np.pi * (t - 0.05) / 0.17)
        band = np.exp(-(((v - 6.0 - 0.08 * u) / 5.0) ** 2)) * (np.abs(u) < 36.0)
        fine = 1.0 + 0.6 * np.cos(v * 1.7 + 0.35 * u)  # a few thinner streaks inside the bar
        hu[w] -= (np.float32(acq.streak * strength) * band * fine * brain[w]).astype(np.float32)


def partial_volume(hu: np.ndarray, brain: np.ndarray, depth_in: np.ndarray, t: float,
                   oblique: float, acq: Acquisition) -> None:
    """Obliquely cut bone smeared into the brain at the vertex (in place).

    The thicker the slice and the more oblique the cut, the wider the band of intermediate
    density under the inner table that mimics a thin extra-axial collection.
    """
    width = min(acq.thickness * (oblique - 1.0), 12.0)
    if width < 0.5:
        return
    band = brain & (depth_in < width)
    frac = 1.0 - depth_in[band] / np.float32(width)
    hu[band] += np.float32(180.0) * frac**2


def point_spread(hu: np.ndarray) -> np.ndarray:
    """The scanner's point spread: a [1, 6, 1] / 8 blur along rows and columns.

    Real images have no hard edges: bone next to brain gives a pixel of intermediate density
    (partial volume), which is what a model sees at every interface. The kernel is kept narrow
    so a blood pixel beside the inner table never reads as bone (masks stay exact).
    """
    return cv2.sepFilter2D(hu, cv2.CV_32F, _PSF, _PSF, borderType=cv2.BORDER_REPLICATE)


def motion_blur(hu: np.ndarray, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Ghosting of a moving head: the slice averaged with a copy shifted by 1-3 mm."""
    step = max(1, round(float(rng.uniform(1.0, 3.0)) / spacing))
    axis = int(rng.integers(2))
    ghost = np.roll(hu, step, axis=axis)
    out = 0.65 * hu + 0.35 * ghost
    return out.astype(np.float32)
