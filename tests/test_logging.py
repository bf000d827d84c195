"""Logging: one set-up for the programs (prog: message on stderr, tracebacks in a log file),
and `mammo predict` on the bundled samples without TensorFlow's start-up or retracing noise."""
from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mammo_core import logsetup
from mammo_core.paths import models_dir, samples_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def restore_logging():
    yield
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "_mammo_handler", False)]:
        root.removeHandler(h)
        h.close()


def test_configure_prefixes_the_program_and_keeps_tracebacks_in_the_file(tmp_path,
                                                                         restore_logging):
    out = io.StringIO()
    logfile = tmp_path / "sub" / "run.log"
    assert logsetup.configure("mammo", log_file=logfile, stream=out) == logfile
    log = logging.getLogger("mammo_core.some_module")
    log.debug("chatter")
    log.info("wrote %s", "r.json")
    log.error("error: %s", "x.png: broken", extra={"details": "Traceback ...\nValueError: x"})
    assert out.getvalue().splitlines() == ["mammo: wrote r.json", "mammo: error: x.png: broken"]
    text = logfile.read_text(encoding="utf-8")
    assert "wrote r.json" in text and "ValueError: x" in text and "chatter" not in text
    # a second call replaces the handlers instead of adding more
    out2 = io.StringIO()
    assert logsetup.configure("mammo", stream=out2, level=logging.WARNING) is None
    log.info("quiet now")
    log.warning("loud")
    assert out2.getvalue() == "mammo: loud\n" and "quiet now" not in out.getvalue()


def test_an_unwritable_log_file_is_a_warning_not_a_crash(tmp_path, restore_logging):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = io.StringIO()
    assert logsetup.configure("mammo", log_file=blocker / "x.log", stream=out) is None
    assert "cannot write the log file" in out.getvalue() and str(blocker) in out.getvalue()


def test_default_stream_follows_sys_stderr(capsys, restore_logging):
    logsetup.configure("prog")
    logging.getLogger("mammo_core.x").warning("hello")
    assert capsys.readouterr().err == "prog: hello\n"


@pytest.mark.skipif(not any(models_dir().glob("*/card.json")) or not samples_dir().is_dir(),
                    reason="no bundled models or samples")
def test_predict_on_the_samples_prints_no_tensorflow_noise(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the CLI sets it
    env["PYTHONPATH"] = str(REPO)
    out = tmp_path / "r.json"
    res = subprocess.run([sys.executable, "-m", "mammo_core", "predict", str(samples_dir()),
                          "--no-progress", "-o", str(out)],
                         capture_output=True, text=True, check=False, timeout=600, env=env,
                         cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"mammo: wrote {out} ("), res.stderr[-3000:]
    assert out.is_file()
