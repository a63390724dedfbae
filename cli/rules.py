"""``keras2torch rules``: every supported Keras layer and what it becomes."""
from __future__ import annotations

import json

import click

from .common import load_rules, rules_option, table


@click.command()
@click.option("--format", "fmt",
              type=click.Choice(["table", "json", "markdown"]),
              default="table", show_default=True,
              help="markdown gives the README's table.")
@rules_option
def rules(fmt, rule_files):
    """List every Keras layer class a rule converts, its torch counterpart
    and the rule function (with --rules, yours too)."""
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
                          r["torch"].replace("`", "") or "?", r["rule"]])
        click.echo(table(["KERAS", "TORCH", "RULE"], lines))
