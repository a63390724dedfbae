"""The keras.applications coverage matrix: build every architecture in
Keras (a subprocess per backend), convert every save, compare the port with
Keras, and write the table into README.md.

    python bench/coverage.py                  # full matrix, updates README
    python bench/coverage.py --only ResNet50,MobileNetV3Small --no-readme
    python bench/coverage.py --json coverage.json
    python bench/coverage.py --from-json coverage.json   # table only

Each model is built by ``fixtures/cases_applications.py --serve`` (Keras 3
saves ``.keras`` and a legacy ``.h5``; tf-keras a legacy ``.h5``) with seeded
random weights, converted with :func:`migrate.convert` and run on the
seeded inputs Keras ran on; its files are deleted right after, so the full
matrix needs only one model's worth of disk at a time.  The README table
between ``<!-- coverage:start -->`` and ``<!-- coverage:end -->`` is
replaced by the results of the run, never written by hand.

``tests/test_applications.py`` uses the same :class:`KerasBuilder` and
:func:`check` on a representative subset.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fixtures.cases_applications import ARCHS, BACKENDS, formats  # noqa: E402

ATOL = 1e-4
FORMAT_LABELS = {("keras3", "model.keras"): ".keras (Keras 3)",
                 ("keras3", "model.h5"): ".h5 (Keras 3)",
                 ("keras2", "model.h5"): ".h5 (Keras 2)"}
# families whose constructors accept input_shape=(None, None, 3)
DYNAMIC_FAMILIES = {"ResNet", "MobileNet", "EfficientNet", "EfficientNetV2",
                    "ConvNeXt", "RegNet", "DenseNet"}
START, END = "<!-- coverage:start -->", "<!-- coverage:end -->"


class KerasBuilder:
    """A ``cases_applications --serve`` subprocess for one backend: builds
    one model per request into ``out`` and answers with its JSON row."""

    def __init__(self, backend: str, out: Path, timeout: float = 900):
        self.backend, self.out, self.timeout = backend, Path(out), timeout
        self.proc = None

    def start(self):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                   TF_ENABLE_ONEDNN_OPTS="0", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fixtures.cases_applications", "--serve",
             "--backend", self.backend, "--out", str(self.out)],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, bufsize=1)
        ready = self._read()
        self.version = ready["ready"]
        self.tensorflow = ready.get("tensorflow", "?")
        return self

    def _read(self) -> dict:
        while True:
            ready, _, _ = select.select([self.proc.stdout], [], [],
                                        self.timeout)
            if not ready:
                self.close()
                raise TimeoutError(f"{self.backend} builder: no answer in "
                                   f"{self.timeout:.0f} s")
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.backend} builder exited "
                                   f"({self.proc.poll()})")
            if line.startswith("{"):
                return json.loads(line)

    def build(self, spec: str) -> dict:
        if self.proc is None:
            self.start()
        self.proc.stdin.write(spec + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


def check(row: dict, atol: float = ATOL) -> list[dict]:
    """Convert every saved file of a built model and compare the port's
    output with Keras's; one result per file."""
    import migrate
    from migrate.verify import run_port

    d = Path(row["dir"])
    with np.load(d / "reference.npz", allow_pickle=False) as ref:
        x, want = ref["in_0"], ref["out_0"].astype(np.float64)
    results = []
    for name in row["files"]:
        res = {"arch": row["arch"], "variant": row["variant"],
               "backend": row["backend"], "file": name,
               "format": FORMAT_LABELS[row["backend"], name]}
        start = time.time()
        try:
            conv = migrate.convert(d / name)
            (got,) = run_port(conv, [x])
            if got.shape != want.shape:
                raise AssertionError(f"port output shape {got.shape}, "
                                     f"Keras {want.shape}")
            err = float(np.max(np.abs(got - want)))
            scale = float(np.max(np.abs(want)))
            res.update(converted=True, max_abs_err=err,
                       max_rel_err=err / scale if scale else err,
                       passed=bool(err <= atol),
                       permutes=len(conv.report["permutes"]),
                       layers=len(conv.report["layers"]))
        except Exception as exc:  # recorded: the matrix goes on
            res.update(converted=False, passed=False,
                       error=f"{type(exc).__name__}: {exc}"[:300])
        res["seconds"] = round(time.time() - start, 2)
        results.append(res)
    return results


