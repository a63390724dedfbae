"""Inference speed side by side: the port (eager and torch.compile), the
same network written by hand in torch, Keras on TensorFlow (eager and
``jit_compile``) and Keras 3 on its torch backend, for three models:

* ResNet50 (``keras.applications``, ``weights=None``), (B, 224, 224, 3);
* a masked BiLSTM classifier, ``Embedding(1000, 64, mask_zero=True) ->
  Bidirectional(LSTM(128, return_sequences=True)) -> GlobalAveragePooling1D
  -> Dense(2)`` on 32 sequences of 200 tokens, each padded at the end to a
  random length in 50..200, and the same model without ``mask_zero``;
* a 4-layer Transformer encoder (hidden 256, 8 heads, feed-forward 1024,
  post-norm), (16, 128, 256).

    python bench/side_by_side.py [--repeat 10] [--only resnet50,encoder,...]
                                 [--resnet-batch 1] [--threads N]
                                 [--no-compile] [--no-keras-torch]
                                 [--plot bench/side_by_side.png] [--json F]

The models are built (seeded) and timed on TensorFlow in one Keras
subprocess, on Keras's torch backend in another (``KERAS_BACKEND=torch``),
then converted and timed here.  The hand-written models load the port's
weights and must give its outputs.  Every runner is warmed up twice, then
timed ``--repeat`` times; the table gives medians and minima (ms), and
the plot the minima.  Prints a Markdown table (pasted into bench/README.md).
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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import resnet_hand  # noqa: E402
import scale  # noqa: E402

MODELS = ("resnet50", "bilstm_masked", "bilstm_unmasked", "encoder")

# Builds the models and their inputs in ``argv[1]``; times Keras on
# TensorFlow.  Shared by both Keras subprocesses: ``argv[2]`` is "build"
# (TensorFlow) or "time" (the torch backend, loading the saved models).
_KERAS = r"""
import json, os, statistics, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
threads = int(os.environ.get("K2T_BENCH_THREADS", "0"))
if sys.argv[2] == "build":
    import tensorflow as tf
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
elif threads:
    import torch
    torch.set_num_threads(threads)
import keras, numpy as np
out_dir, mode, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
only, resnet_batch = sys.argv[4].split(","), int(sys.argv[5])
L = keras.layers


