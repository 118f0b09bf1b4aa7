"""Synthetic head-CT cohort ("phantom") in the Kaggle RSNA 2019 layout, with exact masks.

The data are synthetic: models trained on them are for demonstration and testing only.
"""

from ich.phantom.cohort import CohortSummary, generate_cohort

__all__ = ["CohortSummary", "generate_cohort"]
