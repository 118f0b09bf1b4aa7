"""Evaluation: the RSNA metric and friends (pure numpy), reports and plots."""
