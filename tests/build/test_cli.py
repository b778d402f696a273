"""`pyengine generate` on real files: request parsing, output safety, resume after a kill, end-to-end runs.

Most runs use a tiny random GPT-2 saved with a byte-level tokenizer (fast); the last test uses the default
SmolLM2 model (slow).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pyengine import cli


def _write(tmp_path, text, name="in.jsonl"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8").read().splitlines()]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> str:
    """A 2-layer GPT-2 (vocab 257: `<eos>` + 256 byte symbols) with its tokenizer files, as a directory."""
    pytest.importorskip("torch")
    tokenizers = pytest.importorskip("tokenizers")
    import torch

    from pyengine.models.gpt2 import GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("tiny")
    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<eos>": 0, **{c: i + 1 for i, c in enumerate(alphabet)}}
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    tok.add_special_tokens(["<eos>"])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<eos>"}))
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=257, n_positions=512, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
    )
    GPT2LMHeadModel(config).save_pretrained(path)
    return str(path)


def _generate(model: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "pyengine.cli",
        "generate",
        "--model",
        model,
        "--threads",
        "1",
        "--quiet",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


# -- parsing ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "line,match",
    [
        ("not json", "not valid JSON"),
        ('{"text": "hi"}', '"prompt"'),
        ('{"prompt": "hi", "top_q": 1}', "unknown key 'top_q'"),
        ('{"prompt": "hi", "max_new_tokens": "5"}', "must be int"),
        ('{"prompt": "hi", "do_sample": 1}', "must be bool"),
        ('{"prompt": "hi", "stop": [1]}', "list of strings"),
        ('{"prompt": "hi", "id": 0}', "duplicate id 0"),
    ],
)
def test_bad_request_lines_name_the_line(tmp_path, line, match):
    path = _write(tmp_path, '{"prompt": "ok"}\n' + line + "\n")
    with pytest.raises(SystemExit, match=match) as err:
        cli.read_requests(path, [])
    assert ":2" in str(err.value)


def test_bad_lines_can_be_skipped_with_their_line_number(tmp_path, capsys):
    path = _write(
        tmp_path, '{"prompt": "a"}\nnot json\n{"prompt": "b", "top_q": 1}\n{"prompt": "c", "stop": "."}\n'
    )
    reqs = cli.read_requests(path, [], on_bad_line="skip")
    assert [(r.prompt, r.params) for r in reqs] == [("a", {}), ("c", {"stop": "."})]
    err = capsys.readouterr().err
    assert f"skipping {path}:2" in err and f"skipping {path}:3" in err


def test_requests_parse_params_and_ids(tmp_path):
    path = _write(tmp_path, '{"prompt": "a", "id": "x", "temperature": 0.5}\n\n"plain string prompt"\n')
    reqs = cli.read_requests(path, [])
    assert [(r.id, r.prompt, r.params) for r in reqs] == [
        ("x", "a", {"temperature": 0.5}),
        (1, "plain string prompt", {}),
    ]


def test_bundled_prompts_load():
    assert len(cli.read_requests(None, [])) >= 10


def test_existing_output_is_never_overwritten(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    with pytest.raises(SystemExit, match="--overwrite"):
        cli.main(["generate", "--prompt", "hi", "--output", str(out)])
    with pytest.raises(SystemExit, match="pass one of them"):
        cli.main(["generate", "--prompt", "hi", "--output", str(out), "--resume", "--overwrite"])
    assert out.read_text() == "precious\n"


def test_torn_last_line_is_cut_before_resuming(tmp_path):
    out = _write(tmp_path, '{"id": 0, "completion": "a"}\n{"id": 1, "compl', name="out.jsonl")
    assert [r["id"] for r in cli.read_done_ids(out)] == [0]
    assert open(out).read() == '{"id": 0, "completion": "a"}\n'


# -- runs on the tiny model -------------------------------------------------------------------------------
def _prompts(tmp_path, n: int) -> str:
    lines = [json.dumps({"prompt": f"request number {i} " + "x" * (i % 17), "id": f"r{i}"}) for i in range(n)]
    return _write(tmp_path, "\n".join(lines) + "\n")


def test_resume_after_kill_loses_and_duplicates_nothing(tmp_path, tiny_model_dir):
    """SIGKILL mid-run, then --resume: every id exactly once, the same records as an uninterrupted run."""
    import torch

    prompts = _prompts(tmp_path, 24)
    flags = ["--prompts", prompts, "--max-new-tokens", "24", "--max-batch-size", "2", "--kv-cache-mb", "4"]
    full = tmp_path / "full.jsonl"
    threads = torch.get_num_threads()
    try:  # the uninterrupted reference runs in-process (one interpreter start less)
        assert cli.main(["generate", "--model", tiny_model_dir, "--threads", "1", "--quiet", *flags,
                         "--output", str(full)]) == 0  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "pyengine.cli", "generate", "--model", tiny_model_dir, "--threads", "1",
           "--quiet", *flags, "--output", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 2:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = len(cli.read_done_ids(str(out)))
    assert 2 <= killed < 24, "the run was meant to be killed midway"
    resumed = _generate(tiny_model_dir, *flags, "--output", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stderr.split("summary: ")[1])
    assert summary["skipped"] == killed and summary["requests"] == 24 - killed
    rows, expected = _rows(out), {r["id"]: r for r in _rows(full)}
    assert sorted(r["id"] for r in rows) == sorted(expected)  # each id once
    assert all(r == expected[r["id"]] for r in rows)


def test_order_input_rewrites_in_input_order_and_skip_bad_lines(tmp_path, tiny_model_dir):
    lines = [json.dumps({"prompt": "a" * n, "id": n, "max_new_tokens": 30 - n}) for n in (1, 20, 5)]
    too_long = json.dumps({"prompt": "b", "id": "big", "max_new_tokens": 10**6})
    prompts = _write(tmp_path, "\n".join(lines[:2] + ["{oops", too_long] + lines[2:]) + "\n")
    out = tmp_path / "out.jsonl"
    proc = _generate(tiny_model_dir, "--prompts", prompts, "--output", str(out), "--order", "input",
                     "--on-bad-line", "skip", "--kv-cache-mb", "1", "--stop", "zzz")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"skipping {prompts}:3" in proc.stderr and f"skipping {prompts}:4" in proc.stderr
    rows = _rows(out)
    assert [r["id"] for r in rows] == [1, 20, 5]
    for row, limit in zip(rows, (29, 10, 25)):
        assert row["completion_tokens"] == limit or row["finish_reason"] == "eos"
    summary = json.loads(proc.stderr.split("summary: ")[1])
    for key in ("ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "kv_peak_blocks_used", "kv_utilisation_mean"):
        assert key in summary


def test_per_request_beams_and_samples_from_jsonl(tmp_path, tiny_model_dir):
    """Per-line num_beams / num_return_sequences / do_sample: each record lists its completions, and the beam
    request's texts are generate(num_beams=3, num_return_sequences=2)'s rows."""
    import torch

    lines = [
        {"prompt": "hello", "id": "beam", "num_beams": 3, "num_return_sequences": 2, "max_new_tokens": 6},
        {"prompt": "abc", "id": "greedy", "max_new_tokens": 4},
        {"prompt": "xyz", "id": "samples", "do_sample": True, "seed": 1, "num_return_sequences": 3},
    ]
    prompts = _write(tmp_path, "".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out.jsonl"
    proc = _generate(tiny_model_dir, "--prompts", prompts, "--output", str(out), "--order", "input")
    assert proc.returncode == 0, proc.stderr
    beam, greedy, samples = _rows(out)
    assert "completions" not in greedy and len(samples["completions"]) == 3
    model, tok = cli.load(tiny_model_dir)
    ids = torch.tensor([tok.encode("hello")])
    ref = model.generate(ids, num_beams=3, num_return_sequences=2, max_new_tokens=6, pad_token_id=0,
                         return_dict_in_generate=True, output_scores=True)  # fmt: skip
    texts = []
    for row in ref.sequences[:, ids.shape[1] :].tolist():
        texts.append(tok.decode(row[: row.index(0) + 1] if 0 in row else row, skip_special_tokens=True))
    assert [c["completion"] for c in beam["completions"]] == texts
    assert [c["score"] for c in beam["completions"]] == pytest.approx(ref.sequences_scores.tolist(), abs=1e-5)
    assert beam["completion"] == texts[0]


@pytest.mark.slow
def test_generate_end_to_end_on_default_model(tmp_path):
    pytest.importorskip("torch")
    prompts = _write(
        tmp_path, '{"prompt": "The capital of France is", "id": "fr"}\n{"prompt": "Water boils at"}\n'
    )
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyengine.cli",
            "generate",
            "--prompts",
            prompts,
            "--output",
            str(out),
            "--max-new-tokens",
            "6",
            "--quiet",
            "--order",
            "input",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["fr", 1]
    assert "Paris" in rows[0]["completion"]
    assert all(r["completion_tokens"] == 6 for r in rows)
    summary = json.loads(proc.stderr.split("summary: ")[1])
    assert summary["requests"] == 2 and summary["new_tokens"] == 12 and summary["new_tokens_per_s"] > 0


def test_unusable_outputs_fail_before_any_work(tmp_path):
    """A path under a file, a device, a KV budget too small for one request: one clear line, no traceback."""
    prompts = _write(tmp_path, '{"prompt": "hi"}\n')
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit, match="is a file, not a folder"):
        cli.main(["generate", "--prompts", prompts, "--output", str(tmp_path / "afile" / "out.jsonl")])
    with pytest.raises(SystemExit, match="not a regular file"):
        cli.main(["generate", "--prompts", prompts, "--output", "/dev/null", "--resume"])


def test_budget_too_small_is_reported(tmp_path, tiny_model_dir):
    prompts = _write(tmp_path, '{"prompt": "' + "word " * 400 + '"}\n')
    with pytest.raises(SystemExit, match="KV budget|raise it|kv"):
        cli.main(["generate", "--model", tiny_model_dir, "--prompts", prompts, "--output", str(tmp_path / "o.jsonl"),
                  "--kv-cache-mb", "1", "--block-size", "256", "--quiet"])


def test_full_disk_leaves_no_partial_line(tmp_path):
    """Disk full in the middle of a record: the file is cut back to the last whole record."""
    import errno

    path = tmp_path / "out.jsonl"
    with open(path, "a", encoding="utf-8") as real:
        cli._append(real, {"id": 1, "completion": "ok"}, str(path))

        class HalfWrite:
            def tell(self):
                return real.tell()

            def write(self, text):
                real.write(text[: len(text) // 2])
                real.flush()
                raise OSError(errno.ENOSPC, "No space left on device")

            def flush(self):
                real.flush()

        with pytest.raises(SystemExit, match="No space left.*--resume"):
            cli._append(HalfWrite(), {"id": 2, "completion": "lost"}, str(path))
    assert _rows(path) == [{"id": 1, "completion": "ok"}]
    assert path.read_text().endswith("\n")


def test_killed_many_times_then_resumed(tmp_path, tiny_model_dir):
    """Kill at several points of one job, resume each time: in the end every id exactly once."""
    prompts = _prompts(tmp_path, 12)
    flags = ["--prompts", prompts, "--max-new-tokens", "16", "--max-batch-size", "2", "--kv-cache-mb", "4"]
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "pyengine.cli", "generate", "--model", tiny_model_dir, "--threads", "1",
           "--quiet", *flags, "--output", str(out)]  # fmt: skip
    for kill_after in (1, 3, 5):
        proc = subprocess.Popen(cmd + (["--resume"] if out.exists() else []), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_text().count("\n") >= kill_after:
                break
            time.sleep(0.002)
        proc.kill()
        proc.wait()
    final = _generate(tiny_model_dir, *flags, "--output", str(out), "--resume")
    assert final.returncode == 0, final.stderr
    ids = [r["id"] for r in _rows(out)]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 12
