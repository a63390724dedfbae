"""Write a conversion to OUTDIR: whole or not at all.

Everything goes to a temporary sibling directory first, which is renamed
into place at the end; an existing OUTDIR is replaced only with ``force``.
The directory and its files get the modes the umask gives any new file
(:mod:`migrate.perms`), not ``mkdtemp``'s owner-only 0700.
Weights are streamed (:mod:`migrate.stream`): each tensor is read from the
model file, converted and written in turn, never all held at once.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import ConversionError
from .perms import dir_mode
from .stream import write_safetensors, write_torch


def write_outdir(conv, outdir: Path, *, force: bool = False) -> Path:
    from .api import WEIGHT_FILES
    outdir = Path(outdir)
    if outdir.exists() and not force:
        raise ConversionError(f"{outdir} already exists (replace it with "
                              "force=True, --force on the command line)")
    if outdir.exists() and not outdir.is_dir():
        raise ConversionError(f"{outdir} exists and is not a directory")
    parent = outdir.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=parent))
        os.chmod(tmp, dir_mode())
    except OSError as exc:
        raise ConversionError(f"cannot write to {parent}: {exc.strerror}")
    try:
        (tmp / "model.py").write_text(_with_outdir(conv.source, outdir),
                                      encoding="utf-8")
        weights = tmp / WEIGHT_FILES[conv.weights_format]
        state = conv.state_dict
        write = (write_safetensors if conv.weights_format == "safetensors"
                 else write_torch)
        write(weights, state.specs, state.produce)
        _write_training(conv, tmp, outdir)
        report = json.dumps(conv.report, indent=2, sort_keys=False)
        (tmp / "conversion.json").write_text(report + "\n", encoding="utf-8")
        if outdir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.old.",
                                        dir=parent))
            outdir.rename(old / "x")
            tmp.rename(outdir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(outdir)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ConversionError(f"cannot write {outdir}: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return outdir


def _write_training(conv, tmp: Path, outdir: Path) -> None:
    """training.py and optimizer.safetensors, when the model was compiled
    (:mod:`migrate.training.emit`)."""
    port = getattr(conv, "training", None)
    if port is None or port.source is None:
        return
    from .training.emit import STATE_FILE, TRAINING_FILE
    (tmp / TRAINING_FILE).write_text(_with_outdir(port.source, outdir),
                                     encoding="utf-8")
    if port.state is not None:
        from .stream import Spec
        specs = {k: Spec(tuple(v.shape), v.dtype)
                 for k, v in port.state.items()}
        write_safetensors(tmp / STATE_FILE, specs, port.state.__getitem__)


def _with_outdir(source: str, outdir: Path) -> str:
    """model.py with the header's regenerate command naming the folder it
    is written to (its base name: run from the folder's parent)."""
    from .emit.source import shell_word
    name = shell_word(outdir.absolute().name, "OUTDIR")
    head, sep, rest = source.partition("\n# Source file")
    if not sep or "# Regenerate: " not in head:
        return source
    return head.replace(" -o OUTDIR", f" -o {name}", 1) + sep + rest
