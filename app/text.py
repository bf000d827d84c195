"""Words the viewer shows: readable class names, the notice, the uncertainty wording."""
from __future__ import annotations

import html

NOTICE = "Research use only — not a medical device"
APP_DISPLAY_NAME = "Mammogram patch viewer"
# Qt appends the application display name to a window title unless the title ends with it
WINDOW_TITLE = f"{NOTICE} — {APP_DISPLAY_NAME}"

_PRETTY = {
    "baseline": "Normal tissue (baseline)",
    "mass_benign": "Mass, benign",
    "mass_malignant": "Mass, malignant",
    "calcification_benign": "Calcification, benign",
    "calcification_malignant": "Calcification, malignant",
    "mass": "Mass",
    "calcification": "Calcification",
    "benign": "Benign",
    "malignant": "Malignant",
}

_TASKS = {
    "five_class": "5 classes",
    "mass_calc": "mass vs. calcification",
    "benign_malignant": "benign vs. malignant",
    "baseline_mass_calc": "normal / mass / calcification",
}


def class_label(name: str | None) -> str:
    """``"mass_malignant"`` -> ``"Mass, malignant"`` (unknown names pass through)."""
    if not name:
        return ""
    return _PRETTY.get(name, name.replace("_", " ").capitalize())


def class_short(name: str | None) -> str:
    """Compact name for table cells: ``"baseline"`` -> ``"Normal"``."""
    return "Normal" if name == "baseline" else class_label(name)


def task_label(task: str | None) -> str:
    if not task:
        return ""
    return _TASKS.get(task, task.replace("_", " "))


def is_malignant(name: str) -> bool:
    return name.endswith("malignant")


_BREAK_AFTER = "/\\_-.+#[]()"
_ZWSP = "\u200b"


def breakable(text: str | None, run: int = 16) -> str:
    """``text`` with zero-width spaces after path separators, ``_ - .`` and inside runs of
    more than ``run`` characters, so a word-wrapped label can break a long file name anywhere
    instead of widening its panel."""
    if not text:
        return ""
    out, n = [], 0
    for ch in str(text):
        out.append(ch)
        n = 0 if ch.isspace() else n + 1
        if ch in _BREAK_AFTER or n >= run:
            out.append(_ZWSP)
            n = 0
    return "".join(out)

REGION_HELP = (
    "How big a region to pick: the models were trained on windows of side max(2 x lesion "
    "radius, 96 px) at 200 µm pixels (mini-MIAS), i.e. at least 19.2 mm, shrunk or enlarged to "
    "150 x 150. Point: click the lesion centre and set the radius to the lesion's radius (the "
    "window is then exactly the training window). Box: drag a box that just encloses the "
    "lesion; the window is the square around it, never smaller than 19.2 mm. Windows that "
    "include background (skin line, film edge) are outside the training data and tend to be "
    "called abnormal."
)


def plain_tooltip(text: str) -> str:
    """``text`` (file names, DICOM values) for a tooltip, shown as it is: Qt renders a tooltip
    that looks like markup as rich text, so the text is escaped inside a rich-text paragraph."""
    return ("<p style='white-space:pre'>" + html.escape(str(text)).replace("\n", "<br>")
            + "</p>")


def unreadable_text(errors: list, shown: int = 12) -> str:
    """The message for files that could not be read: the count, then one line per file (the
    first ``shown``), then how many more."""
    lines = [str(f) for f in errors[:shown]]
    more = len(errors) - len(lines)
    return (f"{len(errors)} file(s) could not be read:\n" + "\n".join(lines)
            + (f"\n… and {more} more" if more > 0 else ""))
