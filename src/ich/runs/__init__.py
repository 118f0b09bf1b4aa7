"""Trained runs, neutral ground between training and serving: model files (weights +
ModelSpec), loading a run or a fold set, and embedding a batch of slices.

``ich.inference``, ``ich.explain``, ``ich.predict``, ``ich.web`` and ``ich.net`` stand on this
layer and never import ``ich.train`` (an import-linter contract in ``pyproject.toml``).
"""