def bilstm(masked):
    keras.utils.set_random_seed(1)
    ids = keras.Input((200,), dtype="int32")
    x = L.Embedding(1000, 64, mask_zero=masked)(ids)
    x = L.Bidirectional(L.LSTM(128, return_sequences=True))(x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(ids, L.Dense(2)(x))


def encoder():
    keras.utils.set_random_seed(2)
    inp = keras.Input((128, 256))
    x = inp
    for i in range(4):
        a = L.MultiHeadAttention(8, 32, name=f"attention_{i}")(x, x)
        x = L.LayerNormalization(name=f"norm1_{i}")(x + a)
        f = L.Dense(1024, activation="relu", name=f"ff1_{i}")(x)
        f = L.Dense(256, name=f"ff2_{i}")(f)
        x = L.LayerNormalization(name=f"norm2_{i}")(x + f)
    return keras.Model(inp, x)


def inputs(name):
    rng = np.random.default_rng(0)
    if name == "resnet50":
        return rng.standard_normal((resnet_batch, 224, 224, 3), "float32")
    if name == "encoder":
        return rng.standard_normal((16, 128, 256), "float32")
    ids = rng.integers(1, 1000, (32, 200)).astype("int32")
    for row, n in enumerate(rng.integers(50, 201, 32)):
        ids[row, n:] = 0
    return ids


def timed(fn, x):
    for _ in range(2):
        np.asarray(fn(x))
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        np.asarray(fn(x))
        times.append(time.perf_counter() - t)
    return times


results = {}
for name in only:
    path = os.path.join(out_dir, name + ".keras")
    if mode == "build":
        keras.utils.set_random_seed(0)
        model = {"resnet50": lambda: keras.applications.ResNet50(
                     weights=None),
                 "bilstm_masked": lambda: bilstm(True),
                 "bilstm_unmasked": lambda: bilstm(False),
                 "encoder": encoder}[name]()
        model.save(path)
        x = inputs(name)
        np.save(os.path.join(out_dir, name + ".npy"), x)
        np.save(os.path.join(out_dir, name + ".out.npy"),
                np.asarray(model(x, training=False)))
        results[name] = {
            "Keras 3, TensorFlow, eager": timed(
                lambda a: model(a, training=False), x),
            "Keras 3, TensorFlow, jit_compile": timed(tf.function(
                lambda a: model(a, training=False), jit_compile=True), x)}
    else:
        import torch
        model = keras.saving.load_model(path, compile=False)
        x = torch.from_numpy(np.load(os.path.join(out_dir, name + ".npy")))
        with torch.no_grad():
            times = timed(lambda a: model(a, training=False).cpu(), x)
        results[name] = {"Keras 3, torch backend, eager": times}
print(json.dumps(results))
"""


# -- hand-written torch -------------------------------------------------------
class HandBiLSTM(nn.Module):
    """The BiLSTM classifier as one would write it in torch: a packed
    bidirectional nn.LSTM when there is padding (token 0), a masked mean."""

    def __init__(self, masked: bool):
        super().__init__()
        self.masked = masked
        self.embedding = nn.Embedding(1000, 64)
        self.lstm = nn.LSTM(64, 128, batch_first=True, bidirectional=True)
        self.logits = nn.Linear(256, 2)

    def forward(self, ids):
        x = self.embedding(ids)
        if not self.masked:
            return self.logits(self.lstm(x)[0].mean(dim=1))
        lengths = (ids != 0).sum(dim=1)
        packed = nn.utils.rnn.pack_padded_sequence(
            x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out = nn.utils.rnn.pad_packed_sequence(
            self.lstm(packed)[0], batch_first=True,
            total_length=ids.shape[1])[0]  # zeros at padded steps
        return self.logits(out.sum(dim=1) / lengths[:, None])


class HandBlock(nn.Module):
    """A post-norm Transformer encoder block with
    F.scaled_dot_product_attention (nanoGPT style)."""

    def __init__(self, dim=256, heads=8, hidden=1024):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-3)  # Keras's default
        self.ff1 = nn.Linear(dim, hidden)
        self.ff2 = nn.Linear(hidden, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-3)

    def forward(self, x):
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(
            2, 0, 3, 1, 4)  # 3 x (B, heads, T, dim)
        a = F.scaled_dot_product_attention(q, k, v)
        x = self.norm1(x + self.proj(a.transpose(1, 2).flatten(2)))
        return self.norm2(x + self.ff2(F.relu(self.ff1(x))))


class HandEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(HandBlock() for _ in range(4))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def _load_in_order(hand: nn.Module, tensors: list[torch.Tensor]) -> None:
    """Copy the port's tensors into ``hand``'s parameters, both in layer
    order (checked by shape)."""
    params = list(hand.parameters())
    assert len(params) == len(tensors), (len(params), len(tensors))
    with torch.no_grad():
        for p, t in zip(params, tensors):
            p.copy_(t)


def hand_model(name: str, port: nn.Module, path: Path) -> nn.Module:
    """The hand-written model of ``name`` with the port's weights."""
    state = port.state_dict()
    if name == "resnet50":  # resnet_hand renames the flat port's keys
        return resnet_hand.from_keras(path)
    tensors = [v for k, v in state.items() if "num_batches" not in k]
    if name.startswith("bilstm"):
        hand = HandBiLSTM(masked=name == "bilstm_masked")
    else:
        hand = HandEncoder()
        blocks, tensors = tensors, []
        for i in range(0, len(blocks), 16):  # q, k, v, output, norm, ...
            qw, qb, kw, kb, vw, vb = blocks[i:i + 6]
            tensors += [torch.cat([qw, kw, vw]), torch.cat([qb, kb, vb]),
                        *blocks[i + 6:i + 16]]
    _load_in_order(hand, tensors)
    return hand.eval()


# -- timing ---------------------------------------------------------------------
def timed(fn, x, repeat: int) -> list[float]:
    with torch.inference_mode():
        for _ in range(2):
            fn(x)
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t)
    return times


def port_input(name: str, x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x)
    if name == "resnet50":  # the port is channels-first
        t = t.permute(0, 3, 1, 2).contiguous()
    return t


