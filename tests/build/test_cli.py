"""`pyengine generate` on real files: request parsing errors, output safety, and an end-to-end run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pyengine import cli


def _write(tmp_path, text):
    p = tmp_path / "in.jsonl"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(
    "line,match",
    [
        ("not json", "not valid JSON"),
        ('{"text": "hi"}', '"prompt"'),
        ('{"prompt": "hi", "top_q": 1}', "unknown key 'top_q'"),
        ('{"prompt": "hi", "max_new_tokens": "5"}', "must be int"),
        ('{"prompt": "hi", "do_sample": 1}', "must be bool"),
    ],
)
def test_bad_request_lines_name_the_line(tmp_path, line, match):
    path = _write(tmp_path, '{"prompt": "ok"}\n' + line + "\n")
    with pytest.raises(SystemExit, match=match) as err:
        cli.read_requests(path, [])
    assert ":2" in str(err.value)


def test_requests_parse_params_and_ids(tmp_path):
    path = _write(tmp_path, '{"prompt": "a", "id": "x", "temperature": 0.5}\n\n"plain string prompt"\n')
    reqs = cli.read_requests(path, [])
    assert [(r.id, r.prompt, r.params) for r in reqs] == [("x", "a", {"temperature": 0.5}), (1, "plain string prompt", {})]


def test_bundled_prompts_load():
    assert len(cli.read_requests(None, [])) >= 10


def test_existing_output_is_never_overwritten(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    with pytest.raises(SystemExit, match="--overwrite"):
        cli.main(["generate", "--prompt", "hi", "--output", str(out)])
    assert out.read_text() == "precious\n"


@pytest.mark.slow
def test_generate_end_to_end_on_default_model(tmp_path):
    pytest.importorskip("torch")
    prompts = _write(tmp_path, '{"prompt": "The capital of France is", "id": "fr"}\n{"prompt": "Water boils at"}\n')
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "pyengine.cli", "generate", "--prompts", prompts, "--output", str(out),
         "--max-new-tokens", "6", "--quiet"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["fr", 1]
    assert "Paris" in rows[0]["completion"]
    assert all(r["completion_tokens"] == 6 for r in rows)
    summary = json.loads(proc.stderr.split("summary: ")[1])
    assert summary["requests"] == 2 and summary["new_tokens"] == 12 and summary["new_tokens_per_s"] > 0
