"""Secondary Capture key images: the most suspicious slices with the heatmap, probabilities and a
burnt-in research notice, as a new series in the source study (highdicom ``SCImage``).

Why burnt in: a Secondary Capture travels to viewers that show pixels only, so the notice and the
numbers must be part of the image (Burned In Annotation = YES).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from ich.dicom.windowing import apply_window
from ich.labels import LABELS
from ich.net.sr import RESEARCH_NOTICE, with_type2

BRAIN_WINDOW = (40.0, 80.0)


#: Label probabilities per burnt-in text line (three fit a 512 px wide image).
PER_LINE = 3


def probability_lines(labels: Sequence[str], probabilities: np.ndarray) -> list[str]:
    """The burnt-in probability text: ``label p`` for each of the run's labels, three a line
    (RSNA names shortened to five letters as before; the run's own names in full)."""
    if len(labels) != len(probabilities):
        raise ValueError(f"{len(probabilities)} probabilities for {len(labels)} labels")
    items = [f"{label[:5] if label in LABELS else label} {float(p):.2f}"
             for label, p in zip(labels, probabilities, strict=True)]
    return ["  ".join(items[i:i + PER_LINE]) for i in range(0, len(items), PER_LINE)]


def render_key_image(hu: np.ndarray, heat: np.ndarray | None, probabilities: np.ndarray,
                     title: str, warning: str | None = None,
                     labels: Sequence[str] = LABELS) -> np.ndarray:
    """RGB uint8 (H', W', 3): brain window, heatmap in red/yellow, text at top and bottom.

    ``probabilities`` has one value per entry of ``labels`` (the run's labels; the six RSNA
    labels by default).

    Small images are enlarged (to at least 512 px wide) so the text stays readable. ``warning``
    (the out-of-domain note) is burnt in, in red, above the probabilities: a viewer that shows
    only pixels must still tell the reader the numbers are unreliable.
    """
    gray = (apply_window(hu, *BRAIN_WINDOW) * 255).astype(np.float32)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    if heat is not None:
        h = np.clip(np.asarray(heat, np.float32), 0, 1)[..., None]
        colour = np.concatenate([np.ones_like(h), h, np.zeros_like(h)], axis=2) * 255
        alpha = 0.45 * h
        rgb = rgb * (1 - alpha) + colour * alpha
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    if img.width < 512:
        scale = 512 / img.width
        img = img.resize((512, round(img.height * scale)), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    size = max(12, img.width // 40)
    font = ImageFont.load_default(size=size)
    lines_top = [RESEARCH_NOTICE, title]
    lines_bottom = probability_lines(labels, probabilities)
    y = 4
    for text in lines_top:
        draw.text((6, y), text, fill=(255, 255, 0), font=font, stroke_width=2,
                  stroke_fill=(0, 0, 0))
        y += size + 4
    if warning:
        lines_bottom.insert(0, warning)
    y = img.height - len(lines_bottom) * (size + 4) - 4
    for n, text in enumerate(lines_bottom):
        ink = (255, 64, 64) if warning and n == 0 else (255, 255, 255)
        draw.text((6, y), text, fill=ink, font=font, stroke_width=2, stroke_fill=(0, 0, 0))
        y += size + 4
    return np.asarray(img, dtype=np.uint8)


def build_sc(source: Dataset, rgb: np.ndarray, series_instance_uid: str,
             instance_number: int, comment: str | None = None) -> hd.sc.SCImage:
    """A Secondary Capture of ``rgb`` in the study of ``source`` (patient/study copied).

    ``comment`` (e.g. the out-of-domain warning) also goes into (0020,4000) Image Comments, so
    software that reads headers sees what the pixels say.
    """
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=with_type2(source), pixel_array=rgb, photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT", series_instance_uid=series_instance_uid,
        series_number=9902, sop_instance_uid=generate_uid(), instance_number=instance_number,
        manufacturer="ich (open source)", patient_orientation=("L", "P"),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    sc.SeriesDescription = "ich key images (research use only)"
    sc.BurnedInAnnotation = "YES"
    sc.Laterality = ""  # (0020,0060) Type 2C in General Series; unknown for a key image
    sc.SpecificCharacterSet = "ISO_IR 192"
    if comment:
        sc.ImageComments = comment[:10240]  # LT
    return sc
