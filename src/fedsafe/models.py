"""Model registry: id -> builder, the smallest image it takes, and what it is. Imports nothing
heavy (the config check reads it at parse time); the torch code is in fedsafe.nets.

To add a model: write `builder(channels, num_classes, image_size) -> nn.Module` in fedsafe.nets
(inputs in [0, 1], normalised inside; GroupNorm, not BatchNorm, for DP-SGD) and add an entry.
"""

from dataclasses import dataclass

from fedsafe.registry import Entry, Registry


@dataclass(frozen=True)
class ModelMeta:
    min_image_size: int  # smallest image side the layers accept (checked against each dataset)


MODELS = Registry("federation.model", "model", {
    "small_cnn": Entry("fedsafe.nets:small_cnn", meta=ModelMeta(8),
                       doc="3 conv blocks (2 strided), linear head; the default for 32x32"),
    "lenet": Entry("fedsafe.nets:lenet", meta=ModelMeta(8),
                   doc="the DLG/iDLG/MedPFL sigmoid LeNet"),
    "fedsafe_cnn": Entry("fedsafe.nets:fedsafe_cnn", meta=ModelMeta(8),
                         doc="Fed-Safe's 6-conv CNN (three 2x2 max-pools)"),
    "resnet18": Entry("fedsafe.nets:resnet18", meta=ModelMeta(16),
                      doc="ResNet-18 with GroupNorm, for larger images (e.g. 224x224)"),
})


def build_model(name: str, channels: int, num_classes: int, image_size: int):
    return MODELS.load(name)(channels, num_classes, image_size)


def build_model_for(name: str, manifest: dict):
    """Model `name` (fresh weights from torch's global seed) shaped for the prepared data that
    `manifest` (its manifest.json) describes: its channels, classes and image size."""
    return build_model(name, manifest["channels"], len(manifest["class_names"]),
                       manifest["image_size"])
