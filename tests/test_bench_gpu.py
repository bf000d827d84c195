"""benchmarks/bench_gpu.py runs at CI size on a CPU under KERAS_BACKEND=jax and prints the three
rates (model alone, loader alone, end to end) and the loader's scaling (issue 25 item 6).
Research use only - not a medical device."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# about a minute of CPU under JAX: out of the default run; .ci/run runs it with the slow backend tests
@pytest.mark.slow
def test_bench_gpu_tiny_prints_the_three_rates():
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--tiny", "--tasks", "2.1",
                           "--in-graph", "always"],
                          capture_output=True, text=True, timeout=900, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line and " " not in line.split("=")[0])
    assert out["backend"] == "jax"
    for key in ("model_alone_images_per_s", "loader_alone_images_per_s", "end_to_end_images_per_s"):
        assert float(out[f"2.1.{key}"]) > 0, key
    ratio = float(out["2.1.end_to_end_over_model_alone"])
    assert ratio > 0 and "2.1.in_graph_augmentation" in out
    assert float(out["2.1.in_graph_end_to_end_images_per_s"]) > 0
    assert float(out["2.1.in_graph_max_abs_diff_vs_cpu"]) < 1e-4
    assert any(re.fullmatch(r"loader_scaling\.workers_\d+", k) for k in out)
    assert "not a medical device" in proc.stdout
