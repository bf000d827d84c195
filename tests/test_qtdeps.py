"""`make run`'s Qt platform-library check (app/qtdeps.py) with mocked ldd / apt output: which
libraries it reports, which packages, what it prints or runs. No display needed."""
from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from app import qtdeps

# ldd on a fresh Debian 12 with PyQt6 6.11 (shortened), as reported in issue 12
PLUGIN_LDD = """\
\tlinux-vdso.so.1 (0x00007ffd5b9f2000)
\tlibQt6XcbQpa.so.6 => {lib}/libQt6XcbQpa.so.6 (0x00007f0a1c000000)
\tlibQt6Gui.so.6 => {lib}/libQt6Gui.so.6 (0x00007f0a1b800000)
\tlibxcb-cursor.so.0 => not found
\tlibxcb-icccm.so.4 => not found
\tlibxcb.so.1 => /lib/x86_64-linux-gnu/libxcb.so.1 (0x00007f0a1b7d0000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0a1b5ef000)
"""
XCBQPA_LDD = """\
\tlibxcb-keysyms.so.1 => not found
\tlibxcb-icccm.so.4 => not found
\tlibxkbcommon-x11.so.0 => /lib/x86_64-linux-gnu/libxkbcommon-x11.so.0 (0x00007f0a1b5e0000)
\tlibweird-thing.so.7 => not found
"""
DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n'
UBUNTU = 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\n'
FEDORA = 'NAME="Fedora Linux"\nID=fedora\n'


class FakeSystem:
    """ldd / apt-get / apt-cache as a test double; apt-get install "installs" libraries."""

    def __init__(self, tmp_path: Path, apt_ok: bool = True, unknown_lib: bool = True):
        self.unknown_lib = unknown_lib
        self.lib = tmp_path / "Qt6" / "lib"
        self.plugin = tmp_path / "Qt6" / "plugins" / "platforms" / "libqxcb.so"
        self.calls: list[list[str]] = []
        self.installed: set[str] = set()
        self.apt_ok = apt_ok

    def run(self, cmd, **_kw):
        self.calls.append(list(cmd))
        if cmd[0] == "ldd":
            target = Path(cmd[1])
            text = PLUGIN_LDD.format(lib=self.lib) if target == self.plugin else \
                XCBQPA_LDD if target.name == "libQt6XcbQpa.so.6" else ""
            if "libxcb-cursor0" in self.installed:
                text = text.replace("libxcb-cursor.so.0 => not found",
                                    "libxcb-cursor.so.0 => /lib/libxcb-cursor.so.0 (0x0000000000000001)")
            if "libxcb-icccm4" in self.installed:
                text = text.replace("libxcb-icccm.so.4 => not found", "")
            if "libxcb-keysyms1" in self.installed:
                text = text.replace("libxcb-keysyms.so.1 => not found", "")
            if not self.unknown_lib:
                text = text.replace("libweird-thing.so.7 => not found", "")
            return subprocess.CompletedProcess(cmd, 0, text, "")
        if cmd[:2] == ["apt-cache", "show"]:
            return subprocess.CompletedProcess(cmd, 0, f"Package: {cmd[2]}\n", "")
        if "install" in cmd:
            if self.apt_ok:
                self.installed.update(c for c in cmd if c.startswith("lib"))
            return subprocess.CompletedProcess(cmd, 0 if self.apt_ok else 100, "", "")
        return subprocess.CompletedProcess(cmd, 0, "", "")


def which_all(name):
    return f"/usr/bin/{name}"


def _main(fs, os_release=DEBIAN, euid=1000, argv=(), which=which_all):
    out = io.StringIO()
    code = qtdeps.main(list(argv), run=fs.run, out=out, os_release=os_release, euid=euid, which=which,
                       plugin=fs.plugin, env={**os.environ, "DISPLAY": ":0"})
    return code, out.getvalue()


@pytest.fixture(autouse=True)
def _xcb(monkeypatch):
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)


def test_parse_ldd():
    resolved, missing = qtdeps.parse_ldd(PLUGIN_LDD.format(lib="/q") + XCBQPA_LDD)
    assert missing == ["libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libweird-thing.so.7"]
    assert resolved["libQt6XcbQpa.so.6"] == "/q/libQt6XcbQpa.so.6" and "linux-vdso.so.1" not in resolved


