"""Models: the per-slice 2D CNN (stage 1) and the study-level sequence model (stage 2)."""

from ich.models.sequence import SequenceModel, reverse_padded
from ich.models.slice_cnn import SliceModel, build_slice_model, check_backbone

__all__ = ["SequenceModel", "SliceModel", "build_slice_model", "check_backbone", "reverse_padded"]
