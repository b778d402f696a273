"""Reports from benchmark records: JSONL files, a ratio table against a baseline engine, a PNG bar chart
(when matplotlib is installed) and a self-contained HTML page (table + the chart embedded as base64).

Ratios are engine tokens/s divided by the baseline's for the same (model, strategy, batch), both from
the same run: on shared cores absolute figures drift, ratios measured side by side drift much less.
"""

from __future__ import annotations

import base64
import html
import importlib.util
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

Key = tuple[str, str, int]  # (model, strategy, batch)


def write_jsonl(path: str, records: Iterable[dict], append: bool = False) -> None:
    """Write records one per line; a fresh file is written atomically (tmp + rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    target = path if append else path + ".tmp"
    with open(target, "a" if append else "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, default=str) + "\n")
    if not append:
        os.replace(target, path)


def read_jsonl(paths: Sequence[str]) -> list[dict]:
    records = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            records += [json.loads(line) for line in f if line.strip()]
    return records


def engine_label(rec: dict) -> str:
    """Engine name, with the weight format when it is quantized (so no table hides a precision change)."""
    return f"{rec['engine']} [{rec['quantized']}]" if rec.get("quantized") else rec["engine"]


def ratio_rows(records: Sequence[dict], baseline: str) -> tuple[list[str], list[dict]]:
    """Rows of the ratio table: one per (model, strategy, batch), tokens/s and ratio per engine.

    Returns:
        `(engines, rows)`; each row has `model`, `strategy`, `batch` and, per engine label,
        `{"tokens_per_s": x, "ratio": x / baseline or None}`.
    """
    engines: list[str] = []
    table: dict[Key, dict[str, Any]] = {}
    base: dict[Key, float] = {}
    for rec in records:
        if rec.get("kind") != "generate":
            continue
        key = (rec["model"], rec["strategy"], rec["batch"])
        label = engine_label(rec)
        if label not in engines:
            engines.append(label)
        table.setdefault(key, {})[label] = rec["tokens_per_s"]
        if rec["engine"] == baseline:
            base[key] = rec["tokens_per_s"]
    rows = []
    for key, cells in table.items():
        row: dict[str, Any] = {"model": key[0], "strategy": key[1], "batch": key[2]}
        for label, tps in cells.items():
            row[label] = {"tokens_per_s": tps, "ratio": tps / base[key] if key in base and base[key] > 0 else None}
        rows.append(row)
    return engines, rows


def markdown_table(records: Sequence[dict], baseline: str) -> str:
    """The ratio table as Markdown: `tok/s (ratio x)` per engine, '–' where an engine did not run."""
    engines, rows = ratio_rows(records, baseline)
    head = ["model", "strategy", "batch", *engines]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["model"], row["strategy"], str(row["batch"])]
        for label in engines:
            cell = row.get(label)
            if cell is None:
                cells.append("–")
            elif cell["ratio"] is None:
                cells.append(f"{cell['tokens_per_s']:.1f}")
            else:
                cells.append(f"{cell['tokens_per_s']:.1f} ({cell['ratio']:.2f}x)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(records: Sequence[dict], baseline: str) -> list[str]:
    """Skip reasons (deduplicated), quantized engines, and the worst contention seen."""
    out = [f"tokens/s = batch x new tokens / wall time of one generate call (prefill included); "
           f"median of repeats; (Nx) = ratio to {baseline} in the same run."]
    skips: dict[tuple[str, str, str], list[str]] = {}
    for rec in records:
        if rec.get("kind") == "skip":
            where = "" if rec.get("strategy") is None else f"{rec['strategy']} b{rec['batch']}"
            skips.setdefault((rec["engine"], rec["model"], rec["note"]), []).append(where)
    for (engine, model, note), wheres in skips.items():
        scope = f" ({', '.join(w for w in wheres if w)})" if any(wheres) else ""
        out.append(f"{engine} skipped on {model}{scope}: {note}")
    seen = set()
    for rec in records:
        if rec.get("kind") == "generate" and rec.get("quantized") and rec["engine"] not in seen:
            seen.add(rec["engine"])
            out.append(f"{engine_label(rec)} runs {rec.get('weights')}: quantized, not a like-for-like fp32 comparison.")
    foreign = [r["foreign_cpu_max"] for r in records if r.get("foreign_cpu_max") is not None]
    if foreign:
        out.append(f"Other processes used up to {max(foreign):.0%} of the machine's CPU during a timed call.")
    return out


def text_report(records: Sequence[dict], baseline: str) -> str:
    return markdown_table(records, baseline) + "\n\n" + "\n".join(f"- {n}" for n in notes(records, baseline))


def write_chart(records: Sequence[dict], path: str) -> str | None:
    """Grouped bar chart of tokens/s per (strategy, batch), one panel per model; None when written,
    else the reason (matplotlib missing)."""
    if importlib.util.find_spec("matplotlib") is None:
        return "matplotlib is not installed (pip install matplotlib, or pip install -e .[bench]); no chart written"
    import matplotlib

    matplotlib.use("Agg")  # no display on benchmark machines
    import matplotlib.pyplot as plt

    gen = [r for r in records if r.get("kind") == "generate"]
    models = list(dict.fromkeys(r["model"] for r in gen))
    engines = list(dict.fromkeys(engine_label(r) for r in gen))
    fig, axes = plt.subplots(len(models) or 1, 1, figsize=(11, 3.6 * max(len(models), 1)), squeeze=False)
    for ax, model in zip(axes[:, 0], models):
        _bars(ax, [r for r in gen if r["model"] == model], engines)
        ax.set_title(model)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def _bars(ax: Any, recs: list[dict], engines: list[str]) -> None:
    groups = list(dict.fromkeys((r["strategy"], r["batch"]) for r in recs))
    width = 0.8 / max(len(engines), 1)
    for i, label in enumerate(engines):
        xs, ys, err = [], [], [[], []]
        for g, (strategy, batch) in enumerate(groups):
            rec = next((r for r in recs if engine_label(r) == label and (r["strategy"], r["batch"]) == (strategy, batch)),
                       None)
            if rec is not None:
                xs.append(g + (i - (len(engines) - 1) / 2) * width)
                ys.append(rec["tokens_per_s"])
                err[0].append(rec["tokens_per_s"] - rec["min"])
                err[1].append(rec["max"] - rec["tokens_per_s"])
        if xs:  # same colour for an engine in every panel; no legend entry without bars
            ax.bar(xs, ys, width, yerr=err, capsize=2, label=label, color=f"C{i}")
    ax.set_xticks(range(len(groups)), [f"{s}\nb{b}" for s, b in groups])
    ax.set_ylabel("new tokens/s")
    ax.legend(fontsize=8)


def write_html(records: Sequence[dict], baseline: str, path: str, chart_path: str | None) -> None:
    """One self-contained page: environment, ratio table, notes and the chart inlined as base64."""
    engines, rows = ratio_rows(records, baseline)
    env = next((r for r in records if r.get("kind") == "generate"), records[0] if records else {})
    parts = ["<!doctype html><meta charset='utf-8'><title>pyengine bench</title>",
             "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:right}"
             "th{background:#eee}table{border-collapse:collapse}tr:nth-child(even){background:#f7f7f7}</style>",
             "<h1>pyengine bench: generation throughput</h1>",
             f"<p>{_esc(env.get('cpu_model'))} · {_esc(env.get('device'))} · threads {_esc(env.get('threads'))} · "
             f"commit {_esc(env.get('commit'))}<br>versions: {_esc(json.dumps(env.get('versions', {})))}</p>",
             _html_table(engines, rows), "<ul>" + "".join(f"<li>{_esc(n)}</li>" for n in notes(records, baseline))
             + "</ul>"]
    if chart_path and os.path.isfile(chart_path):
        with open(chart_path, "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
        parts.append(f"<img alt='tokens/s chart' src='data:image/png;base64,{data}'>")
    else:
        parts.append("<p><em>No chart: matplotlib is not installed.</em></p>")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))


def _html_table(engines: list[str], rows: list[dict]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in ["model", "strategy", "batch", *engines])
    body = []
    for row in rows:
        cells = [row["model"], row["strategy"], row["batch"]]
        for label in engines:
            c = row.get(label)
            ratio = "" if c is None or c["ratio"] is None else f" ({c['ratio']:.2f}x)"
            cells.append("–" if c is None else f"{c['tokens_per_s']:.1f}{ratio}")
        body.append("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _esc(value: Any) -> str:
    return html.escape(str(value))
