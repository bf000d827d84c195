"""Where a patch or a mammogram came from, kept for reports and exports (DICOM SR among them).

A :class:`SourceRef` names the source image (its path and, for DICOM, the Study / Series / SOP
Instance UIDs and SOP Class UID from its header), the frame of a multi-frame DICOM, and the
window a patch was cut from, in source pixels ``(top, left, side)`` (array rows / columns,
origin at the top-left corner of the image as stored: :mod:`mammo_core.protocol`).

The readers fill it: ``read_patches`` for DICOM patches (``frame`` = the frame of a multi-frame
file), ``read_mammogram`` for every mammogram (UIDs only for DICOM), and the window cutter
(:func:`mammo_core.protocol.window_ref`, used by ``mammo scan`` and the viewer's region tool)
adds the window. ``generated_uids`` is True only when a writer generated UIDs for a source
that has none (a PNG / PGM mammogram); the readers never generate any.

Research use only — not a medical device.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from mammo_core.safeio import shown


@dataclass(frozen=True)
class SourceRef:
    """The identifiers of a patch's or mammogram's source image (see the module doc)."""

    path: str
    study_uid: str | None = None
    series_uid: str | None = None
    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None
    frame: int | None = None
    window: tuple[int, int, int] | None = None   # (top, left, side) in source pixels
    generated_uids: bool = False                  # True when UIDs were generated (PNG/PGM source)

    @classmethod
    def of_file(cls, path: str | Path) -> SourceRef:
        """A source without DICOM identifiers (PNG, PGM, TIFF, ``.npy``)."""
        return cls(str(path))

    def with_window(self, top: int, left: int, side: int) -> SourceRef:
        """This source with the window ``(top, left, side)`` a patch was cut from."""
        return replace(self, window=(int(top), int(left), int(side)))

    def with_frame(self, frame: int | None) -> SourceRef:
        return replace(self, frame=None if frame is None else int(frame))

    def to_json(self) -> dict[str, object]:
        """The fields that are set, as JSON values (``window`` as ``[top, left, side]``); text as
        :func:`mammo_core.safeio.shown` writes it (valid UTF-8 on one line, whatever the file
        name or header held)."""
        out: dict[str, object] = {"path": shown(self.path)}
        for name in ("study_uid", "series_uid", "sop_instance_uid", "sop_class_uid", "frame"):
            value = getattr(self, name)
            if value is not None:
                out[name] = shown(value) if isinstance(value, str) else value
        if self.window is not None:
            out["window"] = list(self.window)
        if self.generated_uids:
            out["generated_uids"] = True
        return out


__all__ = ["SourceRef"]
