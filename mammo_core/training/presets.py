"""The study's protocol per task: the default of each training script, in one table.

Every value is marked ``study`` (stated by the study), ``literal reading`` (the study is
ambiguous; the most literal reading, with the other reading offered as a flag) or ``project
choice`` (the study gives no value, or this project deliberately differs), with a one-line
reason. Each script prints its table in ``--help`` and writes the settings actually used,
with their source (``flag`` when given on the command line), into the card.
Research use only - not a medical device.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mammo_core.errors import MammoError
from mammo_core.labels import get_task

STUDY, LITERAL, PROJECT, FLAG = "study", "literal reading", "project choice", "flag"


@dataclass(frozen=True)
class Setting:
    value: Any
    source: str  # study | literal reading | project choice | flag
    reason: str

    def as_dict(self) -> dict:
        return {"value": self.value, "source": self.source, "reason": self.reason}


S = Setting
_OUT_TRANSFER = S("sigmoid", LITERAL, "the study's transfer models ended in a sigmoid: two sigmoid units (its "
                  "parameter counts have a two-unit output layer) trained with binary cross-entropy (the loss "
                  "is not named: Keras's for a sigmoid), the bundle's outputs the two normalised to sum 1 "
                  "(mammo_core.models.output); --output-activation softmax for a softmax")
_OUT_TRANSFER_MULTI = S("softmax", PROJECT, "the study's transfer models (two classes) ended in a sigmoid; "
                        "with three classes a softmax (the sigmoid output is offered for two classes)")
_OUT_SCRATCH = S("softmax", STUDY, "Dense(n, softmax) output (Figs. 2 and 10); section 5.1.1's grid also "
                 "tried a sigmoid: --output-activation sigmoid or --grid output_activation=softmax,sigmoid")
_OUT_SCRATCH_MULTI = S("softmax", STUDY, "Dense(n, softmax) output (Fig. 2 with three outputs)")
_LR_SCRATCH = S(1e-3, STUDY, "Adam, learning rate 1e-3")
_LR_TRANSFER = S(1e-5, STUDY, "Adam, learning rate 1e-5 for the transfer models")
_EPOCHS = S(100, STUDY, "100 epochs; early stopping on val_loss ends runs earlier")
_BATCH = S(50, STUDY, "batch 50 (the study's grid also tried 25: --grid batch=25,50)")
_PATIENCE = S(50, STUDY, "early stopping on validation loss with patience 50 (best weights restored: project choice)")
_OPT_SCRATCH = S("adam", STUDY, "Adam (section 5.1.1's grid also tried RMSprop: --optimizer rmsprop or "
                 "--grid optimizer=adam,rmsprop)")
_OPT_TRANSFER = S("adam", PROJECT, "the study does not name Task 3's optimizer; Adam as in Task 2")
_PREPROC = S("caffe", PROJECT, "the study does not describe its input scaling; the keras.applications ImageNet "
             "weights expect caffe mode: intensities x255, grey copied to 3 channels, BGR ImageNet means "
             "subtracted, inside the graph")
_FE_COPIES = S(2, STUDY, "two augmented variants added to each original patch in the feature cache (3N)")
_FT_UNFREEZE = S("last_conv", LITERAL, "the study unfroze 'the last layer': the last conv layer "
                 "(block5_conv3 / block5_conv4 / conv5_block3_3_conv); --ft-unfreeze last_block for block 5")
_AUG_21 = S("geometric", LITERAL, "ImageDataGenerator(rotation 40, shifts 0.2, zoom 0.2, shear 0.2 deg, nearest) "
            "with horizontal flip: Task 2.2 says it 'disabled' the flip, so 2.1 had it; "
            "--augment geometric_noflip without")
_AUG_22 = S("geometric_rot90_reflect", LITERAL,
            "section 5.2 'changed some of the parameters' of the 5.1.1 generator: rotation_range 90, "
            "fill_mode reflect, no horizontal flip changed, so shifts, zoom and shear 0.2 kept; "
            "the other reading (only the named parameters) is --augment rotate90_reflect; "
            "--augment rot90 for exact k x 90 deg rotations")

PRESETS: Mapping[str, Mapping[str, Setting]] = {
    "2.1": {
        "task": S("mass_calc", STUDY, "mass vs calcification"),
        "model": S("scratch_v1", STUDY, "CNN from scratch, Fig. 2"),
        "augment": _AUG_21,
        "class_weights": S("none", STUDY, "no class weights in Task 2.1"),
        "batch_size": _BATCH, "epochs": _EPOCHS, "lr": _LR_SCRATCH, "patience": _PATIENCE,
        "optimizer": _OPT_SCRATCH, "output_activation": _OUT_SCRATCH,
    },
    "2.2": {
        "task": S("benign_malignant", STUDY, "benign vs malignant"),
        "model": S("scratch_v2", STUDY, "CNN from scratch, Fig. 10 (a sixth conv, dropout 0.2)"),
        "augment": _AUG_22,
        "class_weights": S("balanced", STUDY, "total / (n_classes x n_c): 0.85 / 1.22 for 1341 benign / 933 malignant"),
        "batch_size": _BATCH, "epochs": _EPOCHS, "lr": _LR_SCRATCH, "patience": _PATIENCE,
        "optimizer": _OPT_SCRATCH, "output_activation": _OUT_SCRATCH,
    },
    "3.1": {
        "task": S("mass_calc", STUDY, "mass vs calcification"),
        "model": S("transfer", STUDY, "ImageNet VGG16 base, Flatten, Dense(256), output layer"),
        "backbone": S("vgg16", STUDY, "VGG16 (VGG19 and ResNet50 as options)"),
        "mode": S("fe", STUDY, "feature extraction on the frozen base; --mode ft then fine-tunes"),
        "augment": S("geometric", PROJECT, "the study does not state Task 3's augmentation parameters; the "
                     "Task 2.1 augmentation of the same task, for the cached variants"),
        "class_weights": S("none", STUDY, "no class weights in Task 3.1"),
        "batch_size": _BATCH, "epochs": _EPOCHS, "lr": _LR_TRANSFER, "patience": _PATIENCE,
        "fe_copies": _FE_COPIES, "ft_unfreeze": _FT_UNFREEZE, "optimizer": _OPT_TRANSFER,
        "preprocessing": _PREPROC, "output_activation": _OUT_TRANSFER,
    },
    "3.2": {
        "task": S("benign_malignant", STUDY, "benign vs malignant"),
        "model": S("transfer", STUDY, "ImageNet VGG16 base, Flatten, Dense(256), output layer"),
        "backbone": S("vgg16", STUDY, "VGG16 (VGG19 and ResNet50 as options)"),
        "mode": S("fe", STUDY, "feature extraction on the frozen base; --mode ft then fine-tunes"),
        "augment": S("geometric_rot90_reflect", PROJECT,
                     "the study does not state Task 3's augmentation parameters; the Task 2.2 augmentation "
                     "of the same task, for the cached variants"),
        "class_weights": S("1,1.25", STUDY, "{benign: 1, malignant: 1.25} with VGG16"),
        "batch_size": _BATCH, "epochs": _EPOCHS, "lr": _LR_TRANSFER, "patience": _PATIENCE,
        "fe_copies": _FE_COPIES, "ft_unfreeze": _FT_UNFREEZE, "optimizer": _OPT_TRANSFER,
        "preprocessing": _PREPROC, "output_activation": _OUT_TRANSFER,
    },
    "4": {
        "task": S("baseline_mass_calc", STUDY, "baseline tissue vs mass vs calcification"),
        "model": S("scratch_v1", STUDY, "the Task 2.1 model (Fig. 2) with three outputs"),
        "augment": S("geometric", LITERAL, "the Task 2.1 pipeline, reused with its model"),
        "class_weights": S("none", STUDY, "no class weights in the main Task 4 run"),
        "batch_size": _BATCH, "epochs": _EPOCHS, "lr": _LR_SCRATCH, "patience": _PATIENCE,
        "optimizer": _OPT_SCRATCH, "output_activation": _OUT_SCRATCH_MULTI,
    },
}
# Values that depend on the backbone chosen (applied over the task's row).
BACKBONE_PRESETS: Mapping[tuple[str, str], Mapping[str, Setting]] = {
    ("3.1", "vgg19"): {
        "batch_size": S(32, STUDY, "VGG19 was trained with batch 32 (section 6.1)"),
        "epochs": S(65, STUDY, "VGG19 was trained for 65 epochs (section 6.1)"),
    },
    ("3.2", "vgg19"): {
        "class_weights": S("1,1.2", STUDY, "{benign: 1, malignant: 1.2} with VGG19"),
        "batch_size": S(32, STUDY, "VGG19 was trained with batch 32"),
        "epochs": S(65, STUDY, "VGG19 was trained for 65 epochs"),
    },
}
# Values that depend on the augmentation chosen (applied over the task's row).
AUGMENT_PRESETS: Mapping[tuple[str, str], Mapping[str, Setting]] = {
    ("2.1", "none"): {"batch_size": S(25, STUDY, "the model without augmentation was trained with batch 25 "
                                                 "(section 5.1, test accuracy 0.8244)")},
}
# The preset whose augmentation a task's ``augment="auto"`` means outside the scripts.
TASK_DEFAULT_PRESET = {"mass_calc": "2.1", "benign_malignant": "2.2", "baseline_mass_calc": "4",
                       "five_class": "2.2"}
LR_BY_MODEL = {"scratch_v1": _LR_SCRATCH, "scratch_v2": _LR_SCRATCH, "transfer": _LR_TRANSFER}
TRANSFER_ONLY = ("backbone", "mode", "fe_copies", "ft_unfreeze", "preprocessing")


def get_preset(preset: str) -> Mapping[str, Setting]:
    try:
        return PRESETS[preset]
    except KeyError:
        raise MammoError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}") from None


def resolve(preset: str, given: Mapping[str, Any]) -> dict[str, Setting]:
    """The settings of a run: ``given`` values (flags; None = not given) over the preset's row,
    the backbone's overrides and the model's learning rate."""
    row = dict(get_preset(preset))
    out: dict[str, Setting] = {}
    model = given.get("model") if given.get("model") is not None else row["model"].value
    if model != row["model"].value:
        row["lr"] = LR_BY_MODEL.get(model, row["lr"])
        two = get_task(row["task"].value).n_classes == 2
        row["output_activation"] = ((_OUT_TRANSFER if two else _OUT_TRANSFER_MULTI) if model == "transfer"
                                    else (_OUT_SCRATCH if two else _OUT_SCRATCH_MULTI))
        row["optimizer"] = _OPT_TRANSFER if model == "transfer" else row["optimizer"]
    if model == "transfer":
        row.setdefault("backbone", S("vgg16", PROJECT, "VGG16, the study's backbone for Task 3"))
        row.setdefault("mode", S("fe", PROJECT, "feature extraction on the frozen base"))
        row.setdefault("fe_copies", _FE_COPIES)
        row.setdefault("ft_unfreeze", _FT_UNFREEZE)
        row.setdefault("preprocessing", _PREPROC)
        backbone = given.get("backbone") if given.get("backbone") is not None else row["backbone"].value
        row.update(BACKBONE_PRESETS.get((preset, backbone), {}))
    else:
        for k in TRANSFER_ONLY:
            row.pop(k, None)
    augment = given.get("augment") if given.get("augment") is not None else row["augment"].value
    row.update(AUGMENT_PRESETS.get((preset, augment), {}))
    for key, setting in row.items():
        v = given.get(key)
        out[key] = setting if v is None else Setting(v, FLAG, "given on the command line")
    for key, v in given.items():  # flags without a preset row
        if key not in out and v is not None:
            out[key] = Setting(v, FLAG, "given on the command line")
    return out


def format_table(preset: str) -> str:
    """The preset as text for ``--help``."""
    lines = [f"Study protocol (Task {preset}), the defaults of this script (every flag overrides):"]
    rows = dict(get_preset(preset))
    for key, setting in rows.items():
        lines.append(f"  {key:<22} {setting.value!s:<17} [{setting.source}] {setting.reason}")
    for table in (BACKBONE_PRESETS, AUGMENT_PRESETS):
        for (p, variant), over in table.items():
            if p == preset:
                for key, setting in over.items():
                    lines.append(f"  {key + ' (' + variant + ')':<22} {setting.value!s:<17} "
                                 f"[{setting.source}] {setting.reason}")
    return "\n".join(lines)
