"""Datasets, loaders and client partitioners for fedsafe.

Kept import-free on purpose: `fedsafe.data.registry` must import fast, so the
heavy modules (PIL, medmnist) are only imported by the loaders that need them.
"""