def keras_subprocess(tmp: Path, mode: str, names, args) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if mode == "time":
        env["KERAS_BACKEND"] = "torch"
    proc = subprocess.run(
        [sys.executable, "-c", _KERAS, str(tmp), mode, str(args.repeat),
         ",".join(names), str(args.resnet_batch)],
        capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(f"Keras ({mode}) failed: "
              f"{proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return {}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--only", default=",".join(MODELS))
    ap.add_argument("--resnet-batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0,
                    help="intra-op threads for torch and TensorFlow "
                    "(default: theirs)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-keras-torch", action="store_true")
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--json", type=Path, help="also write the times here")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["K2T_BENCH_THREADS"] = str(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="k2t-side-"))
    try:
        results = keras_subprocess(tmp, "build", names, args)
        if not args.no_keras_torch:
            for name, res in keras_subprocess(tmp, "time", names,
                                              args).items():
                results[name].update(res)
        if args.json:  # Keras's times, in case the rest fails
            args.json.write_text(json.dumps(results, indent=1))
        import migrate
        for name in names:
            port = migrate.convert(tmp / f"{name}.keras").module().eval()
            hand = hand_model(name, port, tmp / f"{name}.keras")
            x = port_input(name, np.load(tmp / f"{name}.npy"))
            want = np.load(tmp / f"{name}.out.npy")
            with torch.inference_mode():
                err = float(np.abs(port(x).numpy() - want).max())
                hand_err = float((hand(x) - port(x)).abs().max())
            print(f"{name}: port vs Keras max abs err {err:.2g}, "
                  f"hand-written vs port {hand_err:.2g}", file=sys.stderr)
            res = results[name]
            res["port, eager"] = timed(port, x, args.repeat)
            res["hand-written torch, eager"] = timed(hand, x, args.repeat)
            if not args.no_compile:
                res["port, torch.compile"] = timed(torch.compile(port), x,
                                                   args.repeat)
                res["hand-written torch, torch.compile"] = timed(
                    torch.compile(hand), x, args.repeat)
            res["_parity"] = err
        table(results, names)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        if args.plot:
            plot(results, names, args.plot)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


RUNNERS = ("port, eager", "port, torch.compile", "hand-written torch, eager",
           "hand-written torch, torch.compile", "Keras 3, TensorFlow, eager",
           "Keras 3, TensorFlow, jit_compile",
           "Keras 3, torch backend, eager")


def table(results: dict, names) -> None:
    print(scale.machine() + f", {torch.get_num_threads()} torch threads, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print("\n| runner | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for runner in RUNNERS:
        cells = []
        for name in names:
            times = results[name].get(runner)
            cells.append("" if not times else
                         f"{1000 * statistics.median(times):.1f} / "
                         f"{1000 * min(times):.1f}")
        if any(cells):
            print(f"| {runner} | " + " | ".join(cells) + " |")
    ratios = []
    for name in names:
        res = results[name]
        if "hand-written torch, eager" in res:
            ratios.append(f"{name} port / hand-written (minima, eager): "
                          f"{min(res['port, eager']) / min(res['hand-written torch, eager']):.2f}x")
    if "bilstm_masked" in results and "bilstm_unmasked" in results:
        m = min(results["bilstm_masked"]["port, eager"])
        u = min(results["bilstm_unmasked"]["port, eager"])
        ratios.append(f"masked / unmasked BiLSTM port (minima, eager): "
                      f"{m / u:.2f}x")
    print("\n" + "\n".join(f"- {r}" for r in ratios))


def plot(results: dict, names, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no matplotlib (pip install keras2torch[bench]): no plot",
              file=sys.stderr)
        return
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 4))
    axes = np.atleast_1d(axes)
    for ax, name in zip(axes, names):
        runners = [r for r in RUNNERS if results[name].get(r)]
        mins = [1000 * min(results[name][r]) for r in runners]
        ax.barh(range(len(runners)), mins,
                color=["C0" if r.startswith("port") else
                       "C2" if r.startswith("hand") else "C1"
                       for r in runners])
        ax.set_yticks(range(len(runners)))
        ax.set_yticklabels(runners if ax is axes[0] else [], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=9)
        ax.set_xscale("log")
        ax.set_xlabel("ms (minimum, log scale)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
