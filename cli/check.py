"""``keras2torch check``: the CI gate over a repository of models."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import click

from .common import (Error, Progress, atol_option, fmt_err, jobs_option,
                     custom_objects_option, load_rules, plugins_enabled,
                     quiet_option, rel, rules_option, table)

EXAMPLES = """
\b
Examples:
  keras2torch check                      every model below the current dir
  keras2torch check models/ --diff       show how drifted ports differ
  keras2torch check --no-verify          convert and compare ports only
  keras2torch check --format junit > keras2torch.xml
  keras2torch check --format github      annotations in a GitHub workflow
  keras2torch check --rules my_rules.py  with your custom rules

\b
Exit codes: 0 every model passes (or is skipped); 1 a model fails
(unsupported layers, parity above --atol, a drifted port); 2 a model
cannot be read or run, or bad usage.
"""


@click.command(epilog=EXAMPLES)
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--verify/--no-verify", default=None,
              help="Compare each model with Keras (needs TensorFlow)  "
                   "[default: when TensorFlow is installed].")
@atol_option
@click.option("--diff", is_flag=True,
              help="Show how each drifted model.py differs from what the "
                   "model converts to now.")
@click.option("--format", "fmt",
              type=click.Choice(["table", "json", "junit", "github"]),
              default="table", show_default=True,
              help="table for people; json for tools; junit (XML) for CI "
                   "test reports; github for workflow annotations.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="pyproject.toml or setup.cfg with the [tool.keras2torch] "
                   "settings  [default: found from PATHS upwards].")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="Skip model paths matching GLOB (relative to each PATH; "
                   "repeatable; added to the config's exclude).")
@rules_option
@custom_objects_option
@jobs_option
@quiet_option
def check(paths, verify, atol, diff, fmt, config_path, exclude, rule_files,
          custom_objects, jobs, quiet):
    """Check the Keras models under PATHS (default: the current directory).

    Each model is converted in memory, verified against Keras, and
    compared with its committed port when it has one (by default the
    directory NAME_torch/ beside NAME.keras; see the README).
    """
    from migrate import check as lib
    from migrate.discover import Skipped, discover, nothing_found
    from migrate.verify import verify_available
    paths = list(paths) or ["."]
    for p in paths:
        if not Path(p).exists():
            raise Error(f"{p}: no such file or directory")
    try:
        config = (lib.load_config(config_path) if config_path
                  else lib.find_config(paths))
    except (OSError, ValueError) as exc:
        raise Error(str(exc)) from None
    if config_path and config is None:
        raise Error(f"{config_path}: no [tool.keras2torch] section "
                    "(pyproject.toml) or [tool:keras2torch] (setup.cfg)")
    config.exclude = list(config.exclude) + list(exclude)
    load_rules([*config.rules, *rule_files])  # a bad file: exit 2, now
    for f in config.custom_objects:
        if not f.is_file():
            raise Error(f"custom objects file {f}: no such file")
    if verify and not verify_available():
        raise Error("cannot verify: TensorFlow is not installed (pip "
                    "install 'keras2torch[verify]', or pass --no-verify)")
    skipped = Skipped()
    try:
        found = discover(paths, config.exclude, skipped)
    except OSError as exc:
        raise Error(str(exc)) from None
    if not any(f.is_model for f in found):  # as ruff: a warning, exit 0
        click.echo(f"warning: {nothing_found(paths, found, skipped)}; "
                   "nothing checked", err=True)
    from .common import parallel_note
    parallel_note(jobs, verify is not False and verify_available(),
                  sum(f.is_model for f in found))
    bar = Progress(sum(f.is_model for f in found), "checking", quiet)
    try:
        report = lib.check(paths, verify=verify, atol=atol, config=config,
                           rules=rule_files, custom_objects=custom_objects,
                           plugins=plugins_enabled(),
                           jobs=jobs, progress=bar, found=found)
    finally:
        bar.close()
    out = {"table": _table, "json": _json, "junit": _junit,
           "github": _github}[fmt](report, diff)
    if out:
        click.echo(out)
    sys.exit(report.exit_code)


_STYLES = {"pass": {"fg": "green"}, "fail": {"fg": "red"},
           "error": {"fg": "red", "bold": True}, "skipped": {"dim": True}}


def _table(report, diff: bool) -> str:
    rows, styles = [], []
    for m in report.models:
        rows.append([m.status, rel(m.path), fmt_err(m.max_abs_err),
                     m.reason if m.status != "pass" else
                     _pass_detail(m)])
        styles.append(_STYLES[m.status])
    lines = [table(["STATUS", "MODEL", "MAX ERR", "DETAIL"], rows, styles)
             ] if rows else []
    s = report.summary()
    if s["total"] == s["skipped"]:
        lines.append(f"nothing checked: no models found ({s['skipped']} "
                     "file(s) skipped)")
    else:
        line = (f"{s['total']} model(s): {s['pass']} pass, {s['fail']} "
                f"fail, {s['error']} error, {s['skipped']} skipped")
        line += (f"; verified against Keras (atol {report.atol:g})"
                 if report.verify else "; not verified against Keras")
        lines.append(line)
    if diff:
        lines += [m.diff.rstrip("\n") for m in report.models if m.diff]
    return "\n".join(lines)


def _pass_detail(m) -> str:
    parts = [f"{m.class_name}, {m.layers} layers"]
    if m.port:
        parts.append(f"port {rel(m.port)} up to date")
    return "; ".join(parts)


def _json(report, diff: bool) -> str:
    return json.dumps(report.to_dict(diff=diff), indent=2)


def _junit(report, diff: bool) -> str:
    s = report.summary()
    suites = ET.Element("testsuites", name="keras2torch check")
    suite = ET.SubElement(
        suites, "testsuite", name="keras2torch check", tests=str(s["total"]),
        failures=str(s["fail"]), errors=str(s["error"]),
        skipped=str(s["skipped"]),
        time=f"{sum(m.seconds for m in report.models):.3f}")
    for m in report.models:
        case = ET.SubElement(suite, "testcase", classname="keras2torch.check",
                             name=rel(m.path), time=f"{m.seconds:.3f}")
        if m.status == "fail":
            el = ET.SubElement(case, "failure", message=m.reason,
                               type=m.category or "fail")
            el.text = _details(m, diff)
        elif m.status == "error":
            el = ET.SubElement(case, "error", message=m.reason,
                               type=m.category or "error")
            el.text = m.reason
        elif m.status == "skipped":
            ET.SubElement(case, "skipped", message=m.reason)
        if m.max_abs_err is not None:
            out = ET.SubElement(case, "system-out")
            out.text = f"max abs err {m.max_abs_err:.3g} (atol {m.atol:g})"
    ET.indent(suites)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            + ET.tostring(suites, encoding="unicode"))


def _details(m, diff: bool) -> str:
    lines = [m.reason]
    for u in m.unsupported:
        lines.append(f"  {u['layer']} ({u['class_name']}): {u['reason']}")
    if m.diff:
        lines.append(m.diff)
    return "\n".join(lines)


def _esc_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _esc_prop(s: str) -> str:
    return _esc_data(s).replace(":", "%3A").replace(",", "%2C")


def _github(report, diff: bool) -> str:
    """GitHub workflow commands: an error per failing model, a notice per
    skipped file, then the summary line."""
    lines = []
    for m in report.models:
        if m.status == "pass":
            continue
        level = {"fail": "error", "error": "error",
                 "skipped": "notice"}[m.status]
        title = f"keras2torch check: {m.status}"
        if m.category and m.status != "skipped":
            title += f" ({m.category})"
        msg = m.reason if m.status != "skipped" else f"skipped: {m.reason}"
        if diff and m.diff:
            msg += "\n" + m.diff
        lines.append(f"::{level} file={_esc_prop(rel(m.path))},"
                     f"title={_esc_prop(title)}::{_esc_data(msg)}")
    s = report.summary()
    lines.append(f"keras2torch check: {s['total']} model(s): {s['pass']} "
                 f"pass, {s['fail']} fail, {s['error']} error, "
                 f"{s['skipped']} skipped")
    return "\n".join(lines)
