"""Native build for pyengine.

Packages: `pyengine` plus the Triton/Pallas sources in `kernels/`, installed as `pyengine.kernels`
(never as a top-level `kernels` package: that name belongs to another project on PyPI).

Extensions: `pyengine._C` is built from `csrc/` only when torch is importable in the *build* environment
and C++ sources exist; the CUDA sources `csrc/cuda/*.cu` join it when a CUDA toolkit and a CUDA build of
torch are both present. Build against the torch already installed (`pip install --no-build-isolation`),
otherwise pip's isolation would fetch a second, multi-GB torch. Without torch nothing native is built
and every op runs on its native (framework) implementation.
`pyengine._xla` (csrc/xla/, framework-free C ABI loaded with ctypes) carries the XLA custom-call targets
TensorFlow's and JAX's compiled paths call; it needs no torch and is built whenever a compiler is there.
"""

from __future__ import annotations

import glob
import os

from setuptools import Extension, find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _kernel_packages() -> tuple[list[str], dict[str, str]]:
    packages, package_dir = [], {}
    for dirpath, _, files in os.walk(os.path.join(ROOT, "kernels")):
        if "__init__.py" not in files:
            continue
        rel = os.path.relpath(dirpath, ROOT)
        name = "pyengine." + rel.replace(os.sep, ".")
        packages.append(name)
        package_dir[name] = rel
    return packages, package_dir


def _extensions() -> tuple[list, dict]:
    if os.environ.get("PYENGINE_SKIP_NATIVE_BUILD") == "1":
        return [], {}
    sources = sorted(glob.glob(os.path.join("csrc", "torch", "cpu", "*.cpp")))
    sources += sorted(glob.glob(os.path.join("csrc", "torch", "*.cpp")))
    if not sources:
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:  # no torch in the build environment: pure-Python install
        return [], {}
    # Cap parallel compile jobs by memory, as flash-attn does: each C++ TU with torch headers needs ~1.5 GB.
    os.environ.setdefault("MAX_JOBS", "2")
    cxx_flags = ["-O3", "-march=native", "-fopenmp"]
    # CUDA sources (csrc/cuda/*.cu) only with a CUDA toolkit AND a CUDA build of torch; PYENGINE_SKIP_CUDA_BUILD=1 opts out.
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    use_cuda = bool(cuda_sources) and CUDA_HOME is not None and torch.version.cuda is not None
    use_cuda = use_cuda and os.environ.get("PYENGINE_SKIP_CUDA_BUILD") != "1"
    ext = (CUDAExtension if use_cuda else CppExtension)(
        "pyengine._C",
        sources + (cuda_sources if use_cuda else []),
        include_dirs=[os.path.join(ROOT, "csrc", "include")],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-lineinfo"]} if use_cuda else cxx_flags,
        extra_link_args=["-fopenmp"],
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


def _xla_extension() -> list:
    """`pyengine._xla`: the XLA custom-call targets over csrc/include (no torch, no XLA headers)."""
    sources = sorted(glob.glob(os.path.join("csrc", "xla", "*.cpp")))
    if not sources or os.environ.get("PYENGINE_SKIP_NATIVE_BUILD") == "1":
        return []
    return [Extension("pyengine._xla", sources, include_dirs=[os.path.join(ROOT, "csrc", "include")],
                      extra_compile_args=["-O3", "-march=native", "-fopenmp", "-std=c++17"],
                      extra_link_args=["-fopenmp", "-ldl"], language="c++")]


kernel_packages, kernel_dirs = _kernel_packages()
ext_modules, cmdclass = _extensions()
ext_modules = ext_modules + _xla_extension()
setup(
    packages=find_packages(include=["pyengine", "pyengine.*"]) + kernel_packages,
    package_dir={"": ".", **kernel_dirs},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
