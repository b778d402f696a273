"""synced_gpus with two processes on torch.distributed's gloo backend.

Rank 0 finishes early (an EOS it meets at its second step), rank 1 runs to max length. With
synced_gpus=True both ranks must make the same number of model forward calls (a finished rank keeps
stepping until every rank is done, so collectives inside the model would stay matched), and each rank's
tokens must equal its own unsynced run.
"""

from __future__ import annotations

import json
import os

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")


def _worker(rank: int, world: int, init_file: str, model_dir: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    from pyengine import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    prompt = torch.tensor([[5 + rank, 6, 7]])
    probe = model.generate(prompt, max_new_tokens=2, eos_token_id=None, pad_token_id=0)
    eos = int(probe[0, -1]) if rank == 0 else 999  # rank 0 stops after 2 tokens; 999 is never produced
    results = {}
    for num_beams in (1, 2):
        kw = dict(max_new_tokens=8, eos_token_id=eos, pad_token_id=0, num_beams=num_beams)
        alone = model.generate(prompt, **kw)
        calls.clear()
        synced = model.generate(prompt, synced_gpus=True, **kw)
        results[num_beams] = {"alone": alone.tolist(), "synced": synced.tolist(), "calls": len(calls)}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)
    dist.destroy_process_group()


def test_finished_rank_keeps_stepping(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=64)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "model")
    torch.multiprocessing.spawn(
        _worker, args=(2, str(tmp_path / "init"), str(tmp_path / "model"), str(tmp_path)), nprocs=2, join=True
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for beams in ("1", "2"):
        r0, r1 = ranks[0][beams], ranks[1][beams]
        assert r0["synced"] == r0["alone"] and r1["synced"] == r1["alone"]
        assert r0["calls"] == r1["calls"], "a finished rank stopped stepping before the others"
    greedy0, greedy1 = ranks[0]["1"]["alone"][0], ranks[1]["1"]["alone"][0]
    assert len(greedy0) < len(greedy1), "rank 0 should have finished early"
