"""Check the system libraries Qt's X11 (xcb) platform plugin needs, before the viewer starts.

``python -m app.qtdeps`` (run by ``make run``) runs ``ldd`` on PyQt6's ``libqxcb.so`` and on the
Qt libraries beside it that it pulls in (``libQt6XcbQpa``, ``libQt6Gui``, ...), collects every
shared library reported ``not found`` and maps each soname to the Debian/Ubuntu package that
provides it. Then:

* nothing missing: prints nothing and exits 0;
* missing, on Debian/Ubuntu as root with ``apt-get``: lists the packages and installs them
  (``apt-get install -y --no-install-recommends ...``, after ``apt-get update``), checks again;
* missing otherwise: prints the exact command to run (``sudo apt-get install -y ...`` on
  Debian/Ubuntu) and exits 1, since the viewer could not open a window.

First of all it checks that there is a display at all (:func:`display_problem`): without
``DISPLAY`` / ``WAYLAND_DISPLAY`` (and no headless ``QT_QPA_PLATFORM``) it says in one line how
to run the viewer instead and exits 1, before installing anything. ``--no-install`` only
reports. With ``QT_QPA_PLATFORM`` set to another platform (offscreen,
wayland, ...) there is nothing to check. Imports neither Qt nor TensorFlow (a missing library would make
importing Qt abort); ``ldd`` absent (not Linux): nothing to check, exit 0.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# soname -> Debian/Ubuntu packages that provide it (first one that apt knows is used; newer
# releases renamed a few with a t64 suffix)
PACKAGES: dict[str, tuple[str, ...]] = {
    "libxcb-cursor.so.0": ("libxcb-cursor0",),
    "libxcb-icccm.so.4": ("libxcb-icccm4",),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1",),
    "libxcb-image.so.0": ("libxcb-image0",),
    "libxcb-render-util.so.0": ("libxcb-render-util0",),
    "libxcb-xkb.so.1": ("libxcb-xkb1",),
    "libxcb-randr.so.0": ("libxcb-randr0",),
    "libxcb-shape.so.0": ("libxcb-shape0",),
    "libxcb-shm.so.0": ("libxcb-shm0",),
    "libxcb-sync.so.1": ("libxcb-sync1",),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0",),
    "libxcb-render.so.0": ("libxcb-render0",),
    "libxcb-xinput.so.0": ("libxcb-xinput0",),
    "libxcb-xinerama.so.0": ("libxcb-xinerama0",),
    "libxcb-glx.so.0": ("libxcb-glx0",),
    "libxcb-util.so.1": ("libxcb-util1",),
    "libxcb.so.1": ("libxcb1",),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0",),
    "libxkbcommon.so.0": ("libxkbcommon0",),
    "libX11-xcb.so.1": ("libx11-xcb1",),
    "libX11.so.6": ("libx11-6",),
    "libXau.so.6": ("libxau6",),
    "libXdmcp.so.6": ("libxdmcp6",),
    "libSM.so.6": ("libsm6",),
    "libICE.so.6": ("libice6",),
    "libEGL.so.1": ("libegl1",),
    "libGL.so.1": ("libgl1",),
    "libGLX.so.0": ("libglx0",),
    "libOpenGL.so.0": ("libopengl0",),
    "libfontconfig.so.1": ("libfontconfig1",),
    "libfreetype.so.6": ("libfreetype6",),
    "libdbus-1.so.3": ("libdbus-1-3",),
    "libglib-2.0.so.0": ("libglib2.0-0t64", "libglib2.0-0"),
    "libgthread-2.0.so.0": ("libglib2.0-0t64", "libglib2.0-0"),
    "libgssapi_krb5.so.2": ("libgssapi-krb5-2",),
    "libwayland-client.so.0": ("libwayland-client0",),
    "libwayland-cursor.so.0": ("libwayland-cursor0",),
    "libwayland-egl.so.1": ("libwayland-egl1",),
}

_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found\s*$")
_RESOLVED = re.compile(r"^\s*(\S+)\s+=>\s+(/\S+)\s+\(0x[0-9a-f]+\)\s*$")

Runner = Callable[..., subprocess.CompletedProcess]


@dataclass(frozen=True)
class Check:
    plugin: Path | None
    missing: tuple[str, ...]  # sonames, sorted
    packages: tuple[str, ...]  # Debian packages for them, sorted
    unknown: tuple[str, ...]  # sonames without a known package


HEADLESS_PLATFORMS = ("offscreen", "minimal", "minimalegl", "vnc", "eglfs", "linuxfb")
NO_DISPLAY = ("no display to open the viewer on ({why}); run it on the desktop, over `ssh -X`, "
              "with `xvfb-run make run`, or headless: mammo-viewer PATH --screenshot FILE.png")


def display_problem(env: Mapping[str, str], viewer_args: Sequence[str] = (),
                    system: str = sys.platform) -> str | None:
    """Why Qt could not open a window here, in one line (how to run it instead), or None.
    ``viewer_args``: the viewer's command line (``--screenshot`` needs no display)."""
    if system in ("darwin", "win32"):
        return None
    if any(a in ("-h", "--help", "--version") or a.split("=")[0] == "--screenshot"
           for a in viewer_args):
        return None
    platform = env.get("QT_QPA_PLATFORM", "").split(":")[0].strip()
    x11, wayland = bool(env.get("DISPLAY")), bool(env.get("WAYLAND_DISPLAY"))
    if platform in HEADLESS_PLATFORMS:
        return None
    if platform.startswith("wayland"):
        return None if wayland else NO_DISPLAY.format(
            why=f"QT_QPA_PLATFORM={platform} and WAYLAND_DISPLAY is unset")
    if platform == "xcb":
        return None if x11 else NO_DISPLAY.format(why="QT_QPA_PLATFORM=xcb and DISPLAY is unset")
    if platform:
        return None  # another platform plugin: Qt decides
    return None if x11 or wayland else NO_DISPLAY.format(
        why="DISPLAY and WAYLAND_DISPLAY are unset")


