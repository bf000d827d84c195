"""One registry: model name -> builder and metadata (keras-hub ``vgg_presets`` style).

Every model takes ``(N, 150, 150, 1)`` float32 in [0, 1], does its own normalisation inside the
graph, outputs float32 probabilities over the task's classes that sum to 1 (a softmax, or for
two classes with ``output_activation="sigmoid"`` two sigmoid units normalised:
:mod:`mammo_core.models.output`), is functional and *flat* (backbone
layers live in the same graph, so Grad-CAM can reach them), has no ``Lambda`` layers and saves /
loads as ``.keras`` with ``safe_mode=True``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mammo_core.contract import INPUT_SHAPE
from mammo_core.errors import MammoError
from mammo_core.models.scratch import build_scratch
from mammo_core.models.transfer import BACKBONES, build_transfer, check_backbone, pooled_gradcam_layer


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry.

    ``builder(n_classes, **options) -> keras.Model``; ``gradcam_layer(**options) -> str`` names
    the default Grad-CAM layer (the last convolutional layer); ``options`` lists the accepted
    keyword options with their defaults.
    """

    name: str
    builder: Callable[..., Any]
    description: str
    gradcam_layer: Callable[..., str]
    options: Mapping[str, Any] = field(default_factory=dict)
    study_figure: str = ""

    def default_gradcam_layer(self, **options: Any) -> str:
        return self.gradcam_layer(**{**self.options, **options})


def _scratch(version: str):
    def build(n_classes: int, **options):
        return build_scratch(version, n_classes, **options)

    return build


def _transfer(n_classes: int, **options):
    return build_transfer(n_classes, **options)


def _transfer_gradcam(backbone: str = "vgg16", head: str = "flatten", pool_layers: str = "", **_: Any) -> str:
    if head == "pooled":
        return pooled_gradcam_layer(backbone, pool_layers)
    return BACKBONES[check_backbone(backbone)].gradcam_layer


REGISTRY: Mapping[str, ModelSpec] = MappingProxyType(
    {
        "scratch_v1": ModelSpec(
            "scratch_v1",
            _scratch("v1"),
            "CNN from scratch (study Fig. 2): 5 conv (32-32-64-64-128) + Dense(hidden) + softmax",
            lambda **_: "conv5",
            {"hidden": 64, "dropout": 0.0, "output_activation": "softmax"},
            "Fig. 2",
        ),
        "scratch_v2": ModelSpec(
            "scratch_v2",
            _scratch("v2"),
            "CNN from scratch (study Fig. 10): v1 + a sixth conv (128), Dense(hidden), "
            "Dropout(0.2), softmax",
            lambda **_: "conv6",
            {"hidden": 64, "dropout": 0.2, "output_activation": "softmax"},
            "Fig. 10",
        ),
        "transfer": ModelSpec(
            "transfer",
            _transfer,
            "ImageNet backbone (vgg16 | vgg19 | resnet50) built flat, caffe preprocessing in "
            "the graph, Flatten + Dense(256) + softmax; mode fe (frozen base) or ft (last "
            "block trainable); head pooled: global avg/max pooling of chosen backbone layers, "
            "concatenated (optionally squashed: squash_divisor), one Dense softmax (a frozen-feature "
            "logistic regression folded in)",
            _transfer_gradcam,
            {"backbone": "vgg16", "mode": "fe", "weights": "none", "hidden": 256, "head": "flatten",
             "pool_layers": "block3_pool,block4_pool,block5_pool", "pooling": "avg",
             "output_activation": "softmax", "squash_divisor": None},
            "Tables 3-4",
        ),
    }
)


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise MammoError(f"unknown model {name!r}; choose one of {', '.join(REGISTRY)}") from None


def build_model(name: str, n_classes: int, **options: Any):
    """Build registry model ``name`` with ``n_classes`` softmax outputs (options per entry)."""
    spec = get_spec(name)
    unknown = set(options) - set(spec.options)
    if unknown:
        raise MammoError(
            f"model {name!r} takes options {', '.join(spec.options) or '(none)'}; "
            f"got {', '.join(sorted(unknown))}"
        )
    if int(n_classes) < 2:
        raise MammoError(f"n_classes must be at least 2, got {n_classes}")
    return spec.builder(int(n_classes), **{**spec.options, **options})


def gradcam_layer(name: str, **options: Any) -> str:
    """The default Grad-CAM layer name of model ``name`` built with ``options``."""
    return get_spec(name).default_gradcam_layer(**options)


__all__ = ["INPUT_SHAPE", "REGISTRY", "ModelSpec", "build_model", "get_spec", "gradcam_layer"]
