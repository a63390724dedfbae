"""The ``keras2torch`` command line.

Exit codes: 0 success, 1 parity above tolerance, 2 bad input or usage.
Errors are one line on stderr, never a traceback.
"""
from __future__ import annotations

import sys

import click

from migrate import __version__
from migrate.errors import ConversionError

EXAMPLES = """
\b
Examples:
  keras2torch convert model.keras -o port/
  keras2torch convert model.h5 -o port/ --verify
  keras2torch convert model.json --weights model.weights.h5 -o port/
  keras2torch convert model.keras -o port/ --layout keras --weights-format pt
"""


class Error(click.ClickException):
    """One line on stderr, exit code 2."""

    exit_code = 2

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


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


@main.command(epilog=EXAMPLES)
@click.argument("model", type=click.Path())
@click.option("--weights", type=click.Path(),
              help="Weights file for a JSON config (Keras 2 .h5 or Keras 3 "
                   ".weights.h5).")
@click.option("-o", "--output", "outdir", required=True,
              type=click.Path(file_okay=False),
              help="Directory to write model.py, the weights and "
                   "conversion.json to.")
@click.option("--class-name", help="Name of the generated nn.Module class "
                                   "(default: from the Keras model name).")
@click.option("--layout", type=click.Choice(["torch", "keras"]),
              default="torch", show_default=True,
              help="torch: channels-first inputs and outputs; keras: keep "
                   "Keras's channels-last layout at the interface.")
@click.option("--weights-format", type=click.Choice(["safetensors", "pt"]),
              default="safetensors", show_default=True)
@click.option("--verify", is_flag=True,
              help="Run the model in Keras (needs TensorFlow) and the port "
                   "on the same random inputs and compare.")
@click.option("--atol", type=float, default=1e-4, show_default=True,
              help="Largest absolute difference --verify accepts.")
@click.option("--force", is_flag=True, help="Replace OUTDIR if it exists.")
def convert(model, weights, outdir, class_name, layout, weights_format,
            verify, atol, force):
    """Convert MODEL (.keras, .h5, or a JSON config with --weights)."""
    import migrate
    from pathlib import Path
    for path in (model, weights):
        if path is not None and not Path(path).exists():
            raise Error(f"{path}: no such file")
    if Path(outdir).exists() and not force:
        raise Error(f"{outdir} already exists (use --force to replace it)")
    try:
        conv = migrate.convert(model, weights, class_name=class_name,
                               layout=layout, weights_format=weights_format)
        parity = None
        if verify:
            parity = migrate.verify(model, conv, weights, atol=atol)
        conv.save(outdir, force=force)
    except ConversionError as exc:
        raise Error(str(exc)) from None
    except (OSError, MemoryError) as exc:
        raise Error(f"{type(exc).__name__}: {exc}") from None
    report = conv.report
    click.echo(f"wrote {outdir}/ ({report['module']['class_name']}, "
               f"{len(report['layers'])} layers, "
               f"{sum(v.numel() for v in conv.state_dict.values()):,} "
               f"values)", err=True)
    for w in report["warnings"]:
        click.echo(f"warning: {w}", err=True)
    if parity is not None:
        for row in parity["outputs"]:
            click.echo(f"parity {row['name']}: max abs err "
                       f"{row['max_abs_err']:.3g}, max rel err "
                       f"{row['max_rel_err']:.3g}")
        if not parity["passed"]:
            click.echo(f"error: parity failed: max abs err "
                       f"{parity['max_abs_err']:.3g} > atol {atol:g}",
                       err=True)
            sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()