def test_follows_qt_libraries_and_maps_packages(tmp_path):
    fs = FakeSystem(tmp_path)
    result = qtdeps.check(fs.run, fs.plugin)
    # the plugin, then the Qt libraries beside it that it pulls in (not system libraries)
    assert [c[1] for c in fs.calls] == [str(fs.plugin), str(fs.lib / "libQt6XcbQpa.so.6"),
                                        str(fs.lib / "libQt6Gui.so.6")]
    assert result.missing == ("libweird-thing.so.7", "libxcb-cursor.so.0", "libxcb-icccm.so.4",
                              "libxcb-keysyms.so.1")
    assert result.packages == ("libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1")
    assert result.unknown == ("libweird-thing.so.7",)


def test_not_root_prints_the_exact_command(tmp_path):
    fs = FakeSystem(tmp_path)
    code, text = _main(fs)
    assert code == 1
    assert "libxcb-cursor.so.0, libxcb-icccm.so.4, libxcb-keysyms.so.1" in text
    assert "sudo apt-get install -y --no-install-recommends libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1" in text
    assert "no known Debian package for: libweird-thing.so.7" in text
    assert not any("install" in c for c in fs.calls)  # nothing run but ldd / apt-cache


def test_root_on_debian_installs_and_checks_again(tmp_path):
    fs = FakeSystem(tmp_path)
    code, text = _main(fs, os_release=UBUNTU, euid=0)
    install = [c for c in fs.calls if "install" in c]
    assert install == [["apt-get", "install", "-y", "--no-install-recommends", "libxcb-cursor0",
                        "libxcb-icccm4", "libxcb-keysyms1"]]
    assert "installing with apt-get: libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1" in text
    assert code == 1 and "still missing after installing: libweird-thing.so.7" in text


def test_root_install_without_unknowns_succeeds(tmp_path):
    fs = FakeSystem(tmp_path, unknown_lib=False)
    code, text = _main(fs, euid=0)
    assert code == 0 and "installed; the Qt platform libraries are complete" in text
    assert [c[-1] for c in fs.calls if "install" in c] == ["libxcb-keysyms1"]


def test_failed_apt_prints_the_command(tmp_path):
    fs = FakeSystem(tmp_path, apt_ok=False)
    code, text = _main(fs, euid=0)
    assert code == 1 and "apt-get failed (exit 100); run: apt-get install -y" in text


def test_no_install_flag_and_other_systems(tmp_path):
    fs = FakeSystem(tmp_path)
    code, text = _main(fs, euid=0, argv=["--no-install"])
    assert code == 1 and "    apt-get install -y --no-install-recommends libxcb-cursor0" in text
    assert not any("install" in c for c in fs.calls)
    code, text = _main(FakeSystem(tmp_path), os_release=FEDORA, euid=0)
    assert code == 1 and "on other systems install the packages that provide the libraries" in text


def test_nothing_missing_is_silent(tmp_path):
    fs = FakeSystem(tmp_path, unknown_lib=False)
    fs.installed = {"libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1"}
    assert _main(fs) == (0, "")


def test_no_ldd_or_another_platform_means_nothing_to_check(tmp_path, monkeypatch):
    fs = FakeSystem(tmp_path)
    assert _main(fs, which=lambda name: None) == (0, "")
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert _main(fs) == (0, "")
    assert fs.calls == []


def test_is_debian():
    assert qtdeps.is_debian(DEBIAN) and qtdeps.is_debian(UBUNTU) and not qtdeps.is_debian(FEDORA)
    assert not qtdeps.is_debian("")


def test_real_plugin_is_found_without_importing_qt():
    """A missing system library makes importing Qt abort, so the check must not import it."""
    import sys

    code = ("import sys; from app import qtdeps; p = qtdeps.xcb_plugin(); "
            "assert p is not None and p.name == 'libqxcb.so' and p.is_file(), p; "
            "assert not [m for m in sys.modules if m.startswith('PyQt6.')], sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
