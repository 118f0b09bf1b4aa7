"""Atomic, byte-deterministic file writing for the phantom cohort."""

from __future__ import annotations

import io
import zipfile

import numpy as np


def masks_npz_bytes(masks: dict[str, np.ndarray]) -> bytes:
    """A compressed ``.npz`` readable by ``np.load``, byte-identical for identical masks.

    ``np.savez_compressed`` stamps the current time into the zip entries; a fixed timestamp keeps
    the cohort deterministic down to the bytes.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(masks):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            array = io.BytesIO()
            np.lib.format.write_array(array, np.ascontiguousarray(masks[name], dtype=np.uint8))
            archive.writestr(info, array.getvalue())
    return buffer.getvalue()
