"""Exploration of a DICOM folder: the HTML report to read before training on new data."""

from ich.explore.core import ExploreSummary, explore_folder

__all__ = ["ExploreSummary", "explore_folder"]
