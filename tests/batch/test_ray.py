"""`pyengine generate --ray` on a local Ray cluster: the same records as the local run, JSONL and Parquet.

Ray is started here with 2 CPUs; two actors each load a tiny GPT-2 (byte-level tokenizer) and run their
batches of requests through their own BatchGenerator. Every record (greedy, penalties, beams, seeded
sampling) must equal the local run's exactly; a request too long for the KV budget is skipped by its row.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tokenizers = pytest.importorskip("tokenizers")
# Not importorskip: ray[data] is in the test extra, and a missing Ray must fail this test, not hide it.
import pyarrow as pa  # noqa: E402  (installed with ray[data])
import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402

from pyengine import cli  # noqa: E402
from pyengine.batch.ray import GenerateActor  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> str:
    """A 2-layer GPT-2 (vocab 257: `<eos>` + 256 byte symbols) with its tokenizer files."""
    from pyengine.models.gpt2 import GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("tiny-ray")
    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<eos>": 0, **{c: i + 1 for i, c in enumerate(alphabet)}}
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    tok.add_special_tokens(["<eos>"])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<eos>"}))
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=257, n_positions=256, n_embd=32, n_layer=2, n_head=2, bos_token_id=0,
                        eos_token_id=0)  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


REQUESTS = [
    {"prompt": "hello world", "id": "a", "max_new_tokens": 12},
    {"prompt": "the cat", "id": "7", "max_new_tokens": 5, "repetition_penalty": 1.5},
    {"prompt": "xyz", "id": "beam", "num_beams": 2, "num_return_sequences": 2, "max_new_tokens": 6},
    {"prompt": "too long for the budget", "id": "big", "max_new_tokens": 10**6},
    {"prompt": "a longer prompt than the others", "id": "d", "max_new_tokens": 9},
    {"prompt": "q", "id": "e", "do_sample": True, "seed": 3, "max_new_tokens": 7},
]


def test_ray_run_equals_local_run(tmp_path, tiny_model_dir, local_ray, capsys):
    """One Ray run (Parquet in, Parquet out, 2 actors of 2-request batches) against the local JSONL run."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in REQUESTS))
    keys = sorted({k for r in REQUESTS for k in r})  # every column in every row (null = not given)
    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in REQUESTS]), tmp_path / "in.parquet")
    common = ["generate", "--model", tiny_model_dir, "--quiet", "--order", "input", "--threads", "1",
              "--kv-cache-mb", "1", "--on-bad-line", "skip"]  # fmt: skip
    assert cli.main([*common, "--prompts", str(src), "--output", str(tmp_path / "local.jsonl")]) == 0
    local = [json.loads(line) for line in (tmp_path / "local.jsonl").read_text().splitlines()]
    capsys.readouterr()
    out = tmp_path / "out.parquet"
    argv = [*common, "--prompts", str(tmp_path / "in.parquet"), "--output", str(out), "--ray", "--num-actors",
            "2", "--ray-batch-size", "2"]  # fmt: skip
    assert cli.main(argv) == 0
    assert f"skipping {tmp_path / 'in.parquet'}:4: " in capsys.readouterr().err  # the too-long request, by row
    remote = pq.read_table(out).to_pylist()
    assert [json.loads(r["id"]) for r in remote] == [r["id"] for r in REQUESTS if r["id"] != "big"]
    for mine, theirs in zip(remote, local):
        assert {k: v for k, v in mine.items() if v is not None} == {**theirs, "id": json.dumps(theirs["id"])}
    assert len(remote[2]["completions"]) == 2
    assert not (tmp_path / "out.parquet.partial.jsonl").exists()


def test_actor_reports_a_bad_request_with_its_line(tiny_model_dir):
    """What the actor returns for a request its generator rejects (the driver stops or skips on it)."""
    actor = GenerateActor(tiny_model_dir, {"num_blocks": 4, "block_size": 4}, {"max_new_tokens": 4}, threads=1)
    batch = {"index": np.array([0, 1]), "id": np.array(['"a"', '"b"']), "prompt": np.array(["hi", "x" * 40]),
             "params": np.array(["{}", "{}"]), "where": np.array(["f.jsonl:1", "f.jsonl:2"])}  # fmt: skip
    out = actor(batch)
    good, bad = (json.loads(r) for r in out["record"])
    assert out["index"] == [0, 1] and good["id"] == "a" and good["completion_tokens"] == 4
    assert bad["id"] == "b" and bad["error"].startswith("f.jsonl:2: ") and "raise kv_cache_bytes" in bad["error"]