def plan(only=None, full_variants=True) -> list[tuple[str, str]]:
    """(backend, ARCH:VARIANT) for the matrix: every architecture with the
    logits head (``top``) and without the top (feature map); the first
    architecture of each family also with the softmax head and both
    pooling options, and with an unknown input size where the family
    allows one."""
    specs, seen = [], set()
    for arch in ARCHS:
        if only and arch.name not in only:
            continue
        variants = ["top", "notop"]
        if full_variants and arch.family not in seen:
            variants += ["softmax", "notop-avg", "notop-max"]
            if arch.family in DYNAMIC_FAMILIES:
                variants.append("dynamic")
        seen.add(arch.family)
        for backend in BACKENDS:
            if backend == "keras3" and not arch.keras3:
                continue
            specs += [(backend, f"{arch.name}:{v}") for v in variants]
    return specs


def run(specs, work: Path, log=print, versions=None,
        progress=None) -> list[dict]:
    """Build, convert and check every (backend, spec); ``versions`` (a
    dict) gets each backend's Keras and TensorFlow version; ``progress``
    is called with the rows so far after each model."""
    rows = []
    versions = {} if versions is None else versions
    for backend in BACKENDS:
        todo = [s for b, s in specs if b == backend]
        if not todo:
            continue
        with KerasBuilder(backend, work) as builder:
            versions[backend] = builder.version
            versions["tensorflow"] = builder.tensorflow
            for spec in todo:
                built = builder.build(spec)
                if "error" in built:
                    arch, _, variant = spec.partition(":")
                    results = [{"arch": arch, "variant": variant,
                                "backend": backend, "file": f,
                                "format": FORMAT_LABELS[backend, f],
                                "converted": False, "passed": False,
                                "error": "Keras: " + built["error"]}
                               for f in formats(backend)]
                else:
                    results = check(built)
                    for r in results:
                        r["keras_seconds"] = built["seconds"]
                        r["params"] = built.get("params")
                    shutil.rmtree(built["dir"], ignore_errors=True)
                for r in results:
                    r["keras_version"] = builder.version
                    log(_line(r))
                rows += results
                if progress:
                    progress(rows)
    return rows


def _line(r: dict) -> str:
    head = f"{r['backend']} {r['arch']}:{r['variant']} {r['file']}"
    if not r["converted"]:
        return f"{head}: FAILED {r.get('error', '')}"
    flag = "ok" if r["passed"] else "ABOVE ATOL"
    return (f"{head}: {flag} abs {r['max_abs_err']:.2e} rel "
            f"{r['max_rel_err']:.2e} permutes {r['permutes']} "
            f"({r['seconds']:.1f} s)")


def environment(versions: dict) -> dict:
    """Where and with what the run happened, for the table's caption."""
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"date": time.strftime("%Y-%m-%d", time.gmtime()),
            "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            **versions}


def merge(saved: list[dict]) -> dict:
    """Several runs' ``--json`` files as one (later rows replace earlier
    ones for the same model and file): the matrix may be run family by
    family."""
    rows, env, seconds = {}, {}, 0.0
    for s in saved:
        seconds += s["seconds"]
        env.update(s.get("environment") or {})
        for r in s["results"]:
            rows[r["backend"], r["arch"], r["variant"], r["file"]] = r
    return {"seconds": seconds, "environment": env,
            "results": list(rows.values())}


def _err(r: dict) -> str:
    return f"{r['max_abs_err']:.1e} / {r['max_rel_err']:.1e}"


_LOG = re.compile(r"^(keras[23]) ([^:\s]+):(\S+) (\S+): (?:(ok|ABOVE ATOL) "
                  r"abs (\S+) rel (\S+) permutes (\d+) \((\S+) s\)|"
                  r"FAILED (.*))$")


def rows_from_log(text: str) -> list[dict]:
    """The results a run printed on stderr (one line per file), for a
    run stopped before it wrote its ``--json`` file."""
    rows = []
    for line in text.splitlines():
        m = _LOG.match(line.strip())
        if not m:
            continue
        backend, arch, variant, name, flag, err, rel, perm, sec, why = \
            m.groups()
        r = {"arch": arch, "variant": variant, "backend": backend,
             "file": name, "format": FORMAT_LABELS[backend, name]}
        if flag:
            r.update(converted=True, passed=flag == "ok",
                     max_abs_err=float(err), max_rel_err=float(rel),
                     permutes=int(perm), seconds=float(sec))
        else:
            r.update(converted=False, passed=False, error=why)
        rows.append(r)
    return rows


