"""Native build for pyengine.

Packages: `pyengine` plus the Triton/Pallas sources in `kernels/`, installed as `pyengine.kernels`
(never as a top-level `kernels` package: that name belongs to another project on PyPI).

Extension: `pyengine._C` is built from `csrc/` only when torch is importable in the *build* environment
and C++ sources exist. Build against the torch already installed (`pip install --no-build-isolation`),
otherwise pip's isolation would fetch a second, multi-GB torch. Without torch nothing native is built
and every op runs on its native (framework) implementation.
"""

from __future__ import annotations

import glob
import os

from setuptools import find_packages, setup

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
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:  # no torch in the build environment: pure-Python install
        return [], {}
    # Cap parallel compile jobs by memory, as flash-attn does: each C++ TU with torch headers needs ~1.5 GB.
    os.environ.setdefault("MAX_JOBS", "2")
    ext = CppExtension(
        "pyengine._C",
        sources,
        include_dirs=[os.path.join(ROOT, "csrc", "include")],
        extra_compile_args=["-O3", "-march=native", "-fopenmp"],
        extra_link_args=["-fopenmp"],
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


kernel_packages, kernel_dirs = _kernel_packages()
ext_modules, cmdclass = _extensions()
setup(
    packages=find_packages(include=["pyengine", "pyengine.*"]) + kernel_packages,
    package_dir={"": ".", **kernel_dirs},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
