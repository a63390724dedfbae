"""``keras2torch convert``: one model to OUTDIR, or many to OUTDIR/<name>/."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .common import (Error, Failure, Progress, atol_option,
                     custom_objects_option, fmt_err, jobs_option,
                     layout_option, load_rules, plugins_enabled,
                     quiet_option, rel, rules_option, table,
                     weights_format_option)

EXAMPLES = """
\b
Examples:
  keras2torch convert model.keras -o port/
  keras2torch convert model.h5 -o port/ --verify
  keras2torch convert model.json --weights model.weights.h5 -o port/
  keras2torch convert model.keras -o port/ --layout keras --weights-format pt
  keras2torch convert model.keras -o port/ --verify --per-layer --report html
  keras2torch convert a.keras b.h5 models/ -o ports/ -j 4
  keras2torch convert custom.keras -o port/ --rules my_rules.py
"""


@click.command(epilog=EXAMPLES)
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--weights", type=click.Path(),
              help="Weights file for a JSON config (Keras 2 .h5 or Keras 3 "
                   ".weights.h5); one model only.")
@click.option("-o", "--output", "outdir", required=True,
              type=click.Path(file_okay=False),
              help="Directory to write model.py, the weights and "
                   "conversion.json to; with several models (or a "
                   "directory), one subdirectory per model.")
@click.option("--class-name", help="Name of the generated nn.Module class "
                                   "(default: from the Keras model name).")
@click.option("--flat", is_flag=True,
              help="One straight-line forward: repeated blocks are not "
                   "folded into classes.")
@layout_option
@weights_format_option
@click.option("--verify", is_flag=True,
              help="Run the model in Keras (needs TensorFlow) and the port "
                   "on the same random inputs and compare.")
@click.option("--per-layer", is_flag=True,
              help="With --verify: compare every layer's output and name "
                   "the first that diverges.")
@click.option("--training", is_flag=True,
              help="With --verify: also one train-mode step (dropout off): "
                   "outputs, every parameter's gradient and the running "
                   "statistics against Keras's; for a compiled model, five "
                   "steps of training.py against five train_on_batch.")
@atol_option
@click.option("--report", "report_format", type=click.Choice(["html"]),
              help="Also write report.html beside the port: the layer "
                   "table, status colours, per-layer error, warnings.")
@click.option("--force", is_flag=True, help="Replace OUTDIR (in a batch: "
                                            "each model's directory) if it "
                                            "exists.")
@rules_option
@custom_objects_option
@jobs_option
@quiet_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]),
              default="table", show_default=True,
              help="Batch summary on stdout: a table, or JSON.")
def convert(models, weights, outdir, class_name, layout, weights_format,
            verify, per_layer, atol, report_format, force, rule_files,
            custom_objects, jobs, quiet, fmt, flat, training):
    """Convert MODEL (.keras, .h5, or a JSON config with --weights).

    With several MODELs or a directory, every model found is converted into
    its own subdirectory of OUTDIR, named after the model file; one failure
    never stops the rest, and the summary lists every result.
    """
    if per_layer and not verify:
        raise click.UsageError("--per-layer needs --verify")
    if custom_objects and not verify:
        raise click.UsageError("--custom-objects needs --verify")
    if training and not verify:
        raise click.UsageError("--training needs --verify")
    if atol is None:
        atol = 1e-4
    rules = load_rules(rule_files)  # a bad file fails before any work
    from migrate.discover import is_savedmodel
    batch = len(models) > 1 or (Path(models[0]).is_dir()
                                and not is_savedmodel(models[0]))
    if batch:
        if flat:
            raise click.UsageError("--flat converts one model at a time")
        if training:
            raise click.UsageError("--training verifies one model at a time")
        if weights is not None:
            raise click.UsageError(
                "--weights takes one model; in a batch, a JSON config's "
                "weights are found beside it (NAME.weights.h5 or "
                "NAME_weights.h5)")
        return _batch(models, outdir, class_name=class_name, layout=layout,
                      weights_format=weights_format, verify=verify,
                      per_layer=per_layer, atol=atol, report=report_format,
                      force=force, rule_files=rule_files,
                      custom_objects=custom_objects, jobs=jobs, quiet=quiet,
                      fmt=fmt)
    return _single(models[0], weights, outdir, class_name, layout,
                   weights_format, verify, per_layer, atol, report_format,
                   force, rules, custom_objects, flat, training)


def _single(model, weights, outdir, class_name, layout, weights_format,
            verify, per_layer, atol, report_format, force, rules,
            custom_objects, flat=False, training=False):
    import migrate
    from migrate.errors import ConversionError, UnsupportedLayers
    for path in (model, weights):
        if path is not None and not Path(path).exists():
            raise Error(f"{path}: no such file")
    if Path(outdir).exists() and not force:
        raise Error(f"{outdir} already exists (use --force to replace it)")
    try:
        conv = migrate.convert(model, weights, class_name=class_name,
                               layout=layout, weights_format=weights_format,
                               rules=rules, flat=flat)
        parity = None
        if verify:
            parity = migrate.verify(model, conv, weights, atol=atol,
                                    per_layer=per_layer, rules=rules,
                                    custom_objects=custom_objects,
                                    training=training)
        conv.save(outdir, force=force)
        if report_format == "html":
            from migrate.html import write_report
            write_report(conv, outdir, model, weights, rules)
    except UnsupportedLayers as exc:  # the model fails: exit 1
        raise Failure(str(exc)) from None
    except ConversionError as exc:
        raise Error(str(exc)) from None
    except (OSError, MemoryError) as exc:
        raise Error(f"{type(exc).__name__}: {exc}") from None
    report = conv.report
    params = sum(layer["params"] for layer in report["layers"])
    click.echo(f"wrote {Path(outdir)}/ ({report['module']['class_name']}, "
               f"{len(report['layers'])} layers, {params:,} parameters)")
    for w in report["warnings"]:
        click.echo(f"warning: {w}", err=True)
    if parity is not None:
        for row in parity["outputs"]:
            click.echo(f"parity {row['name']}: max abs err "
                       f"{row['max_abs_err']:.3g}, max rel err "
                       f"{row['max_rel_err']:.3g}")
        if per_layer:
            click.echo(per_layer_line(parity))
        train = parity.get("training")
        if train:
            click.echo(f"training step: output max rel err "
                       f"{train['max_rel_err']:.3g}, gradients max rel err "
                       f"{train['max_grad_rel_err']:.3g} "
                       f"({len(train['gradients'])} parameters)")
            steps = train.get("trajectory")
            if steps and "per_step" in steps:
                click.echo(f"training trajectory ({steps['steps']} steps "
                           "with training.py): weights max rel err per step "
                           + ", ".join(f"{r['max_rel_err']:.2g}"
                                       for r in steps["per_step"]))
            elif steps:
                click.echo(f"training trajectory: skipped "
                           f"({steps['skipped']})")
            if not train["passed"]:
                click.echo("error: training parity failed (> 1e-05 "
                           "relative)", err=True)
                sys.exit(1)
        if not parity["passed"]:
            click.echo(f"error: parity failed: max abs err "
                       f"{parity['max_abs_err']:.3g} > atol {atol:g}",
                       err=True)
            sys.exit(1)


def per_layer_line(parity: dict) -> str:
    first = parity.get("first_divergence")
    rows = parity.get("layers") or []
    if first is not None:
        why = f" ({first['reason']})" if first.get("reason") else ""
        return (f"first divergence: layer {first['node']!r} "
                f"({first['class_name']}), max abs err "
                f"{fmt_err(first['max_abs_err'])}{why}")
    compared = sum(r["status"] == "ok" for r in rows)
    line = f"per layer: all {compared} compared layer calls match Keras"
    if parity.get("per_layer_note"):
        line += f"; {parity['per_layer_note']}"
    return line


def _batch(models, outdir, *, class_name, layout, weights_format, verify,
           per_layer, atol, report, force, rule_files, custom_objects, jobs,
           quiet, fmt):
    import migrate
    for m in models:
        if not Path(m).exists():
            raise Error(f"{m}: no such file or directory")
    options = {"layout": layout, "weights_format": weights_format,
               "force": force}
    if class_name:
        options["class_name"] = class_name
    if verify:
        options.update(atol=atol, per_layer=per_layer)
        if custom_objects:
            options["custom_objects"] = [str(Path(f).resolve())
                                         for f in custom_objects]
    if report:
        options["report"] = report
    if rule_files:  # each worker loads the files
        options["rules"] = list(rule_files)
    if not plugins_enabled():
        options["plugins"] = False
    from migrate.batch import expand_sources
    from migrate.discover import Skipped, nothing_found
    skipped = Skipped()
    found = expand_sources(models, skipped)
    if not any(f.is_model for f in found):  # converting nothing: an error
        raise Error(nothing_found(models, found, skipped))
    from .common import parallel_note
    parallel_note(jobs, verify, sum(1 for f in found if not f.skip))
    bar = Progress(sum(1 for f in found if not f.skip), "converting", quiet)
    try:
        results = migrate.convert_many(found, outdir, jobs=jobs,
                                       verify=verify, progress=bar,
                                       **options)
    finally:
        bar.close()
    code = max(({"ok": 0, "skipped": 0, "fail": 1, "error": 2}[r.status]
                for r in results), default=0)
    if fmt == "json":
        counts = {s: sum(r.status == s for r in results)
                  for s in ("ok", "fail", "error", "skipped")}
        click.echo(json.dumps({
            "models": [r.to_dict() for r in results],
            "summary": {"total": len(results), **counts,
                        "exit_code": code}}, indent=2))
    else:
        _summary_table(results, verify)
    sys.exit(code)


_STYLES = {"ok": {"fg": "green"}, "fail": {"fg": "red"},
           "error": {"fg": "red", "bold": True}, "skipped": {"dim": True}}


def _summary_table(results, verify):
    rows, styles = [], []
    for r in results:
        p = r.parity
        detail = r.reason or ""
        if r.status == "ok" and r.report is not None:
            detail = (f"{r.report['module']['class_name']}, "
                      f"{len(r.report['layers'])} layers")
        rows.append([r.status, rel(r.path),
                     rel(r.outdir) if r.outdir else "-",
                     fmt_err(p["max_abs_err"]) if p else "-", detail])
        styles.append(_STYLES[r.status])
    click.echo(table(["STATUS", "MODEL", "OUTPUT", "MAX ERR", "DETAIL"],
                     rows, styles))
    counts = {s: sum(r.status == s for r in results)
              for s in ("ok", "fail", "error", "skipped")}
    click.echo(f"{len(results)} model(s): " + ", ".join(
        f"{n} {s}" for s, n in counts.items() if n)
        + (" (verified)" if verify else ""))
