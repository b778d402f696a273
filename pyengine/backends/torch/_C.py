"""Loads the native extension `pyengine._C` once, and remembers why when it cannot.

Order (FlashInfer's): the installed extension (`pip install --no-build-isolation -e .` builds it); else,
only when PYENGINE_JIT=1, a cached JIT build from the source tree's `csrc/`: look in the cache, take a
file lock, look again (another process may have built it meanwhile), build with ninja. Nothing here runs
at `import pyengine`; the first `available()` call (op selection) does the work, and a failure only
makes the `cpp` implementations unavailable, with the reason.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import pathlib
import sys
from types import ModuleType

from pyengine.utils import env

ROOT = pathlib.Path(__file__).resolve().parents[3]
JIT_NAME = "pyengine_jit_C"
_state: dict[str, object] = {}


def available() -> str | None:
    """None when the C++ ops are registered in torch.ops.pyengine, else the reason they are not."""
    if "reason" not in _state:
        _state["reason"] = _load()
    return _state["reason"]  # type: ignore[return-value]


def module() -> ModuleType | None:
    """The loaded pybind11 module (build info), or None."""
    available()
    return _state.get("module")  # type: ignore[return-value]


def build_info() -> dict:
    """Compiled ISA extensions, OpenMP and compiler of the loaded extension ({} when none)."""
    mod = module()
    return dict(mod.build_info()) if mod is not None else {}


def _load() -> str | None:
    try:
        import torch  # noqa: F401  (libtorch must be loaded before the extension)
    except ImportError:
        return "torch is not installed"
    try:
        from pyengine import _C as mod  # type: ignore[attr-defined]
    except ImportError as err:
        reason = f"pyengine._C is not built ({err}); rebuild with `pip install --no-build-isolation -e .`"
        if not env.jit():
            return reason + " or set PYENGINE_JIT=1"
        try:
            mod = _jit_build()
        except Exception as jit_err:  # a compiler error must not break the package, only this impl
            return f"{reason}; the PYENGINE_JIT build failed: {type(jit_err).__name__}: {jit_err}"
    _state["module"] = mod
    from pyengine.backends.torch import cpp

    cpp.register_fakes()
    return None


def _sources() -> list[pathlib.Path]:
    csrc = ROOT / "csrc"
    found = sorted((csrc / "torch" / "cpu").glob("*.cpp")) + sorted((csrc / "torch").glob("*.cpp"))
    if not found:
        raise FileNotFoundError(f"no C++ sources under {csrc} (the JIT build needs a source checkout)")
    return found


def _build_dir(sources: list[pathlib.Path]) -> pathlib.Path:
    """~/.cache/pyengine/jit/<key>: the key covers sources, headers, torch and Python versions."""
    import torch

    digest = hashlib.sha256(f"{torch.__version__} {sys.version}".encode())
    for path in sources + sorted((ROOT / "csrc" / "include").rglob("*.h")) + sorted((ROOT / "csrc").rglob("*/cpu/*.h")):
        digest.update(path.read_bytes())
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
    return cache / "pyengine" / "jit" / digest.hexdigest()[:16]


def _import_built(build_dir: pathlib.Path) -> ModuleType | None:
    found = sorted(build_dir.glob(f"{JIT_NAME}*.so"))
    if not found:
        return None
    spec = importlib.util.spec_from_file_location(JIT_NAME, found[0])
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _jit_build() -> ModuleType:
    sources = _sources()
    build_dir = _build_dir(sources)
    mod = _import_built(build_dir)
    if mod is not None:
        return mod
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the others wait, then find its result
        mod = _import_built(build_dir)
        if mod is not None:
            return mod
        from torch.utils import cpp_extension

        return cpp_extension.load(
            name=JIT_NAME,
            sources=[str(s) for s in sources],
            extra_include_paths=[str(ROOT / "csrc" / "include")],
            extra_cflags=["-O3", "-march=native", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir),
            is_python_module=True,
        )