def _cell(rs: list[dict]) -> str:
    """One architecture in one format: every variant passed, and the
    largest errors among them."""
    if not rs:
        return "—"
    bad = [r for r in rs if not r["passed"]]
    done = [r for r in rs if r["converted"]]
    if bad:
        why = bad[0].get("error") or "above max abs err"
        return (f"✗ {len(rs) - len(bad)}/{len(rs)}: "
                + why[:60].replace("|", "/"))
    worst_abs = max(r["max_abs_err"] for r in done)
    worst_rel = max(r["max_rel_err"] for r in done)
    return f"✓ {len(rs)}/{len(rs)} · {worst_abs:.1e} / {worst_rel:.1e}"


def table(rows: list[dict], env: dict | None = None) -> str:
    """The README section: a caption, one row per architecture (every
    variant of it folded into each format's cell), then every model and
    variant in a folded table."""
    from fixtures.cases_applications import BATCH, BY_NAME
    env = env or {}
    cols = list(FORMAT_LABELS.items())
    order = {a.name: i for i, a in enumerate(ARCHS)}
    variants = ["top", "softmax", "notop", "notop-avg", "notop-max",
                "dynamic"]
    archs = sorted({r["arch"] for r in rows}, key=lambda a: order.get(a, 99))
    keys = sorted({(r["arch"], r["variant"]) for r in rows},
                  key=lambda k: (order.get(k[0], 99), variants.index(k[1])))
    by = {(r["arch"], r["variant"], r["backend"], r["file"]): r
          for r in rows}
    passed = sum(r["passed"] for r in rows)
    done = [r for r in rows if r["converted"]]
    worst_abs = max((r["max_abs_err"] for r in done), default=0.0)
    worst_rel = max((r["max_rel_err"] for r in done), default=0.0)
    sizes: dict[int, list[str]] = {}
    for a in archs:
        sizes.setdefault(BY_NAME[a].size, []).append(a)
    common = max(sizes, key=lambda s: len(sizes[s]))
    others = "; ".join(f"{', '.join(names)}: {s}×{s}×3"
                       for s, names in sorted(sizes.items()) if s != common)
    size_text = f"{common}×{common}×3" + (f" ({others})" if others else "")
    k3, k2 = (env.get(b) or next(
        (r["keras_version"] for r in rows
         if r["backend"] == b and r.get("keras_version")), "?")
        for b in ("keras3", "keras2"))
    regnets = [a for a in archs if a.startswith("RegNet")]
    n_regnets = sum(a.family == "RegNet" for a in ARCHS)
    regnet_note = "" if not regnets or len(regnets) == n_regnets else (
        f" Of the {n_regnets} RegNetX/Y constructors, {len(regnets)} "
        f"representative sizes ran ({', '.join(regnets)}); the others "
        "are the same blocks with other widths and depths.")
    have = {(r["backend"], f"{r['arch']}:{r['variant']}") for r in rows}
    missing = [f"{spec} ({'tf-keras' if b == 'keras2' else 'Keras 3'})"
               for b, spec in plan() if (b, spec) not in have]
    missing_note = "" if not missing else (
        f" Not in this run ({len(missing)} models of the planned matrix, "
        "left out for time): " + ", ".join(missing) + ".")
    lines = [
        f"**{passed} of {len(rows)} conversions within max abs error "
        f"{ATOL:g}**: {len(archs)} architectures, {len(keys)} models. "
        f"Largest errors over the whole matrix: max abs {worst_abs:.1e}, "
        f"max rel {worst_rel:.1e} (abs error / max |Keras output|).",
        "",
        f"Run on {env.get('date', '?')}, {env.get('cpu', '?')} "
        f"({env.get('cores', '?')} cores, shared): Keras {k3} and "
        f"tf-keras {k2} "
        f"(TensorFlow {env.get('tensorflow', '?')}, CPU), "
        f"torch {env.get('torch', '?')}, "
        f"Python {env.get('python', '?')}. Each model is built with "
        "`weights=None`, given seeded random weights (kernels with "
        "variance 1/fan_in, BatchNorm statistics near identity, what feeds "
        "each residual addition scaled by 0.3 so 100-block residual "
        "streams stay in range), saved, converted "
        "from each save and run on the same seeded float32 inputs as "
        f"Keras (batch of {BATCH}, input H×W×C {size_text}, eval mode). "
        "Variants: `top` include_top with logits, `softmax` include_top "
        "with the softmax head, `notop` the feature map, `notop-avg` / "
        "`notop-max` the pooling options, `dynamic` input shape "
        "(None, None, 3). The first architecture of each family runs every "
        "variant, the others `top` and `notop`. Cells: variants passed, "
        "then the largest max abs / max rel error among them; — = not in "
        "that Keras (RegNet and ResNetRS are only in tf-keras)."
        f"{regnet_note}{missing_note}",
        "",
        "| Architecture | Variants | " + " | ".join(
            label for _, label in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for arch in archs:
        vs = [v for a, v in keys if a == arch]
        cells = [_cell([by[arch, v, b, f] for v in vs
                        if (arch, v, b, f) in by]) for (b, f), _ in cols]
        lines.append(f"| {arch} | {len(vs)} | " + " | ".join(cells) + " |")
    lines += ["", "<details><summary>Every model and variant "
              "(max abs / max rel error)</summary>", "",
              "| Architecture | Variant | " + " | ".join(
                  label for _, label in cols) + " |",
              "|---|---|" + "---|" * len(cols)]
    for arch, variant in keys:
        cells = []
        for (b, f), _ in cols:
            r = by.get((arch, variant, b, f))
            if r is None:
                cells.append("—")
            elif not r["converted"]:
                cells.append("✗ " + r.get("error", "")[:60]
                             .replace("|", "/"))
            else:
                cells.append(("✓ " if r["passed"] else "✗ ") + _err(r))
        lines.append(f"| {arch} | {variant} | " + " | ".join(cells) + " |")
    lines += ["", "</details>"]
    return "\n".join(lines)


def write_readme(text: str, readme: Path = ROOT / "README.md") -> None:
    content = readme.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(content):
        raise SystemExit(f"{readme}: no {START} ... {END} markers")
    block = (f"{START}\n<!-- generated by: python bench/coverage.py -->\n"
             f"{text}\n{END}")
    readme.write_text(pattern.sub(lambda _: block, content))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", help="comma-separated architecture names")
    p.add_argument("--backend", choices=BACKENDS,
                   help="only this backend")
    p.add_argument("--top-only", action="store_true",
                   help="only the include_top (logits) variant")
    p.add_argument("--json", help="also write every result here")
    p.add_argument("--from-json", help="no run: the table of previous "
                   "runs' --json files (comma-separated, merged)")
    p.add_argument("--from-log", help="no run: the results a stopped run "
                   "printed on stderr (comma-separated log files)")
    p.add_argument("--done", help="skip the models already in these "
                   "--json files (comma-separated): resume a run")
    p.add_argument("--shard", help="K/N: only every N-th model from the "
                   "K-th (0-based), to run the matrix in N processes")
    p.add_argument("--tops-first", action="store_true",
                   help="run every architecture's top model first, then "
                   "the feature maps, then the other variants")
    p.add_argument("--no-readme", action="store_true")
    a = p.parse_args(argv)
    only = set(a.only.split(",")) if a.only else None
    specs = plan(only)
    if a.top_only:
        specs = [(b, s) for b, s in specs if s.endswith(":top")]
    if a.backend:
        specs = [(b, s) for b, s in specs if b == a.backend]
    if a.done:
        done = merge([json.loads(Path(f).read_text())
                      for f in a.done.split(",")])["results"]
        have = {(r["backend"], f"{r['arch']}:{r['variant']}") for r in done}
        specs = [bs for bs in specs if bs not in have]
    if a.tops_first:  # every architecture once before any variant
        rank = ["top", "notop"]
        specs.sort(key=lambda bs: rank.index(bs[1].split(":")[1])
                   if bs[1].split(":")[1] in rank else len(rank))
    if a.shard:
        k, n = (int(v) for v in a.shard.split("/"))
        specs = specs[k::n]
    if a.from_json or a.from_log:
        runs = [json.loads(Path(f).read_text())
                for f in (a.from_json or "").split(",") if f]
        runs += [{"seconds": 0.0, "results": rows_from_log(
            Path(f).read_text())} for f in (a.from_log or "").split(",") if f]
        saved = merge(runs)
    else:
        start, versions = time.time(), {}

        def dump(rows):
            if a.json:
                Path(a.json).write_text(json.dumps(
                    {"seconds": time.time() - start,
                     "environment": environment(versions),
                     "results": rows}, indent=1) + "\n")

        with tempfile.TemporaryDirectory(prefix="keras2torch-apps-") as work:
            rows = run(specs, Path(work),
                       log=lambda s: print(s, file=sys.stderr, flush=True),
                       versions=versions, progress=dump)
        saved = {"seconds": time.time() - start,
                 "environment": environment(versions), "results": rows}
    rows = saved["results"]
    if a.json:
        Path(a.json).write_text(json.dumps(saved, indent=1) + "\n")
    text = table(rows, saved.get("environment"))
    if not a.no_readme:
        write_readme(text)
    print(text)
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
