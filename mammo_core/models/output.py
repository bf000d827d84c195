"""The output layer of every registry model (``output_activation``), and the loss it trains with.

``softmax`` (default): ``predictions`` = Dense(n_classes, softmax), sparse categorical
cross-entropy.

``sigmoid`` (two classes; the study's transfer models and the sigmoid arm of its section 5.1.1
grid): **two sigmoid units**, Dense(2, sigmoid), trained with binary cross-entropy on the
one-hot labels (Keras's loss for a sigmoid output, averaged over the two units). Why two units
and not one: the study's parameter counts have a two-unit output layer (VGG16 fe 2,097,922
trainable = Dense(256 -> 2); one unit would give 2,097,665). In the graph: ``sigmoid_logits``
= Dense(2) computes the units' logits ``z``; ``log_sigmoid`` = Activation(log_sigmoid); and
``predictions`` = Activation(softmax), so the model outputs ``s_c / (s_0 + s_1)`` with
``s = sigmoid(z)``: the two sigmoid outputs normalised to sum to 1 (a project choice: two
independent sigmoids need not sum to 1, and every bundle's contract is ``(N, n_classes)``
probabilities summing to 1, which inference, calibration, the ensemble and the cards rely on;
the order of the classes, hence every call, is the sigmoids' own). Training uses the view that
ends at ``sigmoid_logits`` (:func:`training_view`), so the binary cross-entropy is computed from
the logits (``from_logits``, stable) on the very layers the bundle keeps. Grad-CAM's
pre-softmax scores are ``log s_c``, increasing in each unit's own logit.
"""
from __future__ import annotations

from mammo_core.errors import MammoError

OUTPUT_ACTIVATIONS = ("softmax", "sigmoid")
SIGMOID_LOGITS = "sigmoid_logits"
LOG_SIGMOID = "log_sigmoid"
PREDICTIONS = "predictions"
SIGMOID_LAYERS = (SIGMOID_LOGITS, LOG_SIGMOID)


def check_output_activation(activation: str, n_classes: int) -> str:
    """``activation`` when it fits ``n_classes`` outputs, else a one-line MammoError."""
    if activation not in OUTPUT_ACTIVATIONS:
        raise MammoError(f"output activation must be one of {', '.join(OUTPUT_ACTIVATIONS)}, got {activation!r}")
    if activation == "sigmoid" and int(n_classes) != 2:
        raise MammoError(f"output activation sigmoid (two sigmoid units, binary cross-entropy) is for two "
                         f"classes; this task has {n_classes} (use softmax)")
    return activation


def output_layer(x, n_classes: int, activation: str = "softmax"):
    """The ``predictions`` tensor (float32 probabilities summing to 1) on top of ``x``."""
    from keras import layers

    if check_output_activation(activation, n_classes) == "softmax":
        return layers.Dense(n_classes, activation="softmax", dtype="float32", name=PREDICTIONS)(x)
    z = layers.Dense(n_classes, dtype="float32", name=SIGMOID_LOGITS)(x)
    log_s = layers.Activation("log_sigmoid", dtype="float32", name=LOG_SIGMOID)(z)
    return layers.Activation("softmax", dtype="float32", name=PREDICTIONS)(log_s)  # s / sum(s)


def is_sigmoid(model) -> bool:
    return any(layer.name == SIGMOID_LOGITS for layer in model.layers)


def training_view(model):
    """``(view, loss)``: the model to compile and fit, and its loss. Softmax: the model itself
    and sparse categorical cross-entropy. Sigmoid: the view ending at the units' logits (same
    layers, trained in place) and the binary cross-entropy of the two units on one-hot labels."""
    import keras

    if not is_sigmoid(model):
        return model, keras.losses.SparseCategoricalCrossentropy()
    # the logits tensor of *this* graph (a layer called in two graphs, e.g. a transfer model and
    # its feature head, has two outputs; ``layer.output`` would be ambiguous)
    (z,) = [node.outputs[0] for nodes in model._nodes_by_depth.values() for node in nodes
            if node.operation is not None and node.operation.name == SIGMOID_LOGITS]
    return keras.Model(model.inputs, z, name=model.name + "_logits"), sparse_binary_cross_entropy


def sparse_binary_cross_entropy(y_true, logits):
    """Binary cross-entropy of the sigmoid units against the one-hot integer labels, from the
    logits (Keras's ``binary_crossentropy``: mean over the units)."""
    from keras import ops

    n = ops.shape(logits)[-1]
    y = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), n, dtype=logits.dtype)
    return ops.mean(ops.binary_crossentropy(y, logits, from_logits=True), axis=-1)
