"""The ``keras2torch`` command line.

    keras2torch convert MODEL... -o OUTDIR   convert one model, or a batch
    keras2torch check [PATH...]              the CI gate: convertible, right,
                                             committed ports up to date
    keras2torch inspect MODEL                the layer table, nothing written
    keras2torch rules                        every supported Keras layer
    keras2torch rules new MODEL              a rule file to fill in for the
                                             layers no rule converts

Exit codes: 0 success, 1 a model fails (parity above tolerance, unsupported
layers, drift), 2 bad input, usage or I/O errors.  Errors are one line on
stderr, never a traceback.
"""
from __future__ import annotations

import sys

import click

from migrate import __version__

from .check import check
from .common import Error
from .convert import EXAMPLES, convert
from .inspection import inspect_cmd
from .rules import rules

__all__ = ["Error", "main"]


class OneLineErrors(click.Group):
    """Usage errors too are one line on stderr (exit 2), not a usage dump."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            hint = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                hint = f" (see: {exc.ctx.command_path} --help)"
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
        if isinstance(code, int) and code:
            sys.exit(code)
        return code


@click.group(cls=OneLineErrors, epilog=EXAMPLES)
@click.version_option(__version__, prog_name="keras2torch")
def main():
    """Convert Keras models to readable PyTorch code and weights."""


main.add_command(convert)
main.add_command(check)
main.add_command(inspect_cmd, "inspect")
main.add_command(rules)


if __name__ == "__main__":  # pragma: no cover
    main()
