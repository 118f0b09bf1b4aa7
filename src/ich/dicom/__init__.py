"""DICOM at the edge: reading files (``io``), HU and windows (``windowing``), series order."""
