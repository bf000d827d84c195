"""Model registry and builders (scratch CNNs, transfer learning).

``build_model(name, n_classes, **options)``, ``REGISTRY``, ``gradcam_layer(name, **options)``.
Importing this package does not import TensorFlow/Keras; building a model does.
"""
from mammo_core.models.registry import (
    REGISTRY,
    ModelSpec,
    build_model,
    get_spec,
    gradcam_layer,
)

__all__ = ["REGISTRY", "ModelSpec", "build_model", "get_spec", "gradcam_layer"]
