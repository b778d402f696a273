"""The CUDA device code compiles: tools/check_cuda.sh (nvcc -c, no GPU, no torch headers) where nvcc exists.

The torch launchers (csrc/cuda/*.cu) compile with `tools/check_cuda.sh --launchers` (minutes; not run here).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which(os.environ.get("NVCC", "nvcc")) is None, reason="nvcc not found: no CUDA toolkit here")
def test_device_code_compiles_with_nvcc():
    env = dict(os.environ, CUDA_ARCHS="90", CUDA_CHECK_PTX_ONLY="1")
    run = subprocess.run(["bash", str(ROOT / "tools" / "check_cuda.sh")], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, f"nvcc failed:\n{run.stdout}\n{run.stderr[-4000:]}"
    assert "device code OK" in run.stdout


def test_check_script_reports_a_missing_nvcc():
    env = dict(os.environ, NVCC="/nonexistent/nvcc")
    run = subprocess.run(["bash", str(ROOT / "tools" / "check_cuda.sh")], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 2 and "nvcc not found" in run.stderr
