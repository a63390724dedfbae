"""Inference speed: the generated ResNet50 port against the same network
written by hand in torch (``bench/resnet_hand.py``), same weights.

    python bench/inference.py [--repeat 20] [--batches 1,8] [--no-compile]
                              [--no-keras-torch] [--model resnet50.keras]

Builds Keras's ResNet50 (``weights=None``, seeded) in a TensorFlow
subprocess unless ``--model`` is given, converts it (the default, folded
port), loads the same weights into the hand-written module (through a
``flat=True`` conversion, whose keys are Keras's layer names), checks that
the two give the same outputs, then on CPU
times eager mode and ``torch.compile`` (default mode) at each batch size,
alternating the two models every repeat, and reports medians.  Where it
runs, Keras 3 with its torch backend (``KERAS_BACKEND=torch``, in a
subprocess, channels-last inputs) is timed on the same model too.

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

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import resnet_hand  # noqa: E402
import scale  # noqa: E402

_BUILD = r"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
keras.utils.set_random_seed(0)
keras.applications.ResNet50(weights=None).save(sys.argv[1])
"""

_KERAS_TORCH = r"""
import json, os, statistics, sys, time
os.environ["KERAS_BACKEND"] = "torch"
import keras, numpy as np, torch
model = keras.saving.load_model(sys.argv[1], compile=False)
out = {}
for b in json.loads(sys.argv[2]):
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(
        (b, 224, 224, 3), dtype=np.float32))
    with torch.no_grad():
        for _ in range(3):
            model(x, training=False)
        times = []
        for _ in range(int(sys.argv[3])):
            t = time.perf_counter()
            model(x, training=False)
            times.append(time.perf_counter() - t)
    out[b] = statistics.median(times)
print(json.dumps(out))
"""


def timed(fn, x) -> float:
    t = time.perf_counter()
    fn(x)
    return time.perf_counter() - t


def compare(port, hand, batches, repeat: int) -> dict:
    """{batch: (port times, hand times)}, alternating the models."""
    out = {}
    with torch.inference_mode():
        for b in batches:
            x = torch.randn(b, 3, 224, 224, generator=torch.Generator()
                            .manual_seed(b))
            for _ in range(3):
                port(x), hand(x)
            tp, th = [], []
            for i in range(repeat):
                first, second = (port, hand) if i % 2 == 0 else (hand, port)
                a, c = timed(first, x), timed(second, x)
                tp.append(a if first is port else c)
                th.append(c if first is port else a)
            out[b] = (tp, th)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--model", type=Path)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-keras-torch", action="store_true")
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="k2t-infer-"))
    try:
        model = args.model
        if model is None:
            model = tmp / "resnet50.keras"
            subprocess.run([sys.executable, "-c", _BUILD, str(model)],
                           check=True, stderr=subprocess.DEVNULL)
        import migrate
        port = migrate.convert(model).module()  # folded, the default
        hand = resnet_hand.from_keras(model)  # via the flat port's keys
        x = torch.randn(2, 3, 224, 224)
        with torch.inference_mode():
            err = (port(x) - hand(x)).abs().max().item()
        print(scale.machine() + f", {torch.get_num_threads()} torch threads")
        print(f"\nport vs hand-written outputs: max abs diff {err:.2g}")
        rows = [("eager", compare(port, hand, batches, args.repeat))]
        if not args.no_compile:
            t = time.perf_counter()
            cport, chand = torch.compile(port), torch.compile(hand)
            res = compare(cport, chand, batches, args.repeat)
            rows.append((f"torch.compile (compile + warm-up "
                         f"{time.perf_counter() - t:.0f} s for both)", res))
        print("\n| mode | batch | generated port, median / min (ms) | "
              "hand-written, median / min (ms) | ratio of medians | ratio "
              "of minima |")
        print("|---|---|---|---|---|---|")
        for mode, res in rows:
            for b, (tp, th) in res.items():
                p, h = statistics.median(tp), statistics.median(th)
                print(f"| {mode} | {b} | {1000 * p:.1f} / "
                      f"{1000 * min(tp):.1f} | {1000 * h:.1f} / "
                      f"{1000 * min(th):.1f} | **{p / h:.3f}x** | "
                      f"**{min(tp) / min(th):.3f}x** |")
        if not args.no_keras_torch:
            proc = subprocess.run(
                [sys.executable, "-c", _KERAS_TORCH, str(model),
                 json.dumps(batches), str(args.repeat)],
                capture_output=True, text=True,
                env=dict(os.environ, KERAS_BACKEND="torch"))
            if proc.returncode == 0:
                kt = json.loads(proc.stdout.strip().splitlines()[-1])
                for b in batches:
                    h = statistics.median(rows[0][1][b][1])
                    print(f"| Keras 3, torch backend (eager), in place of "
                          f"the port | {b} | {1000 * kt[str(b)]:.1f} | "
                          f"{1000 * h:.1f} | **{kt[str(b)] / h:.3f}x** | |")
            else:
                print(f"Keras 3 torch backend failed: "
                      f"{proc.stderr.strip().splitlines()[-1:]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
