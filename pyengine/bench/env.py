"""The environment a benchmark ran in: device, CPU model and flags, threads, package versions, git commit.

Every record carries this so that numbers are only ever compared within one machine and one build
(STYLE.md section 7).
"""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import platform
import subprocess
import sys

# The ISA features that decide which kernels a library can use; the full /proc/cpuinfo list is ~150 words.
_INTERESTING_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                      "avx512_bf16", "avx512vbmi", "avx_vnni", "amx_tile", "amx_bf16", "sse4_2")  # fmt: skip
# Distribution names of the packages whose versions change the figures.
PACKAGES = ("torch", "transformers", "numpy", "ctranslate2", "llama_cpp_python", "tensorflow", "jax", "flax",
            "matplotlib", "pyengine")  # fmt: skip
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    for line in _cpuinfo_lines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The subset of CPU flags that matters for vectorized kernels, sorted."""
    for line in _cpuinfo_lines():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return sorted(f for f in _INTERESTING_FLAGS if f in present)
    return []


def _cpuinfo_lines() -> list[str]:
    try:
        return pathlib.Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def device() -> str:
    """'cpu' with the core count, or the CUDA device name when torch sees one."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"cpu ({os.cpu_count()} cores)"


def versions() -> dict[str, str | None]:
    """Installed versions (None when absent), read from package metadata so nothing heavy is imported."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def commit() -> str:
    """Short git commit of the repository, with '-dirty' when the tree has local changes."""
    try:
        sha = _git("rev-parse", "--short", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO_ROOT, check=True).stdout.strip()


def environment() -> dict[str, object]:
    """The fields every record shares (threads are per record: they are a benchmark parameter)."""
    return {
        "device": device(),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "versions": versions(),
        "commit": commit(),
        "platform": f"{platform.system()} {platform.release()}",
        "executable": sys.executable,
    }
