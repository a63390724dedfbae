"""Scale: memory of a multi-GB conversion, and time against layer count.

    python bench/scale.py [--gib 2] [--layers 250,500,1000,2000]
                          [--no-verify] [--keep DIR]

1. Memory.  Writes a Keras 3 ``.keras`` model of ``--gib`` GiB of float32
   weights (a Sequential of 8192x8192 Dense layers, generated a layer at a
   time by ``bench/synth.py``, never committed), checks with Keras (in a
   subprocess, via ``migrate.verify``) that Keras loads it and that the port
   matches, then converts and saves it in a fresh process per weights format
   and records the peak RSS (``ru_maxrss``) after the imports and at the
   end, against the largest tensor and the total.
   The peak is read from /proc/self/status (VmHWM).
2. Layers.  Converts Sequentials of N ``Dense(8)`` layers in one process
   (after a warm-up conversion, so one-off lazy imports are not counted) and
   prints seconds per layer: constant per layer means linear time.

Prints Markdown tables (pasted into bench/README.md).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import synth  # noqa: E402

WIDTH = 8192

# Runs in a fresh interpreter: convert + save, report times and peak RSS.
# The peak is the kernel's VmHWM (high-water mark of this process's memory
# map); ru_maxrss is kept across exec, so it would report the parent's peak.
_CONVERT = r"""
import json, resource, sys, time

def peak_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

t0 = time.perf_counter()
import migrate
t1 = time.perf_counter()
rss_import = peak_kib()
conv = migrate.convert(sys.argv[1])
t2 = time.perf_counter()
conv.save(sys.argv[2], force=True, weights_format=sys.argv[3])
t3 = time.perf_counter()
print(json.dumps({
    "import_s": t1 - t0, "convert_s": t2 - t1, "save_s": t3 - t2,
    "rss_import_kib": rss_import,
    "rss_peak_kib": peak_kib(),
    "tensorflow": "tensorflow" in sys.modules}))
"""

_VERIFY = r"""
import json, sys
import migrate
p = migrate.verify(sys.argv[1])
print(json.dumps({"passed": p["passed"],
                  "err": max(r["max_abs_err"] for r in p["outputs"])}))
"""

_LAYERS = r"""
import json, sys, time
import migrate
paths = sys.argv[1:]
migrate.convert(paths[0]).save(paths[0] + ".warm", force=True)
out = []
for p in paths[1:]:
    t0 = time.perf_counter()
    conv = migrate.convert(p)
    t1 = time.perf_counter()
    conv.save(p + ".out", force=True)
    t2 = time.perf_counter()
    out.append({"convert_s": t1 - t0, "save_s": t2 - t1,
                "source_lines": conv.source.count("\n")})
print(json.dumps(out))
"""


def run_json(code: str, *args) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"subprocess failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def big_model(tmp: Path, gib: float) -> tuple[Path, int, int]:
    """The generated model, its weight bytes and its largest tensor."""
    per_layer = (WIDTH * WIDTH + WIDTH) * 4
    n = max(1, math.ceil(gib * (1 << 30) / per_layer))
    path = tmp / f"dense_{n}x{WIDTH}.keras"
    if not path.exists():
        t = time.perf_counter()
        synth.write_dense_stack(path, [WIDTH] * (n + 1), name="big_dense")
        print(f"generated {path.name}: {n} Dense({WIDTH}) layers, "
              f"{n * per_layer / (1 << 30):.2f} GiB of weights, "
              f"{time.perf_counter() - t:.1f} s", file=sys.stderr)
    return path, n * per_layer, WIDTH * WIDTH * 4


def memory(tmp: Path, gib: float, verify: bool) -> list[str]:
    path, total, largest = big_model(tmp, gib)
    rows = []
    if verify:  # in a subprocess: keep this process (and forks) small
        t = time.perf_counter()
        parity = run_json(_VERIFY, path)
        print(f"Keras loads {path.name}; port max abs err "
              f"{parity['err']:.2g}, passed={parity['passed']} "
              f"({time.perf_counter() - t:.0f} s)")
        if not parity["passed"]:
            sys.exit("parity failed on the generated model")
    mib = 1 << 20
    for fmt in ("safetensors", "pt"):
        r = run_json(_CONVERT, path, tmp / f"out_{fmt}", fmt)
        base, peak = r["rss_import_kib"] * 1024, r["rss_peak_kib"] * 1024
        rows.append(
            f"| {fmt} | {total / mib:,.0f} | {largest / mib:,.0f} | "
            f"{base / mib:,.0f} | {peak / mib:,.0f} | "
            f"{(peak - base) / mib:,.0f} ({(peak - base) / largest:.2f}x) | "
            f"{r['convert_s']:.2f} + {r['save_s']:.2f} | "
            f"{'yes' if r['tensorflow'] else 'no'} |")
        shutil.rmtree(tmp / f"out_{fmt}", ignore_errors=True)
    head = ["| weights format | weights (MiB) | largest tensor (MiB) | "
            "RSS after imports (MiB) | peak RSS (MiB) | peak - imports | "
            "convert + save (s) | TF imported |",
            "|---|---|---|---|---|---|---|---|"]
    return head + rows


def layers(tmp: Path, counts: list[int]) -> list[str]:
    warm = tmp / "warm.keras"
    synth.write_dense_stack(warm, [8] * 11)
    paths = []
    for n in counts:
        p = tmp / f"seq_{n}.keras"
        synth.write_dense_stack(p, [8] * (n + 1))
        paths.append(p)
    results = run_json(_LAYERS, warm, *paths)
    rows = ["| Dense layers | convert (s) | save (s) | total per layer (ms) "
            "| model.py lines |", "|---|---|---|---|---|"]
    for n, r in zip(counts, results):
        total = r["convert_s"] + r["save_s"]
        rows.append(f"| {n} | {r['convert_s']:.2f} | {r['save_s']:.2f} | "
                    f"{1000 * total / n:.2f} | {r['source_lines']} |")
    return rows


def machine() -> str:
    import h5py
    import numpy
    import torch
    return (f"{platform.node() and 'container'}: {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, torch {torch.__version__}, "
            f"numpy {numpy.__version__}, h5py {h5py.__version__}, "
            f"{time.strftime('%Y-%m-%d', time.gmtime())}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--layers", default="250,500,1000,2000")
    ap.add_argument("--no-verify", action="store_true",
                    help="skip loading the big model in Keras")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--keep", type=Path,
                    help="work (and keep the models) in this directory")
    args = ap.parse_args(argv)
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="k2t-scale-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        print(machine())
        if not args.skip_memory:
            print("\n" + "\n".join(memory(tmp, args.gib,
                                          not args.no_verify)))
        counts = [int(n) for n in args.layers.split(",") if n]
        if counts:
            print("\n" + "\n".join(layers(tmp, counts)))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
