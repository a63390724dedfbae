"""``report.html``: the conversion, layer by layer, for people.

    page = render_html(inspection.to_dict(), report=conv.report)

One self-contained file: inline CSS, no script, no fonts, images or links
to fetch, so it opens the same offline, in a CI artifact viewer or attached
to an issue.  The layer table gives each layer call its Keras name, class,
output shape, parameters, rule and torch code, and a status colour:

=============  ==========================================================
``matches``    per-layer parity within tolerance (``--verify --per-layer``)
``diverges``   per-layer parity above tolerance; the first one is flagged
``converted``  converted, not compared layer by layer
``unsupported`` no rule, or the rule refuses the layer's options
``blocked``    fed by an unsupported layer
=============  ==========================================================
"""
from __future__ import annotations

from html import escape

__all__ = ["render_html", "write_report", "STATUS_COLOURS"]

# background, accent (left border and badge)
STATUS_COLOURS = {
    "matches": ("#e3f5e8", "#1e8e3e"),
    "diverges": ("#fde3e1", "#d93025"),
    "converted": ("#ffffff", "#9aa0a6"),
    "unsupported": ("#fff0d6", "#e37400"),
    "blocked": ("#f1f3f4", "#bdc1c6"),
}

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
       color: #202124; margin: 24px 32px; background: #fafafa; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; }
.meta { color: #5f6368; margin: 0 0 12px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { background: #fff; border: 1px solid #dadce0; border-radius: 6px;
        padding: 8px 14px; min-width: 120px; }
