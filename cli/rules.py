"""``keras2torch rules``: every supported Keras layer and what it becomes."""
from __future__ import annotations

import json

import click

from .common import table


@click.command()
@click.option("--format", "fmt",
              type=click.Choice(["table", "json", "markdown"]),
              default="table", show_default=True,
              help="markdown gives the README's table.")
def rules(fmt):
    """List every Keras layer class a rule converts, its torch counterpart
    and the rule function."""
    from migrate.inspect import describe_rules, keras_label, rules_markdown
    rows = describe_rules()
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
