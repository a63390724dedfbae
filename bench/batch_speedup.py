"""How much faster is ``convert_many`` with a process pool?

    python bench/batch_speedup.py [--models N] [--jobs 1,2,4] [--verify]
                                  [--big N] [--dask] [--fresh-keras]

Builds a model zoo in a temporary directory (N copies of the small fixture
models, plus --big generated Keras CNNs of ~3M parameters each when
TensorFlow is installed), converts it with ``jobs`` 1 and more (and a Dask
LocalCluster with --dask), and prints a Markdown table of wall times.
With --verify --fresh-keras, also sequentially with a new Keras process per
model (how verification ran before one Keras process served a worker).
Every run must give the same results, parity figures included, as the
sequential one.  Results go in
bench/README.md, with the machine they were measured on.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import migrate  # noqa: E402

FIXTURES = ["k3_small_cnn", "k3_text_mlp", "k3_mlp", "k3_nested",
            "k3_shared", "k3_two_io"]

BIG = """
import sys, keras
from keras import layers
n, out = int(sys.argv[1]), sys.argv[2]
for i in range(n):
    x = inp = keras.Input((64, 64, 3))
    for f in (64, 128, 256, 256):
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(512, activation="relu")(x)
    x = layers.Dense(10)(x)
    keras.Model(inp, x, name=f"big_{i}").save(f"{out}/big_{i}.keras")
"""


def build_zoo(root: Path, copies: int, big: int) -> list[Path]:
    for i in range(copies):
        case = FIXTURES[i % len(FIXTURES)]
        shutil.copy(ROOT / "fixtures" / "models" / case / "model.keras",
                    root / f"{case}_{i}.keras")
    if big:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        subprocess.run([sys.executable, "-c", BIG, str(big), str(root)],
                       check=True, env=env)
    return sorted(root.iterdir())


def timed(label, fn):
    start = time.perf_counter()
    results = fn()
    seconds = time.perf_counter() - start
    print(f"  {label}: {seconds:.1f} s", file=sys.stderr)
    return seconds, results


def key(results, parity=False):
    """What must not change between runs.  Parity figures only between
    runs in one process: workers run torch with one thread, which changes
    the port's float32 rounding (errors differ by an ulp or so)."""
    return [(Path(r.source).name, r.status,
             r.report and r.report["layers"],
             r.report and r.report["source"]["sha256"],
             r.report and parity and r.report["parity"]) for r in results]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", type=int, default=12)
    p.add_argument("--big", type=int, default=0)
    p.add_argument("--jobs", default="1,2")
    p.add_argument("--verify", action="store_true")
    p.add_argument("--dask", action="store_true")
    p.add_argument("--fresh-keras", action="store_true")
    a = p.parse_args()
    jobs = [int(j) for j in a.jobs.split(",")]
    with tempfile.TemporaryDirectory(prefix="k2t-bench-") as tmp:
        zoo = Path(tmp, "zoo")
        zoo.mkdir()
        models = build_zoo(zoo, a.models, a.big)
        size = sum(m.stat().st_size for m in models) / 1e6
        print(f"{len(models)} models, {size:.1f} MB, verify={a.verify}, "
              f"{os.cpu_count()} CPUs, {platform.processor() or '?'}",
              file=sys.stderr)
        rows, base, base_key = [], None, None
        for j in jobs:
            out = Path(tmp, f"out_j{j}")
            s, res = timed(f"jobs={j}", lambda: migrate.convert_many(
                models, out, jobs=j, verify=a.verify))
            if base is None:
                base, base_key, base_res = s, key(res), res
            assert key(res) == base_key, "results differ from jobs=1"
            assert all(r.ok for r in res), [r.error for r in res
                                            if not r.ok]
            rows.append((f"jobs={j}", s))
        if a.verify and a.fresh_keras:
            import importlib
            v = importlib.import_module("migrate.verify")
            reuse, v._server = v._server, lambda major: None
            try:
                s, res = timed("jobs=1, Keras process per model", lambda: (
                    migrate.convert_many(models, Path(tmp, "out_fresh"),
                                         verify=True)))
            finally:
                v._server = reuse
            assert key(res, True) == key(base_res, True), \
                "a Keras process per model gives other results"
            rows.append(("jobs=1, a Keras process per model", s))
        if a.dask:
            from distributed import Client, LocalCluster
            n = max(jobs)
            with LocalCluster(n_workers=n, threads_per_worker=1,
                              host="127.0.0.1", dashboard_address=None) \
                    as cluster, Client(cluster) as client:
                ex = client.get_executor()
                s, res = timed(f"dask {n} workers", lambda: (
                    migrate.convert_many(models, Path(tmp, "out_dask"),
                                         executor=ex, verify=a.verify)))
                assert key(res) == base_key
                rows.append((f"dask LocalCluster, {n} workers", s))
    print("| run | models | verify | wall time | speed-up |")
    print("|---|---|---|---|---|")
    for label, s in rows:
        print(f"| {label} | {len(models)} | {'yes' if a.verify else 'no'} "
              f"| {s:.1f} s | {base / s:.2f}x |")


if __name__ == "__main__":
    main()