.card b { display: block; font-size: 18px; }
.card span { color: #5f6368; font-size: 12px; }
table { border-collapse: collapse; background: #fff; width: 100%;
        border: 1px solid #dadce0; }
th, td { text-align: left; vertical-align: top; padding: 5px 8px;
         border-bottom: 1px solid #e8eaed; }
th { background: #f1f3f4; font-weight: 600; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums;
         white-space: nowrap; }
code, pre { font: 12px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; }
pre { margin: 0; white-space: pre-wrap; word-break: break-all; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px;
         color: #fff; font-size: 12px; font-weight: 600;
         white-space: nowrap; }
.first td { border-top: 2px solid #d93025;
            border-bottom: 2px solid #d93025; font-weight: 600; }
.warn { background: #fef7e0; border-left: 4px solid #f9ab00;
        padding: 6px 10px; margin: 4px 0; }
.bad { background: #fde3e1; border-left: 4px solid #d93025;
       padding: 6px 10px; margin: 4px 0; }
.ok { background: #e3f5e8; border-left: 4px solid #1e8e3e;
      padding: 6px 10px; margin: 4px 0; }
.legend span { margin-right: 10px; }
.muted { color: #80868b; }
"""


def _shape(shape) -> str:
    if shape is None:
        return "?"
    return "(" + ", ".join("B" if i == 0 and d is None else
                           "?" if d is None else str(d)
                           for i, d in enumerate(shape)) + ")"


def _err(x) -> str:
    return "" if x is None else f"{x:.2e}"


def _badge(status: str) -> str:
    _, accent = STATUS_COLOURS[status]
    return (f'<span class="badge" style="background:{accent}">'
            f'{escape(status)}</span>')


def _row_status(row: dict, layer: dict | None) -> str:
    if row["status"] in ("unsupported", "blocked"):
        return row["status"]
    if layer is not None and layer.get("status") == "diverged":
        return "diverges"
    if layer is not None and layer.get("status") == "ok":
        return "matches"
    return "converted"


def render_html(inspection: dict, report: dict | None = None,
                parity: dict | None = None) -> str:
    """The page for a model: ``inspection`` is
    :meth:`migrate.inspect.Inspection.to_dict`, ``report`` the
    ``conversion.json`` content (if converted) and ``parity`` the
    :func:`migrate.verify` result (default: the report's)."""
    if parity is None and report is not None:
        parity = report.get("parity")
    per_layer = {r["node"]: r for r in (parity or {}).get("layers") or []}
    first = ((parity or {}).get("first_divergence") or {}).get("node")
    rows = inspection["layers"]
    statuses = [_row_status(r, per_layer.get(r["node"])) for r in rows]
    name = inspection.get("model_name") or "model"
    class_name = ((report or {}).get("module") or {}).get("class_name")
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width">',
           f"<title>keras2torch: {escape(name)}</title>",
           f"<style>{_CSS}</style></head><body>",
           f"<h1>Keras model &ldquo;{escape(name)}&rdquo;"
           + (f" &rarr; <code>{escape(class_name)}</code>"
              if class_name else "") + "</h1>",
           '<p class="meta">'
           + escape(f"{inspection.get('path', '')} · format "
                    f"{inspection.get('format') or '?'} · Keras "
                    f"{inspection.get('keras_version') or '?'}")
           + (escape(f" · keras2torch {report['tool']['version']}")
              if report and report.get("tool") else "") + "</p>"]
    counts = {s: statuses.count(s) for s in STATUS_COLOURS}
    params = inspection.get("params", sum(r["params"] for r in rows))
    cards = [(len(rows), "layer calls"), (f"{params:,}", "parameters")]
    cards += [(counts[s], s) for s in STATUS_COLOURS if counts[s]]
    if parity:
        cards.append((_err(parity.get("max_abs_err")), "max abs error"))
    out.append('<div class="cards">' + "".join(
        f'<div class="card"><b>{escape(str(v))}</b><span>{escape(k)}'
        f"</span></div>" for v, k in cards) + "</div>")
    out += _verdict(inspection, parity, per_layer.get(first) if first
                    else None)
    out += _ports(inspection, report)
    out.append("<h2>Layers</h2>")
    out.append('<p class="legend">' + "".join(
        f"<span>{_badge(s)}</span>" for s in STATUS_COLOURS) + "</p>")
    out.append("<table><thead><tr><th>#</th><th>Keras layer</th>"
               "<th>class</th><th>output shape</th><th>params</th>"
               "<th>rule</th><th>torch</th><th>max abs err</th>"
               "<th>status</th></tr></thead><tbody>")
    for i, (row, status) in enumerate(zip(rows, statuses)):
        bg, accent = STATUS_COLOURS[status]
        layer = per_layer.get(row["node"]) or {}
        torch_code = []
        if row.get("module"):
            torch_code.append(f"self.{row['torch_name']} = {row['module']}")
        torch_code += row.get("code") or []
        if row["status"] != "ok":
            torch_code = [row.get("reason") or ""]
        shapes = ", ".join(_shape(s) for s in row["output_shapes"])
        cls = ' class="first"' if row["node"] == first else ""
        out.append(
            f'<tr{cls} style="background:{bg};'
            f'box-shadow:inset 4px 0 0 {accent}">'
            f'<td class="num">{i + 1}</td>'
            f"<td><code>{escape(row['node'])}</code></td>"
            f"<td>{escape(row['class_name'])}</td>"
            f"<td><code>{escape(shapes)}</code></td>"
            f'<td class="num">{row["params"]:,}</td>'
            f"<td>{escape(row['rule'] or 'UNSUPPORTED')}</td>"
            f"<td><pre>{escape(chr(10).join(torch_code))}</pre></td>"
            f'<td class="num">{_err(layer.get("max_abs_err"))}</td>'
            f"<td>{_badge(status)}"
            + (" first" if row["node"] == first else "") + "</td></tr>")
    out.append("</tbody></table>")
    warnings = list(inspection.get("warnings") or [])
    out.append("<h2>Warnings</h2>")
    out += ([f'<div class="warn">{escape(w)}</div>' for w in warnings]
            or ['<p class="muted">none</p>'])
    out.append("<h2>Unsupported layers</h2>")
    unsupported = inspection.get("unsupported") or []
    if unsupported:
        out.append("<table><thead><tr><th>layer</th><th>class</th>"
                   "<th>why</th></tr></thead><tbody>")
        for u in unsupported:
            out.append(f"<tr><td><code>{escape(u['layer'])}</code></td>"
                       f"<td>{escape(u['class_name'])}</td>"
                       f"<td>{escape(u['reason'])}</td></tr>")
        out.append("</tbody></table><p>Register a custom rule for them "
                   "(README, &ldquo;Custom rules&rdquo;).</p>")
    else:
        out.append('<p class="muted">none</p>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _verdict(inspection, parity, first_row) -> list[str]:
    out = []
    if inspection.get("unsupported"):
        n = len(inspection["unsupported"])
        out.append(f'<div class="bad">{n} layer(s) cannot be converted; '
                   "they are listed at the end.</div>")
    if not parity:
        if not inspection.get("unsupported"):
            out.append('<div class="ok">Converted. Parity with Keras was '
                       "not measured (convert with --verify).</div>")
        return out
    line = (f"max abs err {_err(parity['max_abs_err'])} "
            f"(atol {parity['atol']:g}) over "
            f"{len(parity.get('outputs') or [])} output(s)")
    kind = "ok" if parity.get("passed") else "bad"
    out.append(f'<div class="{kind}">Parity with Keras '
               f"{'passed' if parity.get('passed') else 'FAILED'}: "
               f"{escape(line)}</div>")
    if first_row is not None:
        out.append(f'<div class="bad">First layer whose output diverges: '
                   f"<code>{escape(first_row['node'])}</code> "
                   f"({escape(first_row['class_name'])}), max abs err "
                   f"{escape(_err(first_row.get('max_abs_err')))}"
                   + (f" &mdash; {escape(first_row['reason'])}"
                      if first_row.get("reason") else "") + "</div>")
    elif parity.get("per_layer_note"):
        out.append(f'<div class="warn">{escape(parity["per_layer_note"])}'
                   "</div>")
    return out


def _ports(inspection, report) -> list[str]:
    out = ["<h2>Inputs and outputs</h2>", "<table><thead><tr><th></th>"
           "<th>name</th><th>Keras shape</th><th>torch shape</th>"
           "</tr></thead><tbody>"]
    if report is not None:
        ports = ([("input", p) for p in report["inputs"]]
                 + [("output", p) for p in report["outputs"]])
        for kind, p in ports:
            out.append(f"<tr><td>{kind}</td><td><code>{escape(p['name'])}"
                       f"</code></td><td><code>{_shape(p['keras_shape'])}"
                       f"</code></td><td><code>{_shape(p['torch_shape'])}"
                       "</code></td></tr>")
    else:
        for p in inspection["inputs"]:
            out.append(f"<tr><td>input</td><td><code>{escape(p['name'])}"
                       f"</code></td><td><code>{_shape(p['keras_shape'])}"
                       "</code></td><td></td></tr>")
        for p in inspection["outputs"]:
            out.append(f"<tr><td>output</td><td><code>{escape(p['name'])}"
                       "</code></td><td></td><td></td></tr>")
    out.append("</tbody></table>")
    return out


def write_report(conv, outdir, model, weights=None, rules=None):
    """Write ``outdir/report.html`` for the conversion ``conv`` of ``model``
    (written whole, then renamed into place); returns its path."""
    from pathlib import Path
    from .inspect import inspect_model
    table = inspect_model(model, weights, layout=conv.program.layout,
                          rules=rules if rules is not None
                          else getattr(conv, "rules", None))
    page = render_html(table.to_dict(), conv.report)
    target = Path(outdir) / "report.html"
    tmp = target.with_name(".report.html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(target)
    return target
