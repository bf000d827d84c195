"""The `mammo` command: the product's work without a screen.

Each command lives in ``mammo_core/commands/<name>.py`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` (``func(args) -> int`` exit code) as default.
Exit codes: 0 success, 1 bad input / failure (one-line message), 2 usage error,
3 partial failure (some inputs could not be processed, the rest were).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import traceback
from pathlib import Path

from mammo_core import DISCLAIMER, __version__, logsetup
from mammo_core.errors import MammoError
from mammo_core.logsetup import divert_native_stderr
from mammo_core.safeio import shown

log = logging.getLogger(__name__)

# Command groups and the modules that fill them. Each module's register() receives the
# subparsers object of its group (or of the top level for "").
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "dataset": ("mammo_core.commands.dataset_info", "mammo_core.commands.dataset_build"),
    "models": ("mammo_core.commands.models",),
    "": ("mammo_core.commands.predict", "mammo_core.commands.scan", "mammo_core.commands.send"),
}
GROUP_HELP = {
    "dataset": "inspect and build patch-array datasets (CBIS-DDSM layout)",
    "models": "list and verify the bundled models",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammo",
        description=(
            "Classify mammogram patches with CNNs and their ensemble, explain them with "
            "Grad-CAM, build datasets and export reports. " + DISCLAIMER.capitalize() + "."
        ),
        epilog="Run 'mammo COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"mammo {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {"": top}
    for group in COMMAND_MODULES:
        if group:
            gp = top.add_parser(group, help=GROUP_HELP.get(group), description=GROUP_HELP.get(group))
            gp.set_defaults(_group_parser=gp)
            groups[group] = gp.add_subparsers(dest=f"{group}_command", metavar="SUBCOMMAND")
    for group, modules in COMMAND_MODULES.items():
        for mod_name in modules:
            importlib.import_module(mod_name).register(groups[group])
    return parser


def native_log_path() -> Path:
    """The command's log file: native libraries' stderr lines and every log record with its
    traceback (the terminal gets one line): ``$MAMMO_NATIVE_LOG`` or
    ``~/.cache/mammo/native.log``."""
    env = os.environ.get("MAMMO_NATIVE_LOG")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mammo" / "native.log"


def _usable_log() -> Path | None:
    """The log file when it can be opened, else None (a read-only home: no log, no warning)."""
    path = native_log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError:
        return None
    return path


def _terminated(signum, _frame):
    """SIGTERM / SIGHUP: unwind like Ctrl-C, so ``finally`` blocks run and no half-written
    temporary file stays behind; exit 128 + signal number."""
    print(f"mammo: terminated by signal {signum}", file=sys.stderr)
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    """Turn SIGTERM (and SIGHUP) into an orderly exit (main thread only)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)):
        if sig is not None:
            try:
                signal.signal(sig, _terminated)
            except (ValueError, OSError):  # pragma: no cover - not allowed here
                pass


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
    # one line per message on the terminal; tracebacks (ours, decoders') go to the log file
    logsetup.configure("mammo", log_file=_usable_log())
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        (getattr(args, "_group_parser", None) or parser).print_help(sys.stderr)
        return 2
    install_signal_handlers()
    if not args.debug and sys.stderr is sys.__stderr__:
        # TensorFlow's C++ start-up lines ("failed call to cuInit", oneDNN) go to a log file,
        # not between the tool's one-line messages (not under a test's capture of sys.stderr)
        divert_native_stderr(native_log_path())
    try:
        return int(func(args) or 0)
    except MammoError as err:
        if args.debug:
            raise
        log.error("error: %s", err)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except BrokenPipeError:  # the reader of stdout went away (e.g. `| head`)
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the exit-time flush
        return 1
    except OSError as err:  # a file the user named: one line naming it
        if args.debug:
            raise
        where = f"{shown(err.filename)}: " if err.filename else ""
        log.error("error: %s%s", where, err.strerror or err)
        return 1
    except Exception as err:  # a bug or a library's own exception (zlib.error...)
        if args.debug:
            raise
        log.error("internal error: %s: %s (please report it; the traceback is in %s)",
                  type(err).__name__, shown(str(err).splitlines()[0] if str(err) else ""),
                  shown(native_log_path()), extra={"details": traceback.format_exc()})
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
