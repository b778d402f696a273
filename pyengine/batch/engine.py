"""BatchGenerator: continuous batching over a paged KV cache, with `generate()`'s per-request semantics.

Each step (see `scheduler.py` for the policy):

1. The scheduler admits waiting requests, reserves KV slots (preempting when blocks run out) and picks
   the prefill chunks plus the decode rows.
2. The model runs the prefill pass (left-padded chunks of one or more sequences) and the decode pass
   (every decoding sequence, one token each) with a `PagedKVView` as `past_key_values`, its attention
   mask and explicit position ids.
3. Each sequence that got next-token logits chooses a token with its own `RequestSampler` (plain greedy
   rows share one batched argmax).
4. Finished sequences (EOS, `max_new_tokens`, a stop string) free their blocks at once; a request whose
   sequences are all done is yielded.

Beam search (`num_beams=K`): the prompt is prefilled once; its K beams are K rows of the decode pass. When
all K have their logits, the request's `BeamDriver` (the engine's `run_beam`, step by step) picks the next
beams, and the cache is reordered by block sharing: beam k takes a share of beam src[k]'s blocks (refcounts,
no copy); the first write into a still-shared tail block copies that one block (copy-on-write).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from pyengine.backends.torch.backend import TorchBackend
from pyengine.batch.beam import BeamDriver
from pyengine.batch.paged_cache import PagedKVCache, PagedKVView, blocks_for_budget
from pyengine.batch.request import BatchStats, Completion, Request, Result
from pyengine.batch.sampling import RequestSampler
from pyengine.batch.scheduler import Scheduler, Sequence
from pyengine.engine.plan import build_plan
from pyengine.generation.step import takes_top_logits

DEFAULT_MAX_NEW_TOKENS = 20  # transformers' model-agnostic default (max_length 20) read as new tokens


@dataclass
class _RequestState:
    """Per-request bookkeeping: the resolved limits and the completions gathered so far."""

    request: Request
    result: Result
    max_new_tokens: int
    eos_token_ids: tuple[int, ...]
    plan: Any
    open_sequences: int = 0
    completions: dict[int, Completion] = field(default_factory=dict)
    config: Any = None  # the resolved GenerationConfig
    beam: BeamDriver | None = None  # beam search: the request's run_beam, step by step
    beam_seqs: list[Sequence] = field(default_factory=list)  # its live beams, beam k at index k
    beam_logits: dict[int, torch.Tensor] = field(default_factory=dict)  # beam k -> logits [V] this round


@dataclass
class _SeqState:
    """What the engine keeps per sequence next to the scheduler's `Sequence`."""

    req: _RequestState
    sampler: RequestSampler
    sample_index: int = 0


