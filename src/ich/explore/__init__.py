"""Exploration of a DICOM folder: the HTML report to read before training on new data."""

from ich.explore.core import explore_folder
from ich.explore.result import ExploreSummary

__all__ = ["ExploreSummary", "explore_folder"]
