"""Architecture checks as tests: import hygiene and package layout."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
FRAMEWORKS = ("torch", "tensorflow", "jax", "flax", "triton")


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout


def test_import_pyengine_imports_no_framework():
    out = _run(
        "import sys, pyengine; from pyengine import GenerationConfig, PretrainedConfig; "
        "import pyengine.engine.loop, pyengine.engine.plan, pyengine.ops.sampling, pyengine.checkpoints; "
        f"print([m for m in {FRAMEWORKS!r} if m in sys.modules])"
    )
    assert out.strip() == "[]", f"frameworks imported by `import pyengine`: {out}"


def test_engine_and_ops_never_import_a_framework():
    """Static check: no module under pyengine/engine or pyengine/ops names a framework in an import."""
    offenders = []
    for folder in ("pyengine/engine", "pyengine/ops"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in FRAMEWORKS]
    assert not offenders, offenders


def test_kernels_install_as_pyengine_kernels():
    out = _run("import pyengine.kernels, pyengine.kernels.triton; print(pyengine.kernels.__name__)")
    assert out.strip() == "pyengine.kernels"
    assert not (ROOT / "pyengine" / "kernels").exists(), "kernels/ must stay at the top level, mapped by setup.py"


def test_lazy_public_names_resolve():
    import pyengine

    for name in pyengine.__all__:
        assert getattr(pyengine, name) is not None, name
