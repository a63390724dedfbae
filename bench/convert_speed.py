"""Conversion speed against the I/O floor, measured in the same run.

    python bench/convert_speed.py [--repeat 3] [--gib 2] [--only NAME,...]
                                  [--keep DIR] [--no-keras-torch]

Models (built with ``weights=None`` in a TensorFlow subprocess into a
temporary directory, never committed): ResNet50 (.keras and .h5),
EfficientNetB0, a BERT-base-sized encoder made of built-in layers
(Embedding, MultiHeadAttention, LayerNormalization, Dense, Add; 12 blocks,
width 768, 30,522 tokens), and the ``--gib`` GiB Dense stack of
``bench/scale.py``.

For each model, alternately, in fresh processes, ``--repeat`` times
(medians reported):

* floor: read every weight with h5py (for ``.keras``, from the zip member
  read into memory) and write them all with ``safetensors.numpy.save_file``;
* keras2torch: ``import migrate`` (timed separately), ``migrate.convert``
  and ``Conversion.save`` (model.py, model.safetensors, conversion.json);
  the process then reports whether ``tensorflow`` is in ``sys.modules``;
* Keras 3 with its torch backend (``KERAS_BACKEND=torch``), where it runs:
  ``keras.saving.load_model`` (no conversion, for scale: it is an alternative
  way to run a Keras model under torch, not a port) and, separately, the
  time to import keras.

Prints a Markdown table (pasted into bench/README.md).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import scale  # noqa: E402

_BUILD = r"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
from keras import layers
out = sys.argv[1]
keras.utils.set_random_seed(0)
m = keras.applications.ResNet50(weights=None)
m.save(os.path.join(out, "resnet50.keras"))
m.save(os.path.join(out, "resnet50.h5"))
keras.applications.EfficientNetB0(weights=None).save(
    os.path.join(out, "efficientnetb0.keras"))

def bert(vocab=30522, seq=128, width=768, heads=12, blocks=12, ff=3072):
    ids = keras.Input((seq,), dtype="int32", name="input_ids")
    pos = keras.Input((seq,), dtype="int32", name="position_ids")
    x = layers.Add(name="embeddings")([
        layers.Embedding(vocab, width, name="word_embeddings")(ids),
        layers.Embedding(512, width, name="position_embeddings")(pos)])
    x = layers.LayerNormalization(epsilon=1e-12, name="embeddings_ln")(x)
    for i in range(blocks):
        a = layers.MultiHeadAttention(heads, width // heads,
                                      name=f"block{i}_attention")(x, x)
        x = layers.LayerNormalization(epsilon=1e-12, name=f"block{i}_ln1")(
            layers.Add(name=f"block{i}_add1")([x, a]))
        h = layers.Dense(ff, activation="gelu", name=f"block{i}_ff1")(x)
        h = layers.Dense(width, name=f"block{i}_ff2")(h)
        x = layers.LayerNormalization(epsilon=1e-12, name=f"block{i}_ln2")(
            layers.Add(name=f"block{i}_add2")([x, h]))
    return keras.Model([ids, pos], x, name="bert_base")

bert().save(os.path.join(out, "bert_base.keras"))
"""

_FLOOR = r"""
import io, sys, time, zipfile
t0 = time.perf_counter()
import h5py, numpy as np
from safetensors.numpy import save_file
t1 = time.perf_counter()
path, out = sys.argv[1], sys.argv[2]
if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as z:
        src = io.BytesIO(z.read("model.weights.h5"))
else:
    src = path
arrays = {}
with h5py.File(src, "r") as f:
    def take(name, obj):
        if isinstance(obj, h5py.Dataset):
            arrays[name] = np.asarray(obj[()])
    f.visititems(take)
save_file(arrays, out)
print(time.perf_counter() - t1, sum(a.nbytes for a in arrays.values()))
"""

_CONVERT = r"""
import sys, time
t0 = time.perf_counter()
import migrate
t1 = time.perf_counter()
conv = migrate.convert(sys.argv[1])
conv.save(sys.argv[2], force=True)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1, int("tensorflow" in sys.modules),
      int("torch._dynamo" in sys.modules))
"""