class BatchGenerator:
    """High-throughput generation for many requests: continuous batching and a paged KV cache.

    Args:
        model: a pyengine causal LM (GPT-2, LLaMA families): `num_layers`, `num_kv_heads`, `head_dim`.
        tokenizer: needed for text prompts, completion text and stop strings.
        max_batch_size: most sequences decoding together.
        kv_cache_bytes: memory budget of the block pool (keys + values, every layer); or pass `num_blocks`.
        num_blocks: pool size in blocks (overrides `kv_cache_bytes`).
        block_size: token slots per block.
        prefill_chunk: most prompt tokens fed in one forward (long prompts interleave with decodes).
        enable_prefix_sharing: identical leading full blocks of prompts are computed once.
        paged_attention: models that delegate attention to the cache (`attend`) read keys/values through
            the block tables with the `paged_attention` op; False gathers them per layer (the reference path).
        packed_prefill: a prefill pass feeds its prompt chunks as one row of concatenated tokens, so the
            projections and MLP compute no padding (the attention layer must delegate to the cache's
            `attend`, as GPT-2 and LLaMA do); False left-pads the chunks into a batch.

    Example:
        >>> gen = BatchGenerator(model, tok, max_batch_size=16, kv_cache_bytes=256 << 20)
        >>> for result in gen.generate([Request("Hello", max_new_tokens=8), Request("Hi", do_sample=True)]):
        ...     print(result.id, result.text)
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        max_batch_size: int = 64,
        kv_cache_bytes: int = 512 << 20,
        num_blocks: int | None = None,
        block_size: int = 16,
        prefill_chunk: int = 512,
        enable_prefix_sharing: bool = True,
        paged_attention: bool = True,
        packed_prefill: bool = True,
    ) -> None:
        if getattr(model.config, "is_encoder_decoder", False):
            raise ValueError(
                "BatchGenerator runs decoder-only models; encoder-decoder models use generate()."
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        geometry = (model.num_layers, model.num_kv_heads, model.head_dim)
        if num_blocks is None:
            num_blocks = blocks_for_budget(kv_cache_bytes, *geometry, block_size, model.dtype)
        self.cache = PagedKVCache(
            *geometry, num_blocks=num_blocks, block_size=block_size, dtype=model.dtype, device=model.device,
            enable_prefix_sharing=enable_prefix_sharing,
        )  # fmt: skip
        self.max_batch_size = max_batch_size
        self.paged_attention = paged_attention
        self.packed_prefill = packed_prefill
        self.scheduler = Scheduler(self.cache, max_batch_size, prefill_chunk, packed=packed_prefill)
        self.ops = TorchBackend(model.device).ops
        self.screens_head = takes_top_logits(model)  # decode passes may ask for the top logits only
        self.stats = BatchStats()
        self._ids = itertools.count()

    @property
    def capacity_tokens(self) -> int:
        return self.cache.num_blocks * self.cache.block_size

    # -- public API -----------------------------------------------------------------------------------------
    def run(self, requests: Iterable[Request | str | list[int]]) -> list[Result]:
        """Generate for every request; results in input order."""
        return sorted(self.generate(requests), key=lambda r: r.index)

    @torch.no_grad()
    def generate(
        self,
        requests: Iterable[Request | str | list[int]],
        on_step: Callable[[BatchStats], None] | None = None,
    ) -> Iterator[Result]:
        """Generate for every request, yielding each result as soon as its request finishes.

        Every request is validated (and tokenized) before the first forward, so a bad one fails fast.
        `on_step(stats)` is called after every engine step (progress bars).
        """
        states = [self._resolve(r, i) for i, r in enumerate(requests)]
        self.stats = BatchStats(requests=len(states), kv_blocks=self.cache.num_blocks,
                                kv_block_size=self.cache.block_size)  # fmt: skip
        start = time.perf_counter()
        self._start = start
        prefix_hits, preemptions = self.cache.prefix_hit_tokens, self.scheduler.num_preemptions
        try:
            for state in states:
                done = self._submit(state)
                if done is not None:
                    yield done
            while self.scheduler.has_work:
                finished = self._step()
                self.stats.seconds = time.perf_counter() - start
                self.stats.preemptions = self.scheduler.num_preemptions - preemptions
                self.stats.prefix_hit_tokens = self.cache.prefix_hit_tokens - prefix_hits
                if on_step is not None:
                    on_step(self.stats)
                yield from finished
        finally:  # the caller stopped early or a step raised: leave no sequence holding blocks
            for state in states:
                if state.beam is not None:
                    state.beam.cancel()
            self.scheduler.abort()

    def _submit(self, state: _RequestState) -> Result | None:
        """Queue a request's first sequence; a request with nothing to generate is finished on arrival."""
        self.stats.prompt_tokens += len(state.result.prompt_ids)
        if state.max_new_tokens == 0:
            state.result.completions = [Completion([], "" if self.tokenizer else None, "length")]
            return self._finish_request(state)
        fan_out = state.request.num_return_sequences
        if state.config.num_beams > 1:
            state.beam = self._beam_driver(state)  # its thread starts with the prompt's logits
            fan_out = state.config.num_beams
        seq = Sequence(next(self._ids), list(state.result.prompt_ids), fan_out=fan_out)
        seq.owner = _SeqState(state, RequestSampler(state.plan, self.ops, state.request.seed))
        state.beam_seqs = [seq]
        state.open_sequences = 1
        self.scheduler.add(seq)
        return None

    def validate(self, request: Request | str | list[int]) -> None:
        """Raise ValueError if `request` cannot run (bad parameters, prompt + new tokens over budget)."""
        self._resolve(request, 0, "request")

    # -- one step -------------------------------------------------------------------------------------------
    def _step(self) -> list[Result]:
        batch = self.scheduler.schedule()
        if batch.empty:
            raise RuntimeError(
                "the scheduler found nothing to run; the KV pool is too small for the next request"
            )
        chosen: list[tuple[Sequence, torch.Tensor]] = []  # (sequence, its next-token logits [V])
        if batch.prefill:
            seqs = [seq for seq, _ in batch.prefill]
            logits = self._forward(seqs, [n for _, n in batch.prefill])
            chosen.extend((seq, row) for seq, row in zip(seqs, logits) if seq.pending == 0)
        if batch.decode:
            logits = self._forward(batch.decode, [1] * len(batch.decode))
            chosen.extend(zip(batch.decode, logits))
        self._record_step()
        return self._append_tokens(chosen)

    def _forward(self, seqs: list[Sequence], counts: list[int]) -> torch.Tensor:
        """Feed `counts[b]` uncomputed tokens of sequence b; next-token logits `[B, V]` in float32.

        Decode passes (one token each) and unpacked prefill passes are `[B, s]` inputs, left-padded with 0
        (pad columns are masked out). A packed prefill pass is one row `[1, sum(counts)]`.
        """
        packed = self.packed_prefill and max(counts) > 1
        view = PagedKVView(self.cache, [s.seq_id for s in seqs], counts, self.paged_attention, packed=packed)
        new = [s.tokens[s.num_computed : s.num_computed + n] for s, n in zip(seqs, counts)]
        device = self.model.device
        if packed:
            inputs = dict(input_ids=torch.tensor([[t for chunk in new for t in chunk]]), attention_mask=None,
                          position_ids=view.packed_position_ids, logits_to_keep=view.packed_last)  # fmt: skip
        else:
            width = view.num_new
            inputs = dict(input_ids=torch.tensor([[0] * (width - len(c)) + c for c in new]),
                          attention_mask=view.attention_mask, position_ids=view.position_ids, logits_to_keep=1)  # fmt: skip
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        top = self._top_logits(seqs) if max(counts) == 1 else None
        if top is not None:
            inputs["top_logits"] = top
        out = self.model(**inputs, past_key_values=view, use_cache=True, return_dict=True)
        for seq, n in zip(seqs, counts):
            seq.num_computed += n
            self.cache.commit(seq.seq_id, seq.tokens, seq.num_computed)
        logits = out.logits[0] if packed else out.logits[:, -1, :]  # [B, V]
        return logits.to(dtype=torch.float32, copy=True)  # as CausalLMStep

    def _top_logits(self, seqs: list[Sequence]) -> int | None:
        """How many top logits a decode pass needs (`plan.top_logits`): the most any of its requests needs, or None
        (every logit) when one of them needs them all."""
        widths = [seq.owner.req.plan.top_logits for seq in seqs]
        return None if not self.screens_head or None in widths else max(widths)

    def _append_tokens(self, chosen: list[tuple[Sequence, torch.Tensor]]) -> list[Result]:
        done: list[Result] = []
        for seq, logits in chosen:
            if seq.owner.req.beam is not None:
                done.extend(self._beam_logits(seq, logits))
        chosen = [(seq, logits) for seq, logits in chosen if seq.owner.req.beam is None]
        tokens = self._choose(chosen)
        for (seq, logits), token in zip(chosen, tokens):
            state: _SeqState = seq.owner
            if seq.fan_out > 1:  # prompt done: fork the other samples; they share its blocks
                done.extend(self._fork(seq, logits))
                seq.fan_out = 1
            if self._append(seq, token):
                done.extend(self._close(seq))
            elif state.req.result.ttft_s == 0.0:
                state.req.result.ttft_s = time.perf_counter() - self._start
        return done

    def _choose(self, chosen: list[tuple[Sequence, torch.Tensor]]) -> list[int]:
        """One token per sequence; plain greedy rows share one argmax (argmax is row-independent)."""
        out = [0] * len(chosen)
        plain = [i for i, (seq, _) in enumerate(chosen) if seq.owner.sampler.plain_greedy]
        if plain:
            logits = torch.stack([self._adjust(chosen[i][1], chosen[i][0]) for i in plain])  # [B', V]
            for i, token in zip(plain, self.ops.argmax(logits).tolist()):
                out[i] = token
        for i, (seq, logits) in enumerate(chosen):
            if not seq.owner.sampler.plain_greedy:
                out[i] = seq.owner.sampler.choose(self._adjust(logits, seq)[None], seq.tokens)
        return out

    def _adjust(self, logits: torch.Tensor, seq: Sequence) -> torch.Tensor:
        """The model's `adjust_logits_during_generation` hook, as generate() calls it."""
        return self.model.adjust_logits_during_generation(logits[None], cur_len=len(seq.tokens))[0]

    def _fork(self, parent: Sequence, logits: torch.Tensor) -> list[Result]:
        state: _SeqState = parent.owner
        done: list[Result] = []
        for i in range(1, parent.fan_out):
            child = Sequence(next(self._ids), list(parent.tokens), num_computed=parent.num_computed)
            seed = None if state.req.request.seed is None else state.req.request.seed + i
            child.owner = _SeqState(state.req, RequestSampler(state.req.plan, self.ops, seed), sample_index=i)
            self.cache.fork(parent.seq_id, child.seq_id)
            self.scheduler.add_running(child)
            state.req.open_sequences += 1
            token = child.owner.sampler.choose(self._adjust(logits, child)[None], child.tokens)
            if self._append(child, token):
                done.extend(self._close(child))
        return done

    # -- beam search ------------------------------------------------------------------------------------------
    def _beam_driver(self, state: _RequestState) -> BeamDriver:
        config, generator = state.config, None
        if config.do_sample:
            generator = torch.Generator()
            if state.request.seed is None:
                generator.seed()
            else:
                generator.manual_seed(state.request.seed)
        return BeamDriver(
            state.plan, TorchBackend(self.model.device), state.result.prompt_ids, num_beams=config.num_beams,
            num_return_sequences=state.request.num_return_sequences, length_penalty=config.length_penalty,
            early_stopping=config.early_stopping, generator=generator,
        )  # fmt: skip

    def _beam_logits(self, seq: Sequence, logits: torch.Tensor) -> list[Result]:
        """Keep one beam's logits; when every beam of the request has its logits, run one beam step."""
        req = seq.owner.req
        req.beam_logits[req.beam_seqs.index(seq)] = self._adjust(logits, seq)
        if len(req.beam_logits) < len(req.beam_seqs):
            return []
        rows = [req.beam_logits[k] for k in range(len(req.beam_seqs))]
        if len(rows) == 1:  # the prompt: generate() feeds it K times, every row gets the same logits
            rows = rows * req.config.num_beams
        req.beam_logits.clear()
        if not req.beam.started:
            req.beam.start()  # the first message is the prompt's K identical rows: nothing to do with it
        self.stats.new_tokens += 1
        kind, payload, src = req.beam.send(torch.stack(rows))  # [K, V]
        if kind == "done":
            return [self._finish_beams(req, payload)]
        if req.result.ttft_s == 0.0:
            req.result.ttft_s = time.perf_counter() - self._start
        self._reorder_beams(req, payload.tolist(), src)
        return []

    def _reorder_beams(self, req: _RequestState, history: list[list[int]], src: list[int]) -> None:
        """Beam k continues beam src[k] with token ids `history[k]`: it takes a share of that beam's blocks.

        Shares are taken before any old table is dropped, so blocks that survive stay put. A source beam that
        was preempted (its blocks freed while it waited for its siblings) has no blocks to share: beam k then
        waits to recompute its tokens as a prompt.
        """
        seqs = req.beam_seqs
        shares = [self.cache.share(seqs[j].seq_id) if seqs[j].seq_id in self.cache.seqs else None for j in src]
        for seq in seqs:
            if seq.seq_id in self.cache.seqs:
                self.cache.free_sequence(seq.seq_id)
        parent = seqs[0]
        while len(seqs) < len(src):  # the first step: the other beams are born
            child = Sequence(next(self._ids), [], owner=_SeqState(req, parent.owner.sampler, len(seqs)))
            seqs.append(child)
            req.open_sequences += 1
        parent.fan_out = 1
        for seq, tokens, blocks in zip(seqs, history, shares):
            seq.tokens = tokens
            if blocks is not None:
                self.cache.adopt(seq.seq_id, blocks)
                seq.num_computed = len(tokens) - 1
                self.scheduler.make_running(seq)
            else:
                seq.num_computed = 0
                self.scheduler.make_waiting(seq)

    def _finish_beams(self, req: _RequestState, result: Any) -> Result:
        """The best finished beams become the completions (as generate()'s rows, cut after EOS)."""
        for seq in req.beam_seqs:
            self.scheduler.drop(seq)
        prompt_len = len(req.result.prompt_ids)
        scores = result.sequences_scores.tolist()
        for i, row in enumerate(result.sequences.tolist()):
            new = row[prompt_len:]
            cut = next((j for j, t in enumerate(new) if t in req.eos_token_ids), None)
            new = new if cut is None else new[: cut + 1]
            reason = "length" if cut is None else "eos"
            text = self._decode(new) if self.tokenizer is not None else None
            req.completions[i] = Completion(new, text, reason, score=scores[i])
        req.result.completions = [req.completions[i] for i in range(len(req.completions))]
        req.open_sequences = 0
        return self._finish_request(req)

    def _append(self, seq: Sequence, token: int) -> bool:
        """Append `token`; record the completion and return True when the sequence is finished."""
        seq.tokens.append(token)
        self.stats.new_tokens += 1
        state: _SeqState = seq.owner
        req = state.req
        new = seq.tokens[len(req.result.prompt_ids) :]
        reason, text = None, None
        if token in req.eos_token_ids:
            reason = "eos"
        elif len(new) >= req.max_new_tokens:
            reason = "length"
        if req.request.stop:
            text = self._decode(new)
            cut = min((i for i in (text.find(s) for s in req.request.stop) if i >= 0), default=-1)
            if cut >= 0:
                reason, text = "stop", text[:cut]
        if reason is None:
            return False
        if text is None and self.tokenizer is not None:
            text = self._decode(new)
        req.completions[state.sample_index] = Completion(new, text, reason)
        return True

    def _close(self, seq: Sequence) -> list[Result]:
        """Free a finished sequence; return its request's result when it was the last one open."""
        req = seq.owner.req
        self.scheduler.finish(seq)
        req.open_sequences -= 1
        if req.open_sequences or len(req.completions) < req.request.num_return_sequences:
            return []
        req.result.completions = [req.completions[i] for i in range(req.request.num_return_sequences)]
        return [self._finish_request(req)]

    def _finish_request(self, req: _RequestState) -> Result:
        now = time.perf_counter() - self._start
        req.result.latency_s = now
        if req.result.ttft_s == 0.0:
            req.result.ttft_s = now
        self.stats.finished += 1
        self.stats.ttft_s.append(req.result.ttft_s)
        return req.result

    def _record_step(self) -> None:
        s = self.stats
        s.steps += 1
        util = self.cache.utilisation()
        s.kv_utilisation_sum += util
        s.kv_utilisation_min = min(s.kv_utilisation_min, util)
        s.kv_peak_blocks = max(s.kv_peak_blocks, self.cache.num_used_blocks)

    def _decode(self, ids: list[int]) -> str:
        if self.tokenizer is None:
            raise ValueError(
                "stop strings and text output need a tokenizer: BatchGenerator(model, tokenizer)"
            )
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # -- request resolution ---------------------------------------------------------------------------------
    def _resolve(self, request: Request | str | list[int], index: int, label: str = "") -> _RequestState:
        """Tokenize and validate one request; build its plan exactly as generate() would."""
        label = label or f"request {index}"
        if not isinstance(request, Request):
            request = Request(request)
        prompt_ids = self._prompt_ids(request, label)
        config, _ = self.model._prepare_generation_config(None, None, **request.generation_kwargs())
        self._check_strategy(request, config, label)
        max_new = config.max_new_tokens if config.max_new_tokens is not None else DEFAULT_MAX_NEW_TOKENS
        eos = config.eos_token_id
        eos_ids = () if eos is None or request.ignore_eos else tuple([eos] if isinstance(eos, int) else eos)
        pad = config.pad_token_id if config.pad_token_id is not None else (eos_ids[0] if eos_ids else None)
        config.max_length = len(prompt_ids) + max_new
        if config.min_new_tokens is not None:  # as generate(): min_new_tokens becomes a min_length
            config.min_length, config.min_new_tokens = config.min_new_tokens + len(prompt_ids), None
        plan = build_plan(config, vocab_size=self.model.config.vocab_size, prompt_length=len(prompt_ids),
                          eos_token_ids=eos_ids, pad_token_id=pad, num_beams=config.num_beams)  # fmt: skip
        self._check_fits(request, label, len(prompt_ids), len(prompt_ids) + max_new)
        result = Result(id=index if request.id is None else request.id, index=index, prompt_ids=prompt_ids)
        return _RequestState(request, result, max_new, tuple(eos_ids), plan, config=config)

    def _check_strategy(self, request: Request, config: Any, label: str) -> None:
        """generate()'s rules for num_return_sequences and beams, plus what the batch engine cannot do."""
        n, beams = request.num_return_sequences, config.num_beams
        if beams > 1:
            if n > beams:
                raise ValueError(
                    f"{label}: num_return_sequences ({n}) has to be smaller or equal to num_beams ({beams})."
                )
            if config.num_beam_groups > 1:
                raise ValueError(f"{label}: group beam search is not supported by BatchGenerator; use generate().")
            if request.stop:
                raise ValueError(f"{label}: stop strings with num_beams > 1 are not supported; drop `stop`.")
        elif n > 1 and not config.do_sample:
            raise ValueError(
                f"{label}: greedy decoding returns one sequence (num_return_sequences={n}); set do_sample=True "
                "or num_beams >= num_return_sequences."
            )

    def _prompt_ids(self, request: Request, label: str) -> list[int]:
        if isinstance(request.prompt, str):
            if self.tokenizer is None:
                raise ValueError(f"{label} has a text prompt; pass a tokenizer or token ids.")
            ids = list(self.tokenizer.encode(request.prompt))
        else:
            ids = [int(t) for t in request.prompt]
        if not ids:
            raise ValueError(f"{label} has an empty prompt")
        return ids

    def _check_fits(self, request: Request, label: str, prompt_len: int, total: int) -> None:
        if total > self.capacity_tokens:
            raise ValueError(
                f"{label} needs {total} tokens of KV cache (prompt + max_new_tokens) but the pool holds "
                f"{self.capacity_tokens}; raise kv_cache_bytes (or num_blocks) or lower max_new_tokens."
            )
        if request.num_return_sequences < 1 or request.num_return_sequences > self.max_batch_size:
            raise ValueError(
                f"{label}: num_return_sequences must be in [1, max_batch_size={self.max_batch_size}]"
            )
        beams = request.num_beams or 1
        if beams > self.max_batch_size:
            raise ValueError(
                f"{label}: num_beams ({request.num_beams}) decodes that many rows; it must be <= "
                f"max_batch_size={self.max_batch_size}"
            )
        # The beams share the prompt's blocks; each may own its tail copy plus its new tokens' blocks.
        worst = self.cache.blocks_needed(prompt_len) + beams * (self.cache.blocks_needed(total - prompt_len) + 1)
        if beams > 1 and worst > self.cache.num_blocks:
            raise ValueError(
                f"{label}: {beams} beams of {total} tokens may need {worst} blocks but the pool holds "
                f"{self.cache.num_blocks}; raise kv_cache_bytes (or num_blocks) or lower max_new_tokens."
            )