def parse_ldd(text: str) -> tuple[dict[str, str], list[str]]:
    """``ldd`` output -> ({soname: resolved path}, [sonames not found])."""
    resolved, missing = {}, []
    for line in text.splitlines():
        m = _NOT_FOUND.match(line)
        if m:
            if m.group(1) not in missing:
                missing.append(m.group(1))
            continue
        m = _RESOLVED.match(line)
        if m:
            resolved[m.group(1)] = m.group(2)
    return resolved, missing


def xcb_plugin() -> Path | None:
    """PyQt6's xcb platform plugin, found without importing Qt (None if PyQt6 is absent)."""
    spec = importlib.util.find_spec("PyQt6")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        for qt in ("Qt6", "Qt"):
            p = Path(root) / qt / "plugins" / "platforms" / "libqxcb.so"
            if p.is_file():
                return p
    return None


def missing_libraries(plugin: Path, run: Runner = subprocess.run) -> list[str]:
    """Sonames ``ldd`` cannot find for the plugin and for the Qt libraries it pulls in."""
    qt_lib = plugin.parent.parent.parent / "lib"
    todo, seen, missing = [plugin], set(), []
    while todo:
        lib = todo.pop(0)
        if lib in seen:
            continue
        seen.add(lib)
        res = run(["ldd", str(lib)], capture_output=True, text=True, check=False)
        resolved, miss = parse_ldd(res.stdout or "")
        for s in miss:
            if s not in missing:
                missing.append(s)
        for soname, path in resolved.items():  # Qt's own libraries: check them too
            p = Path(path)
            if soname.startswith("libQt6") and p.parent == qt_lib:
                todo.append(p)
    return sorted(missing)


def packages_for(missing: Iterable[str], known: Callable[[str], bool] | None = None
                 ) -> tuple[list[str], list[str]]:
    """Debian packages for the sonames (the first alternative ``known`` accepts, default the
    first) and the sonames no package is known for."""
    pkgs, unknown = [], []
    for soname in missing:
        alts = PACKAGES.get(soname)
        if not alts:
            unknown.append(soname)
            continue
        pick = next((a for a in alts if known is None or known(a)), alts[-1])
        if pick not in pkgs:
            pkgs.append(pick)
    return sorted(pkgs), sorted(unknown)


def is_debian(os_release: str) -> bool:
    """True on Debian, Ubuntu and their derivatives (``/etc/os-release`` ID / ID_LIKE)."""
    ids = set()
    for line in os_release.splitlines():
        key, _, value = line.partition("=")
        if key in ("ID", "ID_LIKE"):
            ids.update(value.strip().strip('"').lower().split())
    return bool(ids & {"debian", "ubuntu"})


