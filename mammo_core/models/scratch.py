"""CNNs trained from scratch (study Figs. 2 and 10).

``v1``: Conv32-pool-Conv32-pool-Conv64-pool-Conv64-pool-Conv128 (3x3, ReLU, 'valid' padding,
2x2 max-pool, none after the last conv), Flatten, Dense(hidden, ReLU), Dense(n, softmax):
343,842 trainable parameters with 2 classes and hidden=64.
``v2``: v1 + Conv128 after the fifth conv, Flatten, Dense(hidden), Dropout(0.2), Dense(n):
360,354 trainable parameters with 2 classes.
``v1`` with ``dropout`` > 0: Dropout(dropout) after Dense(hidden), the first Task 2.2 model
of the study (Fig. 2 + dropout, hidden 256); ``dropout=0`` (v1's default) adds no layer.
``output_activation="sigmoid"`` (two classes): two sigmoid units (``sigmoid_logits``,
``log_sigmoid``), normalised to sum 1 by ``predictions`` (:mod:`mammo_core.models.output`).
Layer names are fixed (``conv1``..``conv6``, ``pool1``..``pool4``, ``flatten``,
``dense_hidden``, ``dropout``, ``predictions``) so Grad-CAM layer names stay stable.
"""
from __future__ import annotations

from mammo_core.contract import INPUT_SHAPE
from mammo_core.errors import MammoError
from mammo_core.models.output import output_layer


def build_scratch(version: str, n_classes: int, hidden: int = 64, dropout: float | None = None,
                  output_activation: str = "softmax"):
    import keras
    from keras import layers

    if version not in ("v1", "v2"):
        raise MammoError(f"unknown scratch version {version!r} (v1 or v2)")
    inp = keras.Input(shape=INPUT_SHAPE, name="patch")
    x = inp
    filters = [32, 32, 64, 64, 128] + ([128] if version == "v2" else [])
    for i, f in enumerate(filters, start=1):
        x = layers.Conv2D(f, 3, padding="valid", activation="relu", name=f"conv{i}")(x)
        if i <= 4:
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(int(hidden), activation="relu", name="dense_hidden")(x)
    rate = (0.2 if version == "v2" else 0.0) if dropout is None else float(dropout)
    if not 0.0 <= rate < 1.0:
        raise MammoError(f"dropout must be in [0, 1), got {rate}")
    if version == "v2" or rate > 0:
        x = layers.Dropout(rate, name="dropout")(x)
    out = output_layer(x, n_classes, output_activation)
    return keras.Model(inp, out, name=f"scratch_{version}")
