"""Transfer learning on ImageNet backbones (VGG16, VGG19, ResNet50), built flat.

Graph: ``patch`` (N,150,150,1) in [0,1] -> ``grey_to_rgb`` (Concatenate of the grey patch
three times) -> ``caffe_preprocess`` (Rescaling: x * 255 - ImageNet mean in BGR order
[103.939, 116.779, 123.68]) -> the backbone's own layers (``block1_conv1`` ... or ``conv1_conv``
...) -> ``flatten`` -> ``dense_hidden`` (256, ReLU) -> ``predictions`` (softmax, float32; with
``output_activation="sigmoid"`` two sigmoid units ``sigmoid_logits`` whose outputs
``predictions`` normalises to sum 1, :mod:`mammo_core.models.output`).

``caffe_preprocess`` reproduces ``keras.applications.{vgg16,vgg19,resnet50}.preprocess_input``
(caffe mode: RGB->BGR then mean subtraction, no scaling to unit variance). The RGB->BGR flip is
a no-op here because the three channels are the same grey copy; the per-channel means are
applied in BGR order exactly as Keras does. Neither layer has weights, so parameter counts
equal the study's tables (VGG16 16,812,610 total / 2,097,922 trainable in fe with 2 classes).

The backbone is created with ``input_tensor=`` so its layers join this graph (not nested as
one layer: tf-keras-vis Grad-CAM cannot look inside a nested model). ImageNet weights are loaded
into a standalone backbone and copied layer by layer, by name.

Head ``pooled`` (the small-data member, ``head="pooled"``): instead of Flatten + Dense(hidden),
each layer named in ``pool_layers`` (e.g. ``block3_pool,block4_pool,block5_pool``) is globally
pooled (``pooling``: ``avg``, ``max`` or ``avgmax`` = both) by layers ``gap_<layer>`` /
``gmp_<layer>``, the pooled vectors are concatenated (``pooled_features``), optionally squashed
(``feature_scale``, a Rescaling by one fixed divisor per feature, then ``feature_squash``, a
built-in softsign Activation: ``f / (f + d)``; ``--feature-squash``) and one Dense softmax
(``predictions``) follows. The backbone is frozen at its initial (ImageNet) weights; the softmax
is a standardisation + L2 logistic regression fitted with scikit-learn on cached features and
folded into the Dense weights (:func:`fold_linear_head`), so the Keras model reproduces
scikit-learn's ``predict_proba``. The graph holds only the backbone layers the pooled layers
need (a VGG16 pooled at block 4 has no block 5).

Modes: ``fe`` freezes the whole backbone; ``ft`` leaves the last block trainable (``block5_*``
for VGG, ``conv5_*`` for ResNet50; ResNet's BatchNorm layers stay frozen in inference mode, the
usual fine-tuning practice, so their running statistics are kept).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mammo_core.contract import INPUT_SHAPE
from mammo_core.errors import MammoError
from mammo_core.models.output import PREDICTIONS, SIGMOID_LAYERS, output_layer

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
MODES = ("fe", "ft")


@dataclass(frozen=True)
class Backbone:
    name: str
    app: str  # attribute of keras.applications
    last_layer: str  # output layer of the base (input of the head)
    gradcam_layer: str  # last convolutional layer (feature map used by Grad-CAM)
    ft_prefix: str  # layers unfrozen in mode "ft"


BACKBONES = {
    "vgg16": Backbone("vgg16", "VGG16", "block5_pool", "block5_conv3", "block5_"),
    "vgg19": Backbone("vgg19", "VGG19", "block5_pool", "block5_conv4", "block5_"),
    "resnet50": Backbone("resnet50", "ResNet50", "conv5_block3_out", "conv5_block3_out", "conv5_"),
    # VGG16 cut after block 4 (mid-level features, 7.6 M base parameters instead of 14.7 M): a
    # smaller bundle; the same ImageNet weights file (block-5 weights are simply not used).
    "vgg16_block4": Backbone("vgg16_block4", "VGG16", "block4_pool", "block4_conv3", "block4_"),
}
HEAD_FIRST_LAYER = "flatten"
HEADS = ("flatten", "pooled")
POOLINGS = ("avg", "max", "avgmax")
POOLED_FEATURES = "pooled_features"
FEATURE_SCALE = "feature_scale"  # optional feature squash of the pooled head (Rescaling, then softsign)
FEATURE_SQUASH = "feature_squash"
DEFAULT_POOL_LAYERS = "block3_pool,block4_pool,block5_pool"


def parse_pool_layers(pool_layers) -> tuple[str, ...]:
    """``"block3_pool,block4_pool"`` (or a sequence) -> a tuple of layer names."""
    if isinstance(pool_layers, str):
        names = tuple(n.strip() for n in pool_layers.split(",") if n.strip())
    else:
        names = tuple(str(n) for n in pool_layers)
    if not names:
        raise MammoError("pool_layers names no layer")
    return names


def pooled_keys(pool_layers, pooling: str) -> list[str]:
    """Names of the pooled feature blocks in concatenation order (``gap_block3_pool`` ...)."""
    if pooling not in POOLINGS:
        raise MammoError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    keys = []
    for layer in parse_pool_layers(pool_layers):
        if pooling in ("avg", "avgmax"):
            keys.append(f"gap_{layer}")
        if pooling in ("max", "avgmax"):
            keys.append(f"gmp_{layer}")
    return keys


def is_head_layer(name: str) -> bool:
    return (name in (HEAD_FIRST_LAYER, "dense_hidden", *SIGMOID_LAYERS, PREDICTIONS, POOLED_FEATURES,
                     FEATURE_SCALE, FEATURE_SQUASH)
            or name.startswith(("gap_", "gmp_")))


def check_backbone(backbone: str) -> str:
    if backbone not in BACKBONES:
        raise MammoError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    return backbone


def _check_weights(weights) -> str | None:
    if weights is None or str(weights).lower() in ("none", ""):
        return None
    if str(weights) == "imagenet":
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise MammoError("weights file not found (give 'imagenet', 'none' or a .weights.h5 file)", path)
    if not path.name.endswith(".h5"):
        raise MammoError("weights file must be a Keras .weights.h5 file", path)
    return str(path)


def standalone_backbone(backbone: str, weights):
    """``keras.applications.<Backbone>(include_top=False)`` at 150x150x3 with ``weights``."""
    import keras

    bb = BACKBONES[check_backbone(backbone)]
    weights = _check_weights(weights)
    ctor = getattr(keras.applications, bb.app)
    try:  # a cut backbone loads the full network's weights file
        return ctor(include_top=False, weights=weights, input_shape=(*INPUT_SHAPE[:2], 3))
    except Exception as exc:  # download failure, wrong file, shape mismatch...
        where = weights if weights and weights != "imagenet" else None
        hint = " (offline? pass a local .weights.h5 file instead)" if weights == "imagenet" else ""
        msg = f"cannot load {bb.name} weights {weights!r}: {type(exc).__name__}: {exc}".splitlines()[0]
        raise MammoError(msg + hint, where) from exc


def copy_backbone_weights(src, dst, upto: str | None = None) -> int:
    """Copy the weights of every layer of ``src`` into the layer of the same name in ``dst``
    (only the layers up to and including ``upto`` when the flat model is a cut backbone).

    Returns the number of layers copied; raises when a weighted layer of ``src`` is missing.
    """
    n = 0
    names = [layer.name for layer in src.layers]
    stop = names.index(upto) + 1 if upto is not None else len(names)
    for layer in src.layers[:stop]:
        w = layer.get_weights()
        if not w:
            continue
        try:
            target = dst.get_layer(layer.name)
        except ValueError:
            raise MammoError(f"backbone layer {layer.name!r} not found in the flat model") from None
        target.set_weights(w)
        n += 1
    return n


def build_transfer(n_classes: int, backbone: str = "vgg16", mode: str = "fe", weights="none",
                   hidden: int = 256, head: str = "flatten", pool_layers: str = DEFAULT_POOL_LAYERS,
                   pooling: str = "avg", output_activation: str = "softmax", squash_divisor=None):
    """The flat transfer model (see module docstring). ``squash_divisor`` (pooled head only): one
    positive number per pooled feature; ``pooled_features`` is then followed by ``feature_scale``
    (Rescaling by ``1 / d``) and ``feature_squash`` (softsign), see
    :class:`mammo_core.training.pooled.SquashScaler`."""
    import keras
    from keras import layers

    bb = BACKBONES[check_backbone(backbone)]
    if mode not in MODES:
        raise MammoError(f"unknown mode {mode!r}; choose fe or ft")
    if head not in HEADS:
        raise MammoError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    weights = _check_weights(weights)
    if head == "pooled" and output_activation != "softmax":
        raise MammoError("the pooled head is a logistic regression folded into a softmax; "
                         "output_activation must be softmax")

    inp = keras.Input(shape=INPUT_SHAPE, name="patch")
    rgb = layers.Concatenate(axis=-1, name="grey_to_rgb")([inp, inp, inp])
    x = layers.Rescaling(scale=255.0, offset=[-m for m in CAFFE_MEAN_BGR], name="caffe_preprocess")(rgb)
    ctor = getattr(keras.applications, bb.app)
    base = ctor(include_top=False, weights=None, input_tensor=x)
    if head == "pooled":
        names = [layer.name for layer in base.layers]
        pools = []
        for key in pooled_keys(pool_layers, pooling):
            src = key[4:]
            if src not in names or names.index(src) > names.index(bb.last_layer):
                raise MammoError(f"pool layer {src!r} is not a layer of backbone {bb.name}")
            pool = layers.GlobalAveragePooling2D if key.startswith("gap_") else layers.GlobalMaxPooling2D
            pools.append(pool(name=key)(base.get_layer(src).output))
        h = (layers.Concatenate(name=POOLED_FEATURES)(pools) if len(pools) > 1
             else layers.Identity(name=POOLED_FEATURES)(pools[0]))
        last = max((key[4:] for key in pooled_keys(pool_layers, pooling)), key=names.index)
        if squash_divisor is not None:
            import numpy as np

            d = np.asarray(squash_divisor, np.float64).ravel()
            if d.size != int(h.shape[-1]) or not np.all(np.isfinite(d)) or not np.all(d > 0):
                raise MammoError(f"squash_divisor needs {int(h.shape[-1])} positive numbers, got {d.size}")
            h = layers.Rescaling(scale=[float(v) for v in 1.0 / d], name=FEATURE_SCALE)(h)
            h = layers.Activation("softsign", name=FEATURE_SQUASH)(h)
    else:
        if squash_divisor is not None:
            raise MammoError("squash_divisor needs the pooled head")
        feat = base.get_layer(bb.last_layer).output
        h = layers.Flatten(name=HEAD_FIRST_LAYER)(feat)
        h = layers.Dense(int(hidden), activation="relu", name="dense_hidden")(h)
        last = bb.last_layer
    out = output_layer(h, n_classes, output_activation)
    model = keras.Model(inp, out, name=f"transfer_{bb.name}" + ("_pooled" if head == "pooled" else ""))
    if weights is not None:
        copy_backbone_weights(standalone_backbone(bb.name, weights), model, upto=last)
    set_mode(model, bb.name, "fe" if head == "pooled" else mode)
    return model


def pooled_gradcam_layer(backbone: str, pool_layers) -> str:
    """The last convolution before the deepest pooled layer (``block5_pool`` -> ``block5_conv3``)."""
    import re

    bb = BACKBONES[check_backbone(backbone)]
    blocks = [int(m.group(1)) for n in parse_pool_layers(pool_layers) if (m := re.match(r"block(\d)_", n))]
    if not blocks or not bb.name.startswith("vgg"):
        return bb.gradcam_layer
    last_conv = {"vgg16": (2, 2, 3, 3, 3), "vgg16_block4": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}[bb.name]
    b = max(blocks)
    return f"block{b}_conv{last_conv[b - 1]}"


def fold_linear_head(model, mean, scale, coef, intercept) -> None:
    """Fold a standardisation ``(f - mean) / scale`` and a scikit-learn logistic regression
    (``coef`` (1, d) binary or (C, d) multinomial, ``intercept``) into the ``predictions`` Dense
    softmax of a pooled model, so that ``model.predict`` equals ``predict_proba``.

    Binary: ``[1 - s(z), s(z)] = softmax([0, z])``; multinomial: ``softmax(W f + b)`` as is.
    """
    import numpy as np

    mean = np.asarray(mean, np.float64)
    scale = np.asarray(scale, np.float64)
    coef = np.atleast_2d(np.asarray(coef, np.float64))
    intercept = np.atleast_1d(np.asarray(intercept, np.float64))
    dense = model.get_layer("predictions")
    n_out = int(dense.units)
    if coef.shape[0] == 1 and n_out == 2:
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.array([0.0, intercept[0]])
    if coef.shape != (n_out, mean.size):
        raise MammoError(f"logistic regression of shape {coef.shape} does not fit a Dense of "
                         f"{n_out} units over {mean.size} features")
    w = coef / scale  # (C, d)
    b = intercept - w @ mean
    dense.set_weights([w.T.astype(np.float32), b.astype(np.float32)])


def backbone_layer_names(model) -> list[str]:
    """Names of the backbone layers (everything between the preprocessing and the head)."""
    names = [l.name for l in model.layers]
    start = names.index("caffe_preprocess") + 1
    return [n for n in names[start:] if not is_head_layer(n)]


def set_mode(model, backbone: str, mode: str) -> None:
    """Freeze the backbone (``fe``) or leave its last block trainable (``ft``)."""
    import keras

    bb = BACKBONES[check_backbone(backbone)]
    if mode not in MODES:
        raise MammoError(f"unknown mode {mode!r}; choose fe or ft")
    for name in backbone_layer_names(model):
        layer = model.get_layer(name)
        trainable = (mode == "ft" and name.startswith(bb.ft_prefix)
                     and not isinstance(layer, keras.layers.BatchNormalization))
        layer.trainable = trainable


def split_base_head(model):
    """Two models sharing ``model``'s layers: ``base`` (patch -> backbone features) and ``head``
    (features -> softmax). Training ``head`` trains the full model's head in place."""
    import keras

    names = [l.name for l in model.layers]
    i = names.index(HEAD_FIRST_LAYER)
    feat_tensor = model.layers[i].input
    base = keras.Model(model.inputs, feat_tensor, name=model.name + "_base")
    feat_in = keras.Input(shape=tuple(feat_tensor.shape[1:]), name="features")
    y = feat_in
    for layer in model.layers[i:]:
        y = layer(y)
    head = keras.Model(feat_in, y, name=model.name + "_head")
    return base, head
