"""Beam search for one request inside the batch engine: the engine's own `run_beam`, driven step by step.

`pyengine.engine.beam_search.run_beam` is the one beam algorithm (transformers 4.57's vectorised beam
search and beam sampling). It is a loop that owns its state and pulls logits through `step_fn(history)`.
The batch engine must instead push logits when the request's K beams come out of a shared forward. So
`BeamDriver` runs `run_beam` in a helper thread used as a coroutine: `step_fn` hands the beams' history
to the engine and blocks until the engine sends their logits back. Only one of the two threads runs at a
time (every hand-off waits on the other), so the results are exactly `generate(num_beams=K)`'s for the
same prompt: same processors, same top-2K, same stopping, same finished-hypothesis bookkeeping.

Protocol, seen from the engine:

1. `driver.start()` -> ("step", history [K, S], None): the prompt's K (identical) rows.
2. `driver.send(logits [K, V])` -> ("step", history [K, cur+1], src [K]): beam k continues beam `src[k]`
   (the KV cache is reordered to it) and `history[k]` is its token ids so far; or ("done", BeamResult).
3. `driver.cancel()` ends the thread early (the caller stopped consuming results).
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import torch

from pyengine.backends.torch.backend import TorchBackend
from pyengine.engine.beam_search import run_beam
from pyengine.engine.plan import DecodePlan


class _Cancelled(Exception):
    """Raised inside the helper thread when the engine cancels the request."""


class BeamDriver:
    """Runs `run_beam` for one prompt one step at a time (see the module docstring).

    Args:
        plan: the request's DecodePlan (built with `num_beams`).
        backend: the torch backend the beam bookkeeping runs on.
        prompt_ids: the prompt's token ids (S of them).
        num_beams, num_return_sequences, length_penalty, early_stopping: as in `generate()`.
        generator: beam sampling draws from it (None: beam search, or torch's global generator).
    """

    def __init__(
        self,
        plan: DecodePlan,
        backend: TorchBackend,
        prompt_ids: list[int],
        *,
        num_beams: int,
        num_return_sequences: int,
        length_penalty: float,
        early_stopping: bool | str,
        generator: torch.Generator | None = None,
    ) -> None:
        self.num_beams = num_beams
        prompt = torch.tensor([prompt_ids], dtype=torch.long).repeat_interleave(num_beams, 0)  # [K, S]
        kwargs = dict(num_beams=num_beams, num_return_sequences=num_return_sequences,
                      length_penalty=length_penalty, early_stopping=early_stopping, rng=generator)  # fmt: skip
        self._to_engine: queue.Queue[tuple[str, Any, Any]] = queue.Queue(maxsize=1)
        self._to_beam: queue.Queue[torch.Tensor | None] = queue.Queue(maxsize=1)
        self._src: list[int] | None = None
        self._thread = threading.Thread(
            target=self._main, args=(plan, backend, prompt, kwargs), name="pyengine-beam", daemon=True
        )
        self.started = self.finished = False

    def start(self) -> tuple[str, Any, Any]:
        """Start the helper thread (call it when the request is admitted: a thread per running request)."""
        self.started = True
        self._thread.start()
        return self._receive()

    def send(self, logits: torch.Tensor) -> tuple[str, Any, Any]:
        """The K beams' next-token logits `[K, V]` (float32); returns the next message (see the protocol)."""
        self._to_beam.put(logits)
        return self._receive()

    def cancel(self) -> None:
        if self.started and self._thread.is_alive() and not self.finished:
            self._to_beam.put(None)
            self._thread.join()
        self.finished = True

    # -- the helper thread ------------------------------------------------------------------------------------
    def _receive(self) -> tuple[str, Any, Any]:
        kind, payload, src = self._to_engine.get()
        if kind == "error":
            self.finished = True
            raise payload
        if kind == "done":
            self.finished = True
            self._thread.join()
        return kind, payload, src

    def _main(self, plan: DecodePlan, backend: TorchBackend, prompt: torch.Tensor, kwargs: dict) -> None:
        try:
            with torch.no_grad():  # grad mode is per thread
                result = run_beam(plan, self._step, backend, prompt, reorder=self._reorder, **kwargs)
        except _Cancelled:
            return
        except BaseException as err:  # re-raised in the engine's thread
            self._to_engine.put(("error", err, None))
            return
        self._to_engine.put(("done", result, None))

    def _step(self, history: torch.Tensor) -> torch.Tensor:
        self._to_engine.put(("step", history, self._src))
        logits = self._to_beam.get()
        if logits is None:
            raise _Cancelled
        return logits

    def _reorder(self, src: torch.Tensor) -> None:
        self._src = [int(i) for i in src.tolist()]  # [K] flat rows; one request, so beam ids
