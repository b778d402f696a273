"""The benchmark harness on a tiny random GPT-2 (2 layers, 64 hidden), one repeat: parsing, the JSONL
schema, skip notes for missing peers, ratio math, chart and HTML output, and the CLI end to end."""

from __future__ import annotations

import importlib.util
import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from pyengine.bench import report  # noqa: E402
from pyengine.bench.engines import parse_strategy  # noqa: E402
from pyengine.bench.generation import GenerateConfig, run_generate  # noqa: E402
from pyengine.bench.models import prepare_model, prompt_set  # noqa: E402

GENERATE_KEYS = {
    "kind", "engine", "framework", "backend", "impl", "model", "strategy", "batch", "prompt_len", "new_tokens",
    "threads", "tokens_per_s", "min", "max", "repeats", "load_s", "peak_rss_mb", "quantized", "device",
    "cpu_model", "cpu_flags", "versions", "commit", "timestamp",
}  # fmt: skip
ENV = {"device": "cpu", "cpu_model": "test", "cpu_flags": ["avx2"], "versions": {"python": "3"}, "commit": "abc"}


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> str:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("tiny-gpt2")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=64)).save_pretrained(path)
    return str(path)


def _config(model: str, engines: list[str], **kw: object) -> GenerateConfig:
    base = {"batches": [2], "strategies": ["greedy"], "prompt_len": 4, "new_tokens": 3, "repeats": 1, "threads": 1,
            "isolate": False}
    return GenerateConfig(models=[model], engines=engines, **{**base, **kw})


def test_parse_strategy() -> None:
    assert parse_strategy("greedy") == {"do_sample": False, "num_beams": 1}
    assert parse_strategy("beam4")["num_beams"] == 4
    assert parse_strategy("sample")["do_sample"] is True
    with pytest.raises(ValueError, match="unknown strategy"):
        parse_strategy("beam")


def test_prompt_set_is_seeded_and_nested() -> None:
    a, b = prompt_set(1000, 8, 5, seed=3), prompt_set(1000, 2, 5, seed=3)
    assert a.shape == (8, 5) and (a[:2] == b).all() and a.min() >= 100


def test_generate_records_schema(tiny_gpt2: str) -> None:
    records = run_generate(_config(tiny_gpt2, ["pyengine", "transformers"], strategies=["greedy", "beam2"]), ENV,
                           log=lambda _: None)
    gen = [r for r in records if r["kind"] == "generate"]
    assert len(gen) == 4
    for rec in gen:
        assert GENERATE_KEYS <= set(rec), GENERATE_KEYS - set(rec)
        assert rec["min"] <= rec["tokens_per_s"] <= rec["max"] and rec["repeats"] == 1
        json.dumps(rec)  # JSONL-serializable as is
    impl = next(r["impl"] for r in gen if r["engine"] == "pyengine")
    assert isinstance(impl, dict) and impl["argmax"] in ("cpp", "native")


def test_missing_peer_is_skipped_with_note(tiny_gpt2: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ctranslate2" else real(name, *a))
    records = run_generate(_config(tiny_gpt2, ["ctranslate2", "llamacpp"]), ENV, log=lambda _: None)
    notes = {r["engine"]: r["note"] for r in records if r["kind"] == "skip"}
    assert "ctranslate2 is not installed" in notes["ctranslate2"]
    assert "llamacpp" in notes  # not installed, or no GGUF for this model: either way a note, not a figure
    assert not [r for r in records if r["kind"] == "generate"]


def _rec(engine: str, tps: float, batch: int = 1, quantized: object = False) -> dict:
    return {"kind": "generate", "engine": engine, "model": "m", "strategy": "greedy", "batch": batch,
            "tokens_per_s": tps, "min": tps * 0.9, "max": tps * 1.1, "quantized": quantized, "weights": "w"}


def test_ratio_math() -> None:
    records = [_rec("transformers", 20.0), _rec("pyengine", 30.0), _rec("llamacpp", 50.0, quantized="Q4_1"),
               _rec("pyengine", 10.0, batch=8)]
    engines, rows = report.ratio_rows(records, "transformers")
    assert engines == ["transformers", "pyengine", "llamacpp [Q4_1]"]
    assert rows[0]["pyengine"]["ratio"] == pytest.approx(1.5)
    assert rows[0]["llamacpp [Q4_1]"]["ratio"] == pytest.approx(2.5)
    assert rows[1]["pyengine"]["ratio"] is None  # no baseline for batch 8
    table = report.markdown_table(records, "transformers")
    assert "30.0 (1.50x)" in table and "| m | greedy | 8 | – | 10.0 | – |" in table
    assert any("quantized" in n for n in report.notes(records, "transformers"))


def test_chart_and_html(tmp_path: object) -> None:
    records = [_rec("transformers", 20.0), _rec("pyengine", 30.0)]
    png, page = tmp_path / "r.png", tmp_path / "r.html"
    problem = report.write_chart(records, str(png))
    report.write_html(records, "transformers", str(page), None if problem else str(png))
    text = page.read_text()
    assert "<table>" in text and "30.0 (1.50x)" in text
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib" in problem
        pytest.skip("matplotlib not installed: PNG not checked")
    assert png.read_bytes()[:4] == b"\x89PNG" and "data:image/png;base64," in text


def test_cli_end_to_end(tiny_gpt2: str, tmp_path: object, capsys: pytest.CaptureFixture) -> None:
    from pyengine.cli import main

    out = tmp_path / "g.jsonl"
    rc = main(["bench", "generate", "--model", tiny_gpt2, "--engines", "pyengine,transformers", "--batch", "1",
               "--strategies", "sample", "--prompt-len", "4", "--new-tokens", "2", "--repeats", "1", "--threads", "1",
               "--in-process", "--out", str(out), "--chart"])
    assert rc == 0
    rows = report.read_jsonl([str(out)])
    assert {r["engine"] for r in rows} == {"pyengine", "transformers"}
    assert "(1.00x)" in capsys.readouterr().out
    assert (tmp_path / "g.html").is_file()


def test_builtin_kernel_benchmark_small() -> None:
    from pyengine.bench import kernels

    records = kernels.run_builtin(threads=1, repeats=1, env=ENV, log=lambda _: None, batch=2, vocab=300)
    ops = {r["op"] for r in records}
    assert {"top_k_mask", "top_p_mask", "argmax"} <= ops
    assert all(r["kind"] == "kernel" and r["median_us"] > 0 for r in records)
    assert {"transformers", "native", "reference"} <= {r["impl"] for r in records if r["op"] == "top_k_mask"}


def test_named_model_rejects_unknown(tmp_path: object) -> None:
    with pytest.raises(SystemExit, match="neither"):
        prepare_model(str(tmp_path / "nope"), str(tmp_path))
