"""Transfer learning on ImageNet backbones (VGG16, VGG19, ResNet50), built flat.

Graph: ``patch`` (N,150,150,1) in [0,1] -> ``grey_to_rgb`` (Concatenate of the grey patch
three times) -> ``caffe_preprocess`` (Rescaling: x * 255 - ImageNet mean in BGR order
[103.939, 116.779, 123.68]) -> the backbone's own layers (``block1_conv1`` ... or ``conv1_conv``
...) -> ``flatten`` -> ``dense_hidden`` (256, ReLU) -> ``predictions`` (softmax, float32).

``caffe_preprocess`` reproduces ``keras.applications.{vgg16,vgg19,resnet50}.preprocess_input``
(caffe mode: RGB->BGR then mean subtraction, no scaling to unit variance). The RGB->BGR flip is
a no-op here because the three channels are the same grey copy; the per-channel means are
applied in BGR order exactly as Keras does. Neither layer has weights, so parameter counts
equal the study's tables (VGG16 16,812,610 total / 2,097,922 trainable in fe with 2 classes).

The backbone is created with ``input_tensor=`` so its layers join this graph (not nested as
one layer: tf-keras-vis Grad-CAM cannot look inside a nested model). ImageNet weights are loaded
into a standalone backbone and copied layer by layer, by name.

Modes: ``fe`` freezes the whole backbone; ``ft`` leaves the last block trainable (``block5_*``
for VGG, ``conv5_*`` for ResNet50; ResNet's BatchNorm layers stay frozen in inference mode, the
usual fine-tuning practice, so their running statistics are kept).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mammo_core.contract import INPUT_SHAPE
from mammo_core.errors import MammoError

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
                   hidden: int = 256):
    """The flat transfer model (see module docstring)."""
    import keras
    from keras import layers

    bb = BACKBONES[check_backbone(backbone)]
    if mode not in MODES:
        raise MammoError(f"unknown mode {mode!r}; choose fe or ft")
    weights = _check_weights(weights)

    inp = keras.Input(shape=INPUT_SHAPE, name="patch")
    rgb = layers.Concatenate(axis=-1, name="grey_to_rgb")([inp, inp, inp])
    x = layers.Rescaling(scale=255.0, offset=[-m for m in CAFFE_MEAN_BGR], name="caffe_preprocess")(rgb)
    ctor = getattr(keras.applications, bb.app)
    base = ctor(include_top=False, weights=None, input_tensor=x)
    feat = base.get_layer(bb.last_layer).output
    h = layers.Flatten(name=HEAD_FIRST_LAYER)(feat)
    h = layers.Dense(int(hidden), activation="relu", name="dense_hidden")(h)
    out = layers.Dense(n_classes, activation="softmax", dtype="float32", name="predictions")(h)
    model = keras.Model(inp, out, name=f"transfer_{bb.name}")
    if weights is not None:
        copy_backbone_weights(standalone_backbone(bb.name, weights), model, upto=bb.last_layer)
    set_mode(model, bb.name, mode)
    return model


def backbone_layer_names(model) -> list[str]:
    """Names of the backbone layers (everything between the preprocessing and the head)."""
    names = [l.name for l in model.layers]
    start = names.index("caffe_preprocess") + 1
    stop = names.index(HEAD_FIRST_LAYER)
    return names[start:stop]


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
