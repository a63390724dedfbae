"""``keras2torch rules``: every supported Keras layer and what it becomes;
``keras2torch rules new MODEL``: a rule file to fill in for what is not."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

from .common import Error, load_rules, plugins_enabled, rel, rules_option, \
    table

NEW_EXAMPLES = """
\b
Examples:
  keras2torch rules new model.keras -o my_rules.py
  keras2torch rules new model.keras --layer my_block -o my_rules.py
  keras2torch convert model.keras -o port/ --rules my_rules.py --verify
"""


@click.group(invoke_without_command=True)
@click.option("--format", "fmt",
              type=click.Choice(["table", "json", "markdown"]),
              default="table", show_default=True,
              help="markdown gives the README's table.")
@rules_option
@click.pass_context
def rules(ctx, fmt, rule_files):
    """List every Keras layer class a rule converts, its torch counterpart,
    the rule function and where it comes from (builtin, an installed rule
    pack, or your --rules file).  `rules new MODEL` writes a rule file for
    what MODEL needs and no rule converts."""
    if ctx.invoked_subcommand is not None:
        return
    from migrate.inspect import describe_rules, keras_label, rules_markdown
    rows = describe_rules(load_rules(rule_files))
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    elif fmt == "markdown":
        click.echo(rules_markdown(rows), nl=False)
    else:
        lines = []
        for r in rows:
            lines.append([keras_label(r["keras"], 4),
                          r["torch"].replace("`", "") or "?", r["rule"],
                          _source(r["source"])])
        click.echo(table(["KERAS", "TORCH", "RULE", "FROM"], lines))


def _source(source: str) -> str:
    return rel(source) if source.endswith(".py") else source


@rules.command("new", epilog=NEW_EXAMPLES)
@click.argument("model", type=click.Path())
@click.option("--weights", type=click.Path(),
              help="Weights file for a JSON config.")
@click.option("--layer", "layer", metavar="NAME",
              help="Only the rule for this layer (its Keras name or class); "
                   "for a layer that has a rule, one that overrides it.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the rule file here  [default: stdout].")
@click.option("--force", is_flag=True, help="Replace the output file.")
@rules_option
def new(model, weights, layer, output, force, rule_files):
    """Write a rule file for the layer classes and activation functions of
    MODEL that no rule converts: for each, its config keys with this
    model's values, its weights (names, shapes), the shapes of its calls,
    and a body that refuses with "fill me in" until you write it.  The
    file loads as it is with --rules."""
    from migrate.errors import ConversionError
    from migrate.skeleton import NothingToWrite, rule_skeleton
    for path in (model, weights):
        if path is not None and not Path(path).exists():
            raise Error(f"{path}: no such file")
    if output and Path(output).exists() and not force:
        raise Error(f"{output} already exists (use --force to replace it)")
    extra = load_rules(rule_files)
    cmd = ["keras2torch", "rules", "new", model]
    if weights:
        cmd += ["--weights", weights]
    if layer is not None:
        cmd += ["--layer", layer]
    cmd += [a for f in rule_files for a in ("--rules", f)]
    if not plugins_enabled():
        cmd.append("--no-plugins")
    if output:
        cmd += ["-o", output]
    try:
        text = rule_skeleton(model, weights, layer=layer, rules=extra,
                             command=" ".join(shlex.quote(c) for c in cmd),
                             rules_file=output)
    except NothingToWrite as exc:
        click.echo(str(exc), err=True)
        return
    except ConversionError as exc:
        raise Error(str(exc)) from None
    if not output:
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise Error(f"{output}: {exc.strerror or exc}") from None
    click.echo(f"wrote {output}: fill in each rule, then: keras2torch "
               f"convert {shlex.quote(model)} -o PORT --rules "
               f"{shlex.quote(output)} --verify", err=True)
