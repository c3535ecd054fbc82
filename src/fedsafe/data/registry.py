"""Dataset registry: the one place to add a dataset.

To add one, write a `load(options: dict, seed: int) -> ImageSet` function
(import heavy modules inside it, this file must stay fast to import) and add a
`DatasetSpec` to `DATASETS`. Unknown option names raise a clear error, so a
typo in a config never silently falls back to a default.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .imageset import ImageSet


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    load: Callable[[dict, int], "ImageSet"]


def _call(fn: Callable, dataset: str, options: dict, **fixed) -> "ImageSet":
    """Call `fn(**options, **fixed)` after checking the option names."""
    allowed = set(inspect.signature(fn).parameters) - set(fixed)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"dataset '{dataset}': unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    return fn(**options, **fixed)


def _synthetic_pathology(options: dict, seed: int) -> "ImageSet":
    from .synthetic import synthetic_pathology
    return _call(synthetic_pathology, "synthetic_pathology", options, seed=seed)


def _synthetic_brain_mri(options: dict, seed: int) -> "ImageSet":
    from .synthetic import synthetic_brain_mri
    return _call(synthetic_brain_mri, "synthetic_brain_mri", options, seed=seed)


def _medmnist(options: dict, seed: int) -> "ImageSet":
    from .loaders import load_medmnist
    return _call(load_medmnist, "medmnist", options, seed=seed)


def _image_folder(options: dict, seed: int) -> "ImageSet":
    from .loaders import load_image_folder
    return _call(load_image_folder, "image_folder", options, seed=seed)


DATASETS: dict[str, DatasetSpec] = {
    "synthetic_pathology": DatasetSpec(
        "synthetic_pathology",
        "Synthetic H&E-like RGB tissue tiles (normal/tumour/stroma/lymphocytes) from several simulated hospitals; no download.",
        _synthetic_pathology,
    ),
    "synthetic_brain_mri": DatasetSpec(
        "synthetic_brain_mri",
        "Synthetic grey brain MRI slices (glioma/meningioma/no_tumour) from several simulated scanners; no download.",
        _synthetic_brain_mri,
    ),
    "medmnist": DatasetSpec(
        "medmnist",
        "A MedMNIST 2D multi-class set (option flag, e.g. pathmnist, bloodmnist; npz_path to read offline; size).",
        _medmnist,
    ),
    "image_folder": DatasetSpec(
        "image_folder",
        "Images in <root>/{Training,Testing}/<class>/ (Kaggle brain-tumour MRI layout); options root, image_size, grayscale.",
        _image_folder,
    ),
}


def known_datasets() -> list[str]:
    return sorted(DATASETS)


def get_dataset(dataset_id: str) -> DatasetSpec:
    try:
        return DATASETS[dataset_id]
    except KeyError:
        raise KeyError(f"unknown dataset '{dataset_id}'; known: {known_datasets()}") from None


def load_dataset(dataset_id: str, options: dict | None, seed: int) -> "ImageSet":
    return get_dataset(dataset_id).load(dict(options or {}), seed)
