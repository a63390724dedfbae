"""``keras2torch inspect``: the layer table of a model, nothing written."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .common import (Error, atol_option, custom_objects_option, fmt_err,
                     layout_option, load_rules, rules_option, table)

EXAMPLES = """
\b
Examples:
  keras2torch inspect model.keras
  keras2torch inspect model.keras --format json
  keras2torch inspect model.keras --verify --per-layer
  keras2torch inspect model.keras --html report.html

\b
Exit codes: 0 every layer converts (and matches Keras, with --verify);
1 a layer is unsupported or diverges; 2 bad input or usage.
"""


@click.command(epilog=EXAMPLES)
@click.argument("model", type=click.Path())
@click.option("--weights", type=click.Path(),
              help="Weights file for a JSON config.")
@layout_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]),
              default="table", show_default=True)
@click.option("--verify", is_flag=True,
              help="Run the model in Keras (needs TensorFlow) and the port "
                   "on the same random inputs and compare.")
@click.option("--per-layer", is_flag=True,
              help="With --verify: compare every layer's output and name "
                   "the first that diverges.")
@atol_option
@click.option("--html", "html_path", type=click.Path(dir_okay=False),
              help="Also write the report as a self-contained HTML page.")
@rules_option
@custom_objects_option
def inspect_cmd(model, weights, layout, fmt, verify, per_layer, atol,
                html_path, rule_files, custom_objects):
    """Show what each layer of MODEL becomes: Keras name, class, output
    shape, parameters, the rule that converts it (or UNSUPPORTED and why)
    and the torch code it becomes."""
    import migrate
    from migrate.errors import ConversionError
    from migrate.inspect import inspect_model
    if per_layer and not verify:
        raise click.UsageError("--per-layer needs --verify")
    atol = 1e-4 if atol is None else atol
    rules = load_rules(rule_files)
    for path in (model, weights):
        if path is not None and not Path(path).exists():
            raise Error(f"{path}: no such file")
    parity, conv = None, None
    try:
        found = inspect_model(model, weights, layout=layout, rules=rules)
        if verify and found.supported:
            conv = migrate.convert(model, weights, layout=layout,
                                   rules=rules)
            parity = migrate.verify(model, conv, weights, atol=atol,
                                    per_layer=per_layer, rules=rules,
                                    custom_objects=custom_objects)
        if html_path:
            from migrate.html import render_html
            page = render_html(found.to_dict(),
                               conv.report if conv is not None else None,
                               parity)
            Path(html_path).write_text(page, encoding="utf-8")
    except ConversionError as exc:
        raise Error(str(exc)) from None
    except OSError as exc:
        raise Error(f"{type(exc).__name__}: {exc}") from None
    if fmt == "json":
        data = found.to_dict()
        data["parity"] = parity
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(_table(found, parity))
        if verify and not found.supported:
            click.echo("not verified: some layers cannot be converted",
                       err=True)
    diverged = parity is not None and (
        not parity["passed"] or parity.get("first_divergence"))
    sys.exit(1 if (not found.supported or diverged) else 0)


def _shape(shapes) -> str:
    def one(s):
        if s is None:
            return "?"
        return "(" + ", ".join("B" if i == 0 and d is None else
                               "?" if d is None else str(d)
                               for i, d in enumerate(s)) + ")"
    return ", ".join(one(s) for s in shapes)


def _table(found, parity) -> str:
    per_layer = {r["node"]: r for r in (parity or {}).get("layers") or []}
    headers = ["LAYER", "CLASS", "OUTPUT SHAPE", "PARAMS", "RULE"]
    if per_layer:
        headers.append("MAX ERR")
    headers.append("TORCH")
    rows, styles = [], []
    for r in found.rows:
        if r.status == "ok":
            code = list(r.code)
            if r.module:
                code.insert(0, f"self.{r.torch_name} = {r.module}")
            torch_text = " | ".join(c.split("  # ")[0] for c in code)
            rule = r.rule
        else:
            torch_text = r.reason
            rule = "UNSUPPORTED" if r.status == "unsupported" else \
                f"({r.rule or 'no rule'})"
        row = [r.node, r.class_name, _shape(r.output_shapes),
               f"{r.params:,}", rule]
        style = None
        if per_layer:
            layer = per_layer.get(r.node) or {}
            row.append(fmt_err(layer.get("max_abs_err")))
            if layer.get("status") == "diverged":
                style = {"fg": "red"}
        if r.status != "ok":
            style = {"fg": "yellow"}
        row.append(torch_text)
        rows.append(row)
        styles.append(style)
    lines = [f"{found.model_name} ({found.format}, Keras "
             f"{found.keras_version or '?'}): {len(found.rows)} layer "
             f"calls, {found.params:,} parameters",
             table(headers, rows, styles)]
    if found.problems:
        lines.append(f"{len(found.problems)} layer(s) cannot be converted:")
        lines += [f"  {n} ({c}): {why}" for n, c, why in found.problems]
    for w in found.warnings:
        lines.append(f"warning: {w}")
    if parity is not None:
        lines.append(f"parity: max abs err {fmt_err(parity['max_abs_err'])}"
                     f" (atol {parity['atol']:g}): "
                     + ("passed" if parity["passed"] else "FAILED"))
        if per_layer:
            from .convert import per_layer_line
            lines.append(per_layer_line(parity))
    return "\n".join(lines)