def install_command(packages: Sequence[str], root: bool) -> list[str]:
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    return cmd if root else ["sudo", *cmd]


def _apt_knows(run: Runner) -> Callable[[str], bool]:
    def known(pkg: str) -> bool:
        res = run(["apt-cache", "show", pkg], capture_output=True, text=True, check=False)
        return res.returncode == 0 and bool((res.stdout or "").strip())
    return known


def check(run: Runner = subprocess.run, plugin: Path | None = None,
          known: Callable[[str], bool] | None = None) -> Check:
    plugin = plugin or xcb_plugin()
    if plugin is None:
        return Check(None, (), (), ())
    missing = missing_libraries(plugin, run)
    pkgs, unknown = packages_for(missing, known) if missing else ([], [])
    return Check(plugin, tuple(missing), tuple(pkgs), tuple(unknown))


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def main(argv: Sequence[str] | None = None, run: Runner = subprocess.run, out=None,
         os_release: str | None = None, euid: int | None = None, which=shutil.which,
         plugin: Path | None = None, env: Mapping[str, str] | None = None) -> int:
    """The check (tests pass ``run``, ``os_release``, ``euid``, ``which``, ``plugin``, ``env``)."""
    p = argparse.ArgumentParser(prog="python -m app.qtdeps",
                                description="Check (and on Debian/Ubuntu as root install) the system "
                                            "libraries Qt's xcb platform plugin needs.")
    p.add_argument("--no-install", action="store_true", help="only report what is missing")
    p.add_argument("viewer_args", nargs=argparse.REMAINDER,
                   help="after --: the viewer's arguments (--screenshot needs no display)")
    args = p.parse_args(argv)
    out = out or sys.stderr
    env = os.environ if env is None else env

    def say(text: str) -> None:
        print(f"qtdeps: {text}", file=out)

    viewer_args = [a for a in args.viewer_args if a != "--"]
    why = display_problem(env, viewer_args)
    if why:
        print(f"mammo-viewer: error: {why}", file=out)
        return 1
    headless_shot = any(a.split("=")[0] == "--screenshot" for a in viewer_args) and not (
        env.get("DISPLAY") or env.get("WAYLAND_DISPLAY") or env.get("QT_QPA_PLATFORM"))
    if headless_shot:
        return 0  # the viewer takes the screenshot offscreen: the xcb plugin is not used

    if which("ldd") is None:
        return 0  # not a glibc Linux: nothing to check here
    platform = env.get("QT_QPA_PLATFORM", "")
    if platform and not platform.startswith("xcb"):
        return 0  # offscreen, wayland, ...: the xcb plugin is not used
    plugin = plugin or xcb_plugin()
    os_release = _read("/etc/os-release") if os_release is None else os_release
    debian = is_debian(os_release)
    euid = (os.geteuid() if hasattr(os, "geteuid") else 1) if euid is None else euid
    has_apt = which("apt-get") is not None
    known = _apt_knows(run) if debian and which("apt-cache") is not None else None
    if plugin is None:
        say("PyQt6's xcb platform plugin (libqxcb.so) not found; is PyQt6 installed in this Python?")
        return 1
    result = check(run, plugin, known)
    if not result.missing:
        return 0
    say(f"Qt's xcb platform plugin needs libraries this system lacks: {', '.join(result.missing)}")
    if result.unknown:
        say(f"no known Debian package for: {', '.join(result.unknown)} (install the package that "
            "provides each)")
    if not result.packages:
        return 1
    if debian and euid == 0 and has_apt and not args.no_install:
        say(f"installing with apt-get: {' '.join(result.packages)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-q"], check=False, env=env)
        res = run(install_command(result.packages, root=True), check=False, env=env)
        if res.returncode != 0:
            say(f"apt-get failed (exit {res.returncode}); run: "
                f"{shlex.join(install_command(result.packages, root=True))}")
            return 1
        again = check(run, plugin, known)
        if again.missing:
            say(f"still missing after installing: {', '.join(again.missing)}")
            return 1
        say("installed; the Qt platform libraries are complete")
        return 0
    cmd = shlex.join(install_command(result.packages, root=euid == 0))
    if debian:
        say(f"install them with:\n    {cmd}")
    else:
        say(f"on Debian/Ubuntu these are the packages {' '.join(result.packages)} ({cmd}); "
            "on other systems install the packages that provide the libraries above")
    say("(or run without a screen: QT_QPA_PLATFORM=offscreen)")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
