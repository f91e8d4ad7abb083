"""Thin shims so ``python -m scripts.<tool>`` works from a checkout; the tools live in ``retrain.cli``.

Not installed: ``pip install .`` puts only the ``retrain`` package in site-packages.
"""
