"""Model registry: id -> builder, the smallest image it takes, and what it is. Imports nothing
heavy (the config check reads it at parse time); the torch code is in fedsafe.nets.

To add a model: write `builder(channels, num_classes, image_size) -> nn.Module` in fedsafe.nets
(inputs in [0, 1], normalised inside; GroupNorm, not BatchNorm, for DP-SGD) and add an entry.
"""

from dataclasses import dataclass
from importlib import import_module


@dataclass(frozen=True)
class ModelSpec:
    impl: str  # "module:function"
    min_image_size: int  # smallest image side the layers accept (checked against each dataset)
    doc: str = ""


MODELS: dict[str, ModelSpec] = {
    "small_cnn": ModelSpec("fedsafe.nets:small_cnn", 8, "3 conv blocks (2 strided), linear head; "
                           "the default for 32x32"),
    "lenet": ModelSpec("fedsafe.nets:lenet", 8, "the DLG/iDLG/MedPFL sigmoid LeNet"),
    "fedsafe_cnn": ModelSpec("fedsafe.nets:fedsafe_cnn", 8, "Fed-Safe's 6-conv CNN (three 2x2 "
                             "max-pools)"),
    "resnet18": ModelSpec("fedsafe.nets:resnet18", 16, "ResNet-18 with GroupNorm, for larger "
                          "images (e.g. 224x224)"),
}


def known_models() -> list[str]:
    return sorted(MODELS)


def build_model(name: str, channels: int, num_classes: int, image_size: int):
    if name not in MODELS:
        raise ValueError(f"federation.model: unknown model {name!r}; known: {known_models()}")
    module, fn = MODELS[name].impl.split(":")
    return getattr(import_module(module), fn)(channels, num_classes, image_size)


def build_model_for(name: str, manifest: dict):
    """Model `name` (fresh weights from torch's global seed) shaped for the prepared data that
    `manifest` (its manifest.json) describes: its channels, classes and image size."""
    return build_model(name, manifest["channels"], len(manifest["class_names"]),
                       manifest["image_size"])
