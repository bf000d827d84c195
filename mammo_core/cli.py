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
    """Where native libraries' stderr lines go: ``$MAMMO_NATIVE_LOG`` or
    ``~/.cache/mammo/native.log``."""
    env = os.environ.get("MAMMO_NATIVE_LOG")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mammo" / "native.log"


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
    logsetup.configure("mammo")
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
    except (RecursionError, MemoryError, ValueError, TypeError, KeyError, RuntimeError,
            ArithmeticError) as err:
        if args.debug:
            raise
        log.error("internal error: %s: %s (please report it; run with --debug for the traceback)",
                  type(err).__name__, shown(str(err).splitlines()[0] if str(err) else ""))
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
