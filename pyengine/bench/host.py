"""Engine hosts: one engine, timed where it runs, either in this process or in its own worker process.

A worker process per engine (the default) keeps engines from sharing thread pools, allocators and peak
RSS, and sets the thread count once at start (MKL does not bring a thread back after
`set_num_threads(1)`; see peer-baselines.md). The parent only sends prompts and receives timings, so the
pipe is outside the timed region.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from typing import Any

import numpy as np

from pyengine.bench import timing
from pyengine.bench.engines import EngineUnavailable, make_engine
from pyengine.bench.models import ModelSpec


class EngineHost:
    """Owns one engine; every method returns plain data so it can sit behind a pipe."""

    def __init__(self, name: str, spec: dict, threads: int, framework: str) -> None:
        _set_threads(threads)
        self.engine = make_engine(name, ModelSpec(**spec), threads, framework)

    def load(self) -> float:
        t0 = time.perf_counter()
        self.engine.load()
        return time.perf_counter() - t0

    def describe(self) -> dict[str, Any]:
        e = self.engine
        return {"framework": e.framework, "backend": e.backend, "impl": e.impl(), "quantized": e.quantized,
                "weights": e.weights()}

    def unsupported(self, strategy: str, batch: int) -> str | None:
        return self.engine.unsupported(strategy, batch)

    def reset_rss(self) -> None:
        timing.reset_peak_rss()

    def peak_rss_mb(self) -> float:
        return timing.peak_rss_mb()

    def run(self, prompts: np.ndarray, strategy: str, new_tokens: int, seed: int) -> tuple[float, float | None]:
        """One timed generate call; checks that exactly `new_tokens` ids came back per row."""
        sample, out = timing.timed_call(lambda: self.engine.generate(prompts, strategy, new_tokens, seed))
        if out.shape != (prompts.shape[0], new_tokens):
            raise RuntimeError(f"{self.engine.name} returned new ids of shape {out.shape}, "
                               f"expected {(prompts.shape[0], new_tokens)}: the engines would not do equal work")
        return sample.seconds, sample.foreign_cpu

    def close(self) -> None:
        self.engine = None


def _set_threads(threads: int) -> None:
    try:
        import torch
    except ImportError:
        return
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _worker_env(threads: int) -> dict[str, str]:
    """Environment for a worker: thread pools sized before any library starts them, no TF/Flax in PT runs."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "USE_TF": "0", "USE_FLAX": "0",
            "TF_CPP_MIN_LOG_LEVEL": "2", "TOKENIZERS_PARALLELISM": "false"}


def _serve(conn: Any, name: str, spec: dict, threads: int, framework: str) -> None:
    """Worker main loop: build the host, then answer (method, args) calls until 'close'."""
    os.environ.update(_worker_env(threads))
    if name in ("transformers-tf", "transformers-flax"):  # these need their framework visible
        os.environ.pop("USE_TF" if name.endswith("tf") else "USE_FLAX")
    try:
        host = EngineHost(name, spec, threads, framework)
    except Exception as err:  # noqa: BLE001 - reported to the parent, which records a skip note
        conn.send(("unavailable" if isinstance(err, EngineUnavailable) else "error", _describe(err)))
        return
    conn.send(("ok", None))
    while True:
        method, args = conn.recv()
        try:
            conn.send(("ok", getattr(host, method)(*args)))
        except Exception as err:  # noqa: BLE001
            conn.send(("error", _describe(err)))
        if method == "close":
            return


def _describe(err: BaseException) -> str:
    if isinstance(err, EngineUnavailable):
        return str(err)
    return f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=4)}"


class WorkerHost:
    """The same methods as EngineHost, served by a spawned process (spawn: no forked torch thread pools)."""

    def __init__(self, name: str, spec: dict, threads: int, framework: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, name, spec, threads, framework), daemon=True)
        self.proc.start()
        child.close()
        status, message = self._recv()
        if status == "unavailable":
            raise EngineUnavailable(message)
        if status != "ok":
            raise EngineUnavailable(f"failed to start: {message}")

    def _recv(self) -> tuple[str, Any]:
        try:
            return self.conn.recv()
        except EOFError:
            self.proc.join(5)
            return "error", f"worker process died (exit code {self.proc.exitcode})"

    def _call(self, method: str, *args: Any) -> Any:
        self.conn.send((method, args))
        status, value = self._recv()
        if status != "ok":
            raise RuntimeError(value)
        return value

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_") or method in ("conn", "proc"):
            raise AttributeError(method)
        return lambda *args: self._call(method, *args)

    def close(self) -> None:
        if self.proc.is_alive():
            try:
                self._call("close")
            except (RuntimeError, OSError):
                pass
            self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()


def start_host(name: str, spec: ModelSpec, threads: int, framework: str, isolate: bool) -> Any:
    """An EngineHost (in process) or a WorkerHost (own process); raises EngineUnavailable to skip."""
    if isolate:
        return WorkerHost(name, spec.to_dict(), threads, framework)
    return EngineHost(name, spec.to_dict(), threads, framework)
