"""The report as one self-contained HTML page: inline CSS, images by relative file name, every
journaled or user-written string escaped, no external URL, no script.

The page carries its own Content-Security-Policy (a <meta>: it is a file, opened or served by
anyone): no script at all, its one <style> block by hash, images only from beside it. A string
that escaped escaping still could not run or load anything."""
from __future__ import annotations

import base64
import hashlib
import html
from datetime import datetime, timezone
from typing import Any, Sequence

from orchestrator.results import column_header, format_cell, format_field, row_status, select_metrics

from .collect import ReportData

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right}th{background:#f3f3f3}
td.l,th.l{text-align:left}figure{display:inline-block;margin:.4em;vertical-align:top}
figcaption{font-size:.8em;color:#555;max-width:600px}img{image-rendering:pixelated;border:1px solid #ddd}
.wide{overflow-x:auto}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.85em}.note{color:#666;font-size:.9em}
"""
# 'self' covers the PNGs beside index.html, opened as a file or served over HTTP
CSP = (f"default-src 'none'; style-src 'sha256-{base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()}'; "
       "img-src 'self'; base-uri 'none'; form-action 'none'")


def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _img(name: str, caption: str, width: int | None = None) -> str:
    size = f' width="{width}"' if width else ""
    return (f'<figure><img src="{e(name)}" alt="{e(caption)}"{size}>'
            f'<figcaption>{e(caption)}</figcaption></figure>')


def results_table(data: ReportData) -> str:
    table = select_metrics(data.table, None)  # the headline columns, as `orch results` prints them
    head = [*(f'<th class="l">{e(k)}</th>' for k in table.swept), "<th>n</th>", '<th class="l">status</th>',
            *(f"<th>{e(column_header(table, c))}</th>" for c in table.metrics)]
    errors = any(r.errors for r in table.rows)
    if errors:
        head.append('<th class="l">error</th>')
    rows = []
    for r in table.rows:
        cells = [*(f'<td class="l">{e(format_field(r.fields[k]))}</td>' for k in table.swept),
                 f"<td>{len(r.trials)}</td>", f'<td class="l">{e(row_status(r))}</td>',
                 *(f"<td>{e(format_cell(r, c))}</td>" for c in table.metrics)]
        if errors:
            cells.append(f'<td class="l">{e("; ".join(r.errors))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="wide"><table id="results"><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>'
            '<p class="note">mean ± std over seeds; a single trial shows its 95% interval; n= in a header is the '
            'samples behind each value. Per-tag columns are in <code>orch results --format json</code>.</p>')


def ends(evaluations: list[Any]) -> list[tuple[str, Any]]:
    """("base", step 0) and ("final", the last step) among a trial's evaluations, where present."""
    out = [("base", evaluations[0])] if evaluations and evaluations[0].step == 0 else []
    return out + ([("final", evaluations[-1])] if evaluations and evaluations[-1].step > 0 else [])


def samples(data: ReportData, files: dict[str, str]) -> str:
    parts = []
    for t in data.trials:
        figs = [(files[ev.grid], f"{t.label} · {when} (step {ev.step})") for when, ev in ends(t.evaluations)
                if ev.grid in files]
        if figs:
            parts.append(f"<h3>{e(t.label)} <small>{e(t.trial_id)}</small></h3>"
                         + "".join(_img(n, c, 420) for n, c in figs))
    if not parts:
        return '<p class="note">no sample grids (no generating suite ran, or the blob store was not given)</p>'
    return ('<p class="note">The base and the final model on the same held-out prompts with the same noise.</p>'
            + "".join(parts))


def drawbench(data: ReportData, files: dict[str, str]) -> str:
    parts = []
    for t in data.trials:
        figs = [(files[key], f"{cat} · {when} (step {ev.step})")
                for when, ev in ends([ev for ev in t.evaluations if ev.sheets])
                for cat, key in ev.sheets.items() if key in files]
        if figs:
            parts.append(f"<h3>{e(t.label)} <small>{e(t.trial_id)}</small></h3>" + "".join(_img(n, c) for n, c in figs))
    return "".join(parts) or '<p class="note">no drawbench evaluations</p>'


def human_evaluation(tallies: Sequence[Any] | None) -> str:
    """Grading tallies (duck-typed: task_id, models, rows, preference, kappa, graders)."""
    if not tallies:
        return '<p class="note" id="no-grading">no grading yet</p>'
    parts = []
    for t in tallies:
        kappa = "n/a" if t.kappa is None else f"{t.kappa:.3f}"
        rows = "".join(
            f'<tr><td class="l">{e(r["model"])}</td><td>{e(r["n"])}</td><td>{_num(r.get("match_rate"))}</td>'
            f'<td>[{_num(r.get("ci_low"))}, {_num(r.get("ci_high"))}]</td><td>{_num(r.get("mean_rank"))}</td></tr>'
            for r in t.rows)
        pref_head = "".join(f"<th>{e(m)}</th>" for m in t.models)
        pref = "".join(f'<tr><th class="l">{e(m)}</th>' + "".join(f"<td>{_num(v)}</td>" for v in line) + "</tr>"
                       for m, line in zip(t.models, t.preference))
        parts.append(
            f"<h3>task {e(t.task_id)}</h3><p>graders: {e(', '.join(t.graders)) or 'none'} · "
            f"agreement (κ): {e(kappa)}</p>"
            '<table class="grading"><thead><tr><th class="l">model</th><th>n</th><th>match rate</th>'
            f"<th>95% interval</th><th>mean rank</th></tr></thead><tbody>{rows}</tbody></table>"
            '<p class="note">preference: how often the row model was preferred over the column model</p>'
            f'<table class="preference"><thead><tr><th></th>{pref_head}</tr></thead><tbody>{pref}</tbody></table>')
    return "".join(parts)


def _num(v: Any) -> str:
    return "–" if v is None else e(f"{v:.3f}" if isinstance(v, float) else v)


def render(data: ReportData, files: dict[str, str], curves: dict[str, str], metric_plots: dict[str, str],
           tallies: Sequence[Any] | None = None, notes: Sequence[str] = ()) -> str:
    """The page. `files`: blob key -> local file name; `curves`: trial -> its loss/lr plot;
    `metric_plots`: metric -> its plot over steps; `notes`: what the reader should know is missing."""
    curve_html = "".join(_img(curves[t.trial_id], f"{t.label} ({t.trial_id}, {t.status})")
                         for t in data.trials if t.trial_id in curves) \
        or '<p class="note">no step metrics journaled</p>'
    metric_html = "".join(_img(name, metric) for metric, name in metric_plots.items()) \
        or '<p class="note">no evaluations</p>'
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{e(CSP)}"><meta name="referrer" content="no-referrer">
<title>{e(data.name)} · {e(data.experiment_id)}</title>
<style>{CSS}</style></head><body>
<h1>{e(data.name)} <small>experiment {e(data.experiment_id)}</small></h1>
<p>status: {e(data.status)} · {len(data.trials)} trial(s) · report written {e(when)}</p>
{"".join(f'<p class="note warn">{e(n)}</p>' for n in notes)}
<h2 id="results-table">Results</h2>{results_table(data)}
<h2 id="training">Training: loss and learning rate</h2>{curve_html}
<h2 id="metrics">Metrics over steps</h2>{metric_html}
<h2 id="samples">Samples: base and final</h2>{samples(data, files)}
<h2 id="drawbench">DrawBench sheets</h2>{drawbench(data, files)}
<h2 id="human">Human evaluation</h2>{human_evaluation(tallies)}
<h2 id="manifest">Manifest</h2><p class="note">from {e(data.manifest_source)}</p><pre>{e(data.manifest_text)}</pre>
</body></html>
"""
