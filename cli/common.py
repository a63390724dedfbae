"""What every keras2torch command shares: the error type, shared options,
tables and the progress bar.

Conventions (ruff's and black's): results and data on stdout, progress and
messages on stderr; exit 0 success, 1 findings (a model fails), 2 usage or
I/O errors, each error one line.
"""
from __future__ import annotations

import os
import shutil
import sys
import textwrap

import click


class Error(click.ClickException):
    """One line on stderr, exit code 2: the input cannot be read or run,
    or bad usage."""

    exit_code = 2

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


class Failure(Error):
    """A model fails (unsupported layers, parity): one line, exit code 1."""

    exit_code = 1


# -- shared options (pip-tools' options.py) ---------------------------------
layout_option = click.option(
    "--layout", type=click.Choice(["torch", "keras"]), default="torch",
    show_default=True,
    help="torch: channels-first inputs and outputs; keras: keep Keras's "
         "channels-last layout at the interface.")
weights_format_option = click.option(
    "--weights-format", type=click.Choice(["safetensors", "pt"]),
    default="safetensors", show_default=True)
atol_option = click.option(
    "--atol", type=float, default=None,
    help="Largest absolute difference from Keras accepted  [default: "
         "1e-4].")
jobs_option = click.option(
    "-j", "--jobs", type=click.IntRange(min=0), default=1,
    show_default=True,
    help="Models converted at once, each in its own process (0: one per "
         "CPU).")
_rules_files = click.option(
    "--rules", "rule_files", multiple=True, metavar="FILE.py",
    type=click.Path(dir_okay=False),
    help="Your own Python file that registers custom rules with "
         "migrate.rules.rule (README: Custom rules); repeatable.")


def _no_plugins(ctx, param, value):
    if value:
        ctx.meta["keras2torch.plugins"] = False
    return value


_no_plugins_option = click.option(
    "--no-plugins", is_flag=True, expose_value=False, callback=_no_plugins,
    help="Do not load the installed rule packs (entry-point group "
         "keras2torch.rules).")


def rules_option(fn):
    """``--rules FILE.py`` (as ``rule_files``) and ``--no-plugins`` (read
    with :func:`plugins_enabled`)."""
    return _rules_files(_no_plugins_option(fn))


def plugins_enabled() -> bool:
    """False when this command was given ``--no-plugins``."""
    ctx = click.get_current_context(silent=True)
    return ctx is None or ctx.meta.get("keras2torch.plugins", True)
custom_objects_option = click.option(
    "--custom-objects", "custom_objects", multiple=True, metavar="FILE.py",
    type=click.Path(dir_okay=False, exists=True),
    help="With --verify: your Python file that defines (and registers "
         "with Keras) the model's custom Keras classes, imported by the "
         "Keras process before it loads the model; repeatable.")
quiet_option = click.option(
    "-q", "--quiet", is_flag=True,
    help="No progress bar (there is none either when stderr is not a "
         "terminal).")


def load_rules(files) -> dict:
    """The extra rules of this command: those registered by ``files``
    (``--rules``) over the installed rule packs' (unless ``--no-plugins``);
    a file or pack that cannot be loaded is a one-line error (exit 2)."""
    from migrate.errors import ConversionError
    from migrate.plugins import with_plugins
    from migrate.userrules import load_rule_files
    try:
        return with_plugins(load_rule_files(files) if files else None,
                            plugins_enabled())
    except ConversionError as exc:
        raise Error(str(exc)) from None


def fmt_err(x) -> str:
    return "-" if x is None else f"{x:.2g}"


def rel(path) -> str:
    """``path`` relative to the current directory when it is below it."""
    p = os.fspath(path)
    try:
        r = os.path.relpath(p)
    except ValueError:
        return p
    return p if r.startswith("..") else r


def parallel_note(jobs: int, verify: bool, models: int) -> None:
    """Say on stderr why ``-j N --verify`` cannot verify N models at once
    here: each worker runs its own Keras process (TensorFlow started once
    per worker, ~1.8 GB), and they share the CPUs (each gets
    cpu_count // N threads)."""
    cpus = os.cpu_count() or 1
    n = cpus if jobs == 0 else jobs
    if not verify or n <= 1 or models <= 1:
        return
    if n > cpus:
        click.echo(f"note: -j {n} with --verify on {cpus} CPU(s): {n} Keras "
                   f"processes take turns on {cpus} CPU(s), no faster than "
                   f"-j {cpus}", err=True)
    elif models <= n:
        click.echo(f"note: -j {n} with --verify for {models} model(s): "
                   "each worker starts TensorFlow for one model, which "
                   "can take longer than verifying them in one process",
                   err=True)


def terminal_width() -> int | None:
    """The terminal's width when stdout is one, else None (a pipe or a
    file gets whole lines)."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size().columns


def table(headers: list[str], rows: list[list[str]], styles=None,
          width: int | None = None, max_last: int | None = None) -> str:
    """A plain-text table; ``styles[i]`` (click.style kwargs) colours row
    ``i`` when stdout is a terminal.  It fits ``width`` (default: the
    terminal's, :func:`terminal_width`) by wrapping the widest columns;
    with no width (stdout is not a terminal) every row is one whole line.
    ``max_last`` cuts the last column to that many characters."""
    rows = [[" ".join(c.split()) for c in r] for r in rows]
    if max_last is not None:
        rows = [r[:-1] + [_cut(r[-1], max_last)] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows])
              for i, h in enumerate(headers)]
    width = terminal_width() if width is None else width
    if width:
        widths = _fit(widths, width - 2 * (len(widths) - 1))
    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    lines = []
    for i, r in enumerate([headers] + rows):
        cells = [textwrap.wrap(c, w, break_on_hyphens=False) or [""]
                 if len(c) > w else [c] for c, w in zip(r, widths)]
        for k in range(max(len(c) for c in cells)):
            line = "  ".join((c[k] if k < len(c) else "").ljust(w)
                             for c, w in zip(cells, widths)).rstrip()
            style = styles[i - 1] if styles and i else None
            lines.append(click.style(line, **style) if colour and style
                         else line)
    return "\n".join(lines)


def _fit(widths: list[int], room: int, least: int = 12) -> list[int]:
    """Column widths within ``room`` characters: the widest column gives
    way first, none below ``least`` (or its own width)."""
    widths = list(widths)
    while sum(widths) > room:
        i = max(range(len(widths)), key=lambda k: widths[k])
        if widths[i] <= least:
            break
        widths[i] -= 1
    return widths


def _cut(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 1] + "…"


class Progress:
    """A progress bar on stderr, only when stderr is a terminal and not
    ``quiet``; called as ``progress(done, total, result)``."""

    def __init__(self, total: int, label: str, quiet: bool = False):
        self.bar = None
        if not quiet and total > 1 and sys.stderr.isatty():
            self.bar = click.progressbar(length=total, label=label,
                                         file=sys.stderr, show_pos=True,
                                         show_eta=False)
            self.bar.__enter__()

    def __call__(self, done, total, result=None):
        if self.bar is not None:
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
