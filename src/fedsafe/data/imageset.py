"""The in-memory image dataset every loader returns."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ImageSet:
    """Train/test images as uint8 (N, C, H, W) with int64 labels.

    `site_train` holds the acquisition site (hospital/scanner) of each training
    sample, or -1 where the source has no site information.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    site_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    channels: int
    image_size: int

    def __post_init__(self) -> None:
        # Normalise dtypes once here so every consumer can rely on them.
        self.x_train = np.ascontiguousarray(self.x_train, dtype=np.uint8)
        self.x_test = np.ascontiguousarray(self.x_test, dtype=np.uint8)
        self.y_train = np.asarray(self.y_train, dtype=np.int64).reshape(-1)
        self.y_test = np.asarray(self.y_test, dtype=np.int64).reshape(-1)
        self.site_train = np.asarray(self.site_train, dtype=np.int64).reshape(-1)
        shape = (self.channels, self.image_size, self.image_size)
        for name, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.ndim != 4 or x.shape[1:] != shape:
                raise ValueError(f"{name} images have shape {x.shape}, expected (N, {shape[0]}, {shape[1]}, {shape[2]})")
            if len(x) != len(y):
                raise ValueError(f"{name}: {len(x)} images but {len(y)} labels")
        if len(self.site_train) != len(self.y_train):
            raise ValueError("site_train must have one entry per training sample")
