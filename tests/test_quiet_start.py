"""The viewer keeps TensorFlow's start-up noise out of the terminal: native writes to file
descriptor 2 and records of TensorFlow's / Keras' loggers and Python warnings go to the log
file, the viewer's own messages still reach the terminal."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_native_noise_and_tf_loggers_go_to_the_log_file(tmp_path):
    log = tmp_path / "data" / "viewer.log"
    code = textwrap.dedent(f"""
        import ctypes, logging, os, sys, warnings
        from mammo_core import logsetup
        from app.main import QUIET_LOGGERS
        logsetup.configure("mammo-viewer", verbose=True, log_file={str(log)!r}, quiet=QUIET_LOGGERS)
        logging.captureWarnings(True)
        assert logsetup.divert_native_stderr({str(log)!r})
        os.write(2, b"E0000 cuda_executor.cc failed call to cuInit: UNKNOWN ERROR (303)\\n")
        libc = ctypes.CDLL(None)
        libc.fflush(None)
        logging.getLogger("tensorflow").warning("5 out of the last 5 calls triggered tf.function retracing")
        warnings.warn("The structure of `inputs` doesn't match the expected structure.")
        logging.getLogger("mammo-viewer").warning("patch.png: cannot read")
        print("own line on stderr", file=sys.stderr)
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), QT_QPA_PLATFORM="offscreen")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=60, cwd=str(tmp_path), check=False)
    assert res.returncode == 0, res.stderr
    for noise in ("cuInit", "retracing", "structure of `inputs`"):
        assert noise not in res.stderr, res.stderr
        assert noise in log.read_text(encoding="utf-8")
    assert "mammo-viewer: patch.png: cannot read" in res.stderr
    assert "own line on stderr" in res.stderr


def test_divert_fails_cleanly_on_an_unwritable_log(tmp_path):
    from mammo_core import logsetup

    blocker = tmp_path / "file"
    blocker.write_text("x")
    before = sys.stderr
    assert logsetup.divert_native_stderr(blocker / "sub" / "viewer.log") is False
    assert sys.stderr is before
