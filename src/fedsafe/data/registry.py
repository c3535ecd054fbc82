"""Dataset registry: the one place to add a dataset.

To add one, write a `load(seed, **options) -> ImageSet` function (import heavy modules inside
it: this file must stay fast to import, the Snakefile reads it at parse time) and add an `Entry`
to `DATASETS` with its options (`fedsafe.options.Option`: default, type, range, choices). The
config check reads these declarations, so a typo or an out-of-range value stops the run before
any job, naming the key; the loader receives the options with defaults filled in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedsafe.options import Option
from fedsafe.registry import Entry, Registry

if TYPE_CHECKING:
    from .imageset import ImageSet


@dataclass(frozen=True)
class DatasetMeta:
    size_option: str = "image_size"  # the option that sets the side of the (square) images
    samples_option: str | None = None  # the option that bounds how many images there are
    # the image channels and the classes, where the options fix them before any data is read
    # (parse-time checks that need the model's shape, e.g. the audit's canary capacity)
    channels: int | None = None
    classes: int | str | None = None  # a count, or the option that sets it


_SIZE = Option(32, int, 8, 1024, doc="side of the square images, in pixels")
_SYNTHETIC = {
    "n_samples": Option(2000, int, 10, doc="images drawn (train and test)"),
    "image_size": _SIZE,
    "n_sites": Option(4, int, 1, doc="simulated hospitals or scanners"),
    "test_fraction": Option(0.2, float, 0.0, 1.0, low_open=True, high_open=True,
                            doc="share of the images in the test split"),
    "label_noise": Option(0.0, float, 0.0, 1.0, doc="share of labels flipped"),
}
_MAX = Option(None, int, 1, optional=True, doc="cap on each split (a seeded random subset)")

DATASETS = Registry("datasets.<id>.source", "dataset", {
    "synthetic_pathology": Entry(
        "fedsafe.data.synthetic:synthetic_pathology",
        {**_SYNTHETIC, "n_classes": Option(4, int, 2, 4, doc="first n of the four tissue classes")},
        doc="Synthetic H&E-like RGB tissue tiles (normal/tumour/stroma/lymphocytes) from several "
            "simulated hospitals; no download.",
        meta=DatasetMeta(samples_option="n_samples", channels=3, classes="n_classes"),
    ),
    "synthetic_brain_mri": Entry(
        "fedsafe.data.synthetic:synthetic_brain_mri", _SYNTHETIC,
        doc="Synthetic grey brain MRI slices (glioma/meningioma/no_tumour) from several simulated "
            "scanners; no download.",
        meta=DatasetMeta(samples_option="n_samples", channels=1, classes=3),
    ),
    "medmnist": Entry(
        "fedsafe.data.loaders:load_medmnist",
        {"flag": Option(None, str, optional=True, doc="MedMNIST set, e.g. pathmnist"),
         "npz_path": Option(None, str, optional=True, doc="a downloaded .npz file (offline)"),
         "size": Option(28, int, 8, 1024, doc="image side; files exist for 28, 64, 128, 224"),
         "root": Option("~/.medmnist", str, doc="download folder"),
         "max_samples": _MAX},
        doc="A MedMNIST 2D multi-class set (option flag, e.g. pathmnist, bloodmnist; npz_path to "
            "read offline; size).",
        meta=DatasetMeta(size_option="size", samples_option="max_samples"),
    ),
    "image_folder": Entry(
        "fedsafe.data.loaders:load_image_folder",
        {"root": Option(None, str, optional=True, doc="folder with Training/ and Testing/"),
         "image_size": Option(64, int, 8, 1024, doc="side of the resized images, in pixels"),
         "grayscale": Option(True, bool, doc="read as one channel"),
         "max_samples": _MAX,
         "classes": Option(None, str, many=True, optional=True,
                           doc="class folders to use, in this order (default: all, sorted)")},
        doc="Images in <root>/{Training,Testing}/<class>/ (Kaggle brain-tumour MRI layout); "
            "options root, image_size, grayscale.",
        meta=DatasetMeta(samples_option="max_samples"),
    ),
})


def load_dataset(dataset_id: str, options: dict | None, seed: int) -> ImageSet:
    """Dataset `dataset_id` drawn or read with `options` (checked; defaults filled in)."""
    options = dict(options or {})
    DATASETS.check_options(dataset_id, options, f"dataset '{dataset_id}' options")
    return DATASETS.load(dataset_id)(seed=seed, **DATASETS.resolve(dataset_id, options))
