"""Where a training or ensemble run may write, checked before any work (and before any folder
is made), and how ``--overwrite`` replaces an existing bundle.

A run's ``--out`` is refused (one line, :class:`UsageError`, exit 2) when it

- is a file (or a link to one), lies under a file, or cannot be made (no write permission);
- is, or lies inside, the bundled models folder (``assets/models``, ``$MAMMO_ASSETS/models``):
  shipped bundles are hashed by its ``MANIFEST.json``; train into a run folder and copy the
  bundle in (``training_scripts/train_bundled.sh`` does), then ``mammo models manifest``;
- is, lies inside, or contains an input of the run (``--data``, a member bundle, an
  out-of-fold run folder);
- already holds a bundle (``card.json``, ``model.keras`` or ``ensemble.json``), unless
  ``--overwrite`` is given: then the run writes into a temporary sibling folder, the new bundle
  is verified (every file against its card's sha256, the model archive checked), and only then
  the two folders are exchanged (one ``renameat2(RENAME_EXCHANGE)`` on Linux, else two renames)
  and the old bundle removed. A run that fails leaves the old bundle untouched.

Research use only - not a medical device.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mammo_core.bundle import CARD_FILE, MODEL_FILE, verify_bundle
from mammo_core.errors import MammoError
from mammo_core.paths import REPO_DIR, models_dir

log = logging.getLogger(__name__)

BUNDLE_MARKERS = (CARD_FILE, MODEL_FILE, "ensemble.json")
REFUSED_MARK = ".refused"  # a run folder of a refused run keeps this file (see runner)


class UsageError(MammoError):
    """A flag value or combination the run cannot accept (exit 2), found before any work."""


class RefusedRun(MammoError):
    """A run whose model was refused (collapsed); its history / metrics were written (exit 1)."""


@dataclass(frozen=True)
class OutPlan:
    final: Path  # the folder the user named
    work: Path  # where the run writes: ``final``, or a temporary sibling under --overwrite
    replace: bool  # an existing bundle is replaced once the new one is complete and verified


def _protected_models_dirs() -> list[Path]:
    return sorted({Path(os.path.realpath(d)) for d in (models_dir(), REPO_DIR / "assets" / "models")})


def _within(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or lies inside it (both resolved)."""
    return a == b or b in a.parents


def holds_bundle(folder: Path) -> bool:
    return folder.is_dir() and any(os.path.lexists(folder / f) for f in BUNDLE_MARKERS)


def plan_out(out: str | Path, inputs: dict[str, str | Path], *, overwrite: bool = False,
             flag: str = "--out") -> OutPlan:
    """Check ``out`` against the rules of the module docstring; ``inputs`` maps a flag name to
    a path the run reads (``{"--data": ...}``). Creates nothing."""
    out = Path(out)
    if os.path.lexists(out) and not out.is_dir():
        raise UsageError(f"{flag} is a file, not a folder; give a folder for the run's outputs", out)
    anc = out.absolute().parent
    while not os.path.lexists(anc) and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise UsageError(f"{flag} lies under {anc}, which is not a folder", out)
    if not os.access(anc, os.W_OK | os.X_OK):
        raise UsageError(f"{flag}: cannot create or write in {anc} (permission denied)", out)
    real = Path(os.path.realpath(out))
    for m in _protected_models_dirs():
        if _within(real, m):
            raise UsageError(f"{flag} lies inside the bundled models folder {m}: train into a run folder "
                             "(e.g. runs/<name>), copy the bundle in (training_scripts/train_bundled.sh does) "
                             "and run 'mammo models manifest'", out)
    for name, path in inputs.items():
        src = Path(os.path.realpath(path))
        if _within(real, src):
            raise UsageError(f"{flag} is {'the' if real == src else 'inside the'} {name} folder {path}; "
                             "outputs never go into an input", out)
        if _within(src, real):
            raise UsageError(f"{flag} contains the {name} folder {path}; outputs never go around an input", out)
    if holds_bundle(out):
        if not overwrite:
            found = ", ".join(f for f in BUNDLE_MARKERS if os.path.lexists(out / f))
            raise UsageError(f"{flag} already holds a bundle ({found}); "
                             "give a new folder, or --overwrite to replace it once the new bundle is "
                             "complete and verified", out)
        work = out.parent / f".{out.name}.new-{os.getpid()}"
        if os.path.lexists(work):
            shutil.rmtree(work)
        return OutPlan(out, work, True)
    return OutPlan(out, out, False)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def publish(plan: OutPlan) -> None:
    """Under --overwrite: verify the new bundle in ``plan.work``, then put it in place of
    ``plan.final`` in one step and remove the old one. A no-op otherwise."""
    if not plan.replace:
        return
    verify_bundle(plan.work)  # every file against the card: a half-written bundle never replaces one
    if _exchange(plan.work, plan.final):
        shutil.rmtree(plan.work)  # now the old bundle
    else:
        old = plan.final.parent / f".{plan.final.name}.old-{os.getpid()}"
        os.rename(plan.final, old)
        try:
            os.rename(plan.work, plan.final)
        except OSError:
            os.rename(old, plan.final)
            raise
        shutil.rmtree(old)
    log.info("replaced the bundle in %s (new bundle verified first)", plan.final)


def abandon(plan: OutPlan) -> None:
    """After a failed run under --overwrite: remove the temporary folder, unless it holds the
    history and metrics of a refused run (then its path was named in the error)."""
    if plan.replace and plan.work.is_dir() and not (plan.work / REFUSED_MARK).exists():
        shutil.rmtree(plan.work, ignore_errors=True)
