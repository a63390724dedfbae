"""Lines of the generated model.py, flat and folded (README's folding
table).

    python bench/fold_lines.py [--keep DIR] [--only NAME,...]

Builds, in a TensorFlow subprocess with ``weights=None``, the Keras 3
applications ResNet50, MobileNetV2, DenseNet121, EfficientNetB0,
ConvNeXtTiny and InceptionV3 at 96x96 and a 12-layer BERT-style encoder
made of built-in layers (Embedding with ``mask_zero``, MultiHeadAttention,
LayerNormalization, Dense, Add), converts each with and without
``--flat`` and prints ``wc -l model.py`` of both as a Markdown table.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

APPS = ["ResNet50", "MobileNetV2", "DenseNet121", "EfficientNetB0",
        "ConvNeXtTiny", "InceptionV3"]
BERT = "BERT-style encoder, 12 layers"
TARGET = {"ResNet50": 160, "MobileNetV2": 150, "DenseNet121": 150,
          "EfficientNetB0": 220, "ConvNeXtTiny": 160, "InceptionV3": 450,
          BERT: 120}

_BUILD = r"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
from keras import layers
out, names = sys.argv[1], sys.argv[2:]
keras.utils.set_random_seed(0)
for name in names:
    if name == "bert":
        continue
    path = os.path.join(out, name + ".keras")
    if not os.path.exists(path):
        getattr(keras.applications, name)(
            weights=None, input_shape=(96, 96, 3)).save(path)


def bert(vocab=1000, seq=32, width=64, heads=4, blocks=12, ff=256):
    ids = keras.Input((seq,), dtype="int32", name="input_ids")
    pos = keras.Input((seq,), dtype="int32", name="position_ids")
    x = layers.Add(name="embeddings")([
        layers.Embedding(vocab, width, mask_zero=True,
                         name="word_embeddings")(ids),
        layers.Embedding(seq, width, name="position_embeddings")(pos)])
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
    cls = x[:, 0]
    return keras.Model([ids, pos], cls, name="bert_encoder")


path = os.path.join(out, "bert.keras")
if "bert" in names and not os.path.exists(path):
    bert().save(path)
"""


def build(out: Path, names: list[str]) -> None:
    subprocess.run([sys.executable, "-c", _BUILD, str(out), *names],
                   check=True, stderr=subprocess.DEVNULL)


def lines(path: Path, flat: bool) -> int:
    import migrate
    with migrate.convert(str(path), flat=flat) as conv:
        return conv.source.count("\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", help="build into (and reuse) this folder")
    ap.add_argument("--only", help="comma-separated names (bert: BERT)")
    args = ap.parse_args()
    names = APPS + ["bert"]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    out = Path(args.keep or tempfile.mkdtemp())
    out.mkdir(parents=True, exist_ok=True)
    build(out, names)
    print("| model | flat | folded | target |\n|---|---|---|---|")
    for n in names:
        p = out / f"{n}.keras"
        label = BERT if n == "bert" else n
        print(f"| {label} | {lines(p, True)} | {lines(p, False)} | "
              f"{TARGET[label]} |", flush=True)


if __name__ == "__main__":
    main()