_KERAS_TORCH = r"""
import os, sys, time
os.environ["KERAS_BACKEND"] = "torch"
t0 = time.perf_counter()
import keras
t1 = time.perf_counter()
m = keras.saving.load_model(sys.argv[1], compile=False)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1, int("tensorflow" in sys.modules))
"""


def run(code: str, *args, env=None) -> list[float]:
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)],
                          capture_output=True, text=True, env=env,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1]
                           if proc.stderr.strip() else "failed")
    return [float(v) for v in proc.stdout.split()]


def build(tmp: Path, gib: float) -> dict[str, Path]:
    names = ["resnet50.keras", "resnet50.h5", "efficientnetb0.keras",
             "bert_base.keras"]
    if not all((tmp / n).exists() for n in names):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", _BUILD, str(tmp)], check=True,
                       stderr=subprocess.DEVNULL)
        print(f"built models in {time.perf_counter() - t:.0f} s",
              file=sys.stderr)
    models = {"ResNet50 (.keras)": tmp / names[0],
              "ResNet50 (.h5)": tmp / names[1],
              "EfficientNetB0 (.keras)": tmp / names[2],
              "BERT-base encoder (.keras)": tmp / names[3]}
    if gib > 0:
        path, _, _ = scale.big_model(tmp, gib)
        models[f"Dense stack, {gib:g} GiB (.keras)"] = path
    return models


def measure(name: str, path: Path, tmp: Path, repeat: int,
            keras_torch: bool) -> str:
    floor, conv, imp, tf, dyn, kt, kt_imp = [], [], [], 0, 0, [], []
    for _ in range(repeat):
        out = tmp / "floor.safetensors"
        t, nbytes = run(_FLOOR, path, out)
        floor.append(t)
        out.unlink()
        i, c, has_tf, has_dyn = run(_CONVERT, path, tmp / "port")
        imp.append(i)
        conv.append(c)
        tf, dyn = max(tf, has_tf), max(dyn, has_dyn)
        shutil.rmtree(tmp / "port")
        if keras_torch:
            env = dict(os.environ, KERAS_BACKEND="torch")
            try:
                ki, kl, _ = run(_KERAS_TORCH, path, env=env)
                kt.append(kl)
                kt_imp.append(ki)
            except RuntimeError as exc:
                kt = [f"fails: {str(exc)[:60]}"]
                keras_torch = False
    f, c = statistics.median(floor), statistics.median(conv)
    ktxt = "-"
    if kt and isinstance(kt[0], float):
        ktxt = (f"{statistics.median(kt):.2f} s "
                f"(+ {statistics.median(kt_imp):.1f} s import)")
    elif kt:
        ktxt = kt[0]
    return (f"| {name} | {nbytes / (1 << 20):,.0f} | {f:.2f} | {c:.2f} | "
            f"**{c / f:.2f}x** | {statistics.median(imp):.1f} | "
            f"{'yes' if tf else 'no'} | {ktxt} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--gib", type=float, default=2.0,
                    help="size of the Dense stack (0: skip it)")
    ap.add_argument("--only", default="",
                    help="comma-separated substrings of model names")
    ap.add_argument("--keep", type=Path, help="work (and keep the models) "
                    "in this directory")
    ap.add_argument("--no-keras-torch", action="store_true")
    args = ap.parse_args(argv)
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="k2t-speed-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        print(scale.machine())
        models = build(tmp, args.gib)
        print("\n| model | weights (MiB) | I/O floor (s) | keras2torch "
              "convert + save (s) | ratio | import migrate (s) | TF "
              "imported | Keras 3, torch backend: load_model |")
        print("|---|---|---|---|---|---|---|---|")
        for name, path in models.items():
            if args.only and not any(s.lower() in name.lower()
                                     for s in args.only.split(",")):
                continue
            print(measure(name, path, tmp, args.repeat,
                          not args.no_keras_torch), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
