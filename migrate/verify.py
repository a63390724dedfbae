"""Parity: run the Keras original and the port on the same random inputs.

The Keras side runs in a subprocess (``verify_keras.py``) so that TensorFlow
and torch never share a process.  Inputs are seeded: normal floats, or
integer ids below the vocabulary size for inputs that feed an Embedding.
Unknown dims (``None``) get :data:`DEFAULT_DIM`.

**Per layer** (``verify(..., per_layer=True)``): Keras records every layer
call's output (``verify_keras.py --taps``), and the port side runs the
*traced* translation of the model (:func:`migrate.inspect.trace`: the same
rules, with every layer's output returned).  Each layer call is compared in
Keras layout, in graph order; a layer *diverges* when its max abs error
exceeds ``atol * max(1, max|Keras output|)`` (intermediate values can be
large, and float32 error grows with them).  The result names the first
diverging layer.  When no layer diverges but the outputs do, the layers are
right and the fault is in how ``model.py`` joins them; the result says so.
"""
from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch

from .errors import ConversionError

DEFAULT_DIM = 32
RUNNER = Path(__file__).with_name("verify_keras.py")


class VerifyUnavailable(ConversionError):
    """TensorFlow is not installed, so Keras cannot be run."""


def make_inputs(program, seed: int = 0, batch: int = 2) -> list[np.ndarray]:
    """Seeded inputs in Keras layout, one per model input."""
    rng = np.random.default_rng(seed)
    arrays = []
    for t in program.inputs:
        shape = [t.batch or batch] + [DEFAULT_DIM if d is None else d
                                      for d in t.keras_shape[1:]]
        if getattr(t, "role", None) == "padding" and len(shape) == 2:
            # trailing padding: row 0 full, the others a random length
            lengths = rng.integers(1, shape[1] + 1, shape[0])
            lengths[0] = shape[1]
            arr = np.arange(shape[1])[None, :] < lengths[:, None]
            arrays.append(arr.astype(t.dtype if t.dtype != "string"
                                     else "int32"))
        elif getattr(t, "role", None) == "positions":
            arr = rng.integers(0, _steps(program), shape)
            arrays.append(arr.astype(t.dtype))
        elif t.vocab:
            arr = rng.integers(0, t.vocab, shape)
            arrays.append(arr.astype(t.dtype if "int" in t.dtype
                                     else "float32"))
        elif "int" in t.dtype:
            arrays.append(rng.integers(0, 10, shape).astype(t.dtype))
        else:
            arrays.append(rng.standard_normal(shape).astype("float32"))
    return arrays


def _steps(program) -> int:
    """The sequence length the other inputs get (positions index it)."""
    lengths = [DEFAULT_DIM if t.keras_shape[1] is None else t.keras_shape[1]
               for t in program.inputs if len(t.keras_shape) >= 2
               and getattr(t, "role", None) != "positions"]
    return min(lengths, default=DEFAULT_DIM)


def run_port(conv, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The port's outputs in Keras layout for Keras-layout ``inputs``."""
    model = conv.module()
    args = [torch.from_numpy(a).permute(*t.layout.perm)
            for a, t in zip(inputs, conv.program.inputs)]
    with torch.no_grad():
        outs = model(*args)
    if not isinstance(outs, tuple):
        outs = (outs,)
    result = []
    for o, t in zip(outs, conv.program.outputs):
        back = [t.layout.perm.index(i) for i in range(len(t.layout.perm))]
        result.append(o.permute(*back).numpy())
    return result


def verify_available() -> bool:
    """True when TensorFlow is installed, so :func:`verify` can run."""
    return importlib.util.find_spec("tensorflow") is not None


def run_keras(model_path, weights, keras_major: int,
              inputs: list[np.ndarray], timeout: float = 900,
              taps: bool = False, custom_objects=()):
    """Keras's outputs for ``inputs`` and its version; with ``taps``, also
    ``{node_id: [array per output]}`` for every layer call.
    ``custom_objects``: the user's Python files that define the model's
    custom Keras classes, imported by the Keras process first."""
    if not verify_available():
        raise VerifyUnavailable(
            "cannot verify: TensorFlow is not installed "
            "(pip install 'keras2torch[verify]')")
    with tempfile.TemporaryDirectory(prefix="keras2torch-verify-") as tmp:
        src, dst = Path(tmp, "inputs.npz"), Path(tmp, "outputs.npz")
        np.savez(src, **{f"in_{i}": a for i, a in enumerate(inputs)})
        cmd = [sys.executable, str(RUNNER), os.fspath(model_path), str(src),
               str(dst), "--major", str(keras_major)]
        if weights:
            cmd += ["--weights", os.fspath(weights)]
        tap_file = Path(tmp, "taps.npz")
        if taps:
            cmd += ["--taps", str(tap_file)]
        for path in custom_objects or ():
            cmd += ["--custom-objects", os.path.abspath(path)]
        server = _server(keras_major)
        if server is not None:
            version = server.run(cmd[2:], timeout)
        else:
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env=_keras_env(), timeout=timeout)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines()
                        or ["no output"])[-1]
                raise ConversionError(f"Keras could not run the model: "
                                      f"{_keras_error(last)}")
            version = (proc.stdout.strip().splitlines() or [""])[-1]
        with np.load(dst, allow_pickle=False) as data:
            outs = [data[f"out_{i}"] for i in range(len(data.files))]
        if not taps:
            return outs, version
        recorded: dict[str, dict[int, np.ndarray]] = {}
        with np.load(tap_file, allow_pickle=False) as data:
            index = json.loads(str(data["index"]))
            for k, (node, i) in enumerate(index):
                recorded.setdefault(node, {})[i] = data[f"t{k}"]
    return outs, version, recorded


def _keras_env() -> dict:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                TF_ENABLE_ONEDNN_OPTS="0")


# -- one Keras process for many models --------------------------------------
class KerasServer:
    """A ``verify_keras.py --serve`` process: TensorFlow is imported once
    and runs model after model (starting it costs seconds; a model, often
    much less).  One per Keras major version; thread-safe (requests are
    serialised).  A request that fails leaves the server running; one that
    kills it or times out ends it, and the next request starts a new one.
    """

    def __init__(self, major: int):
        self.major = major
        self.proc = None
        self.log = None  # the server's stderr, for the last line on a crash
        self.lock = threading.Lock()

    def _start(self):
        self.log = tempfile.TemporaryFile(prefix="keras2torch-keras-")
        self.proc = subprocess.Popen(
            [sys.executable, str(RUNNER), "--serve", "--major",
             str(self.major)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.log, env=_keras_env())

    def run(self, args: list[str], timeout: float = 900) -> str:
        """Run ``verify_keras.py ARGS`` in the server; its Keras version."""
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self.close()
                self._start()
            try:
                self.proc.stdin.write((json.dumps(args) + "\n").encode())
                self.proc.stdin.flush()
                ready, _, _ = select.select([self.proc.stdout], [], [],
                                            timeout)
                line = self.proc.stdout.readline() if ready else None
            except OSError:  # the server died (broken pipe)
                line = b""
            if line is None:
                self.close()
                raise ConversionError(f"Keras did not finish the model in "
                                      f"{timeout:g} s")
            if not line:
                last = self._last_log_line()
                self.close()
                raise ConversionError(f"Keras could not run the model: "
                                      f"{_keras_error(last)}")
            answer = json.loads(line)
        if not answer["ok"]:
            raise ConversionError(f"Keras could not run the model: "
                                  f"{_keras_error(answer['error'])}")
        return answer["version"]

    def _last_log_line(self) -> str:
        try:
            self.log.seek(0)
            text = self.log.read().decode(errors="replace")
        except (OSError, ValueError):
            text = ""
        return (text.strip().splitlines() or ["the Keras process died"])[-1]

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
        self.close()

    def close(self):
        """End the server: it exits at the end of its input (killed if it
        is still running 30 s later)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                proc.stdin.close()
                proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
            proc.stdout.close()
        if self.log is not None:
            self.log.close()
            self.log = None


_SERVERS: dict[int, KerasServer] = {}
_SERVERS_LOCK = threading.Lock()
_session_depth = 0
_persistent = False


def _server(major: int) -> KerasServer | None:
    """The server for ``major`` while a :func:`keras_session` is open (or
    in a batch worker process); None: a fresh process per model."""
    if not (_session_depth or _persistent):
        return None
    with _SERVERS_LOCK:
        if major not in _SERVERS:
            _SERVERS[major] = KerasServer(major)
        return _SERVERS[major]


@contextlib.contextmanager
def keras_session():
    """Within this block, :func:`verify` runs every model in one Keras
    process (per Keras major version) instead of starting TensorFlow for
    each; the processes end with the outermost block.  Results are the
    same."""
    global _session_depth
    with _SERVERS_LOCK:
        _session_depth += 1
    try:
        yield
    finally:
        with _SERVERS_LOCK:
            _session_depth -= 1
            ending = [] if _session_depth or _persistent else \
                list(_SERVERS.values())
            if ending:
                _SERVERS.clear()
        for server in ending:
            server.close()


def keep_keras_running() -> None:
    """For a worker process of a batch: reuse one Keras process for every
    model until this process ends (the server sees its input close)."""
    global _persistent
    if not _persistent:
        atexit.register(_close_servers)
        # a pool's worker exits through multiprocessing, which runs its
        # finalizers but not atexit
        import multiprocessing.util
        multiprocessing.util.Finalize(None, _close_servers, exitpriority=10)
    _persistent = True


def _close_servers() -> None:
    """At the exit of a worker process: kill the idle servers (TensorFlow
    takes seconds to shut down, and a worker's own exit may be timed, as
    Dask's nanny does)."""
    with _SERVERS_LOCK:
        servers = list(_SERVERS.values())
        _SERVERS.clear()
    for server in servers:
        server.kill()


def reuse_keras_in_worker(origin_pid: int) -> None:
    """Called by a batch job: in a process other than the caller's (a
    process pool's or a Dask worker), keep one Keras process for all the
    jobs that worker runs.  In the caller's process (sequential, threads)
    :func:`keras_session` already does, and ends it with the batch."""
    if os.getpid() != origin_pid:
        keep_keras_running()


def _keras_error(line: str) -> str:
    """Keras's last error line, without the layer config it may dump, and
    with a hint when a custom layer class is what Keras lacks."""
    line = line.split(" Full object config:")[0].strip()
    if "Could not locate class" in line:
        line = line.split(" Make sure custom classes")[0]
        line += (" (Keras needs the model's custom layer classes to run it: "
                 "give the Python file that defines them, custom_objects="
                 "[FILE.py] (--custom-objects FILE.py on the command "
                 "line), or do not verify)")
    return line


def _error(k: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """``(max abs error, largest finite Keras magnitude)`` of two float64
    arrays of one shape.  Where Keras gives NaN or an infinity the port
    must give the same (error 0 there); a non-finite value on one side
    only is an infinite error."""
    if not k.size:
        return 0.0, 0.0
    with np.errstate(invalid="ignore"):  # inf - inf
        same = (k == t) | (np.isnan(k) & np.isnan(t))
        diff = np.where(same, 0.0, np.abs(k - t))
    diff[np.isnan(diff)] = np.inf  # NaN on one side only
    finite = np.abs(k[np.isfinite(k)])
    return float(diff.max()), float(finite.max()) if finite.size else 0.0


def compare(keras_outs, port_outs, names, atol: float) -> dict:
    rows = []
    for name, k, t in zip(names, keras_outs, port_outs):
        k = np.asarray(k, dtype=np.float64)
        t = np.asarray(t, dtype=np.float64)
        if k.shape != t.shape:
            raise ConversionError(f"output {name!r}: Keras shape {k.shape}, "
                                  f"port shape {t.shape}")
        err, scale = _error(k, t)
        rows.append({"name": name, "shape": list(k.shape),
                     "max_abs_err": err,
                     "max_rel_err": err / scale if scale else err})
    worst = max((r["max_abs_err"] for r in rows), default=0.0)
    return {"atol": atol, "outputs": rows, "max_abs_err": worst,
            "max_rel_err": max((r["max_rel_err"] for r in rows), default=0.0),
            "passed": worst <= atol}


def verify(model_path, conversion=None, weights=None, *, atol: float = 1e-4,
           seed: int = 0, batch: int = 2, per_layer: bool = False,
           rules: dict | None = None, custom_objects=(),
           training: bool = False) -> dict:
    """Run Keras and the port on the same seeded inputs; return the parity
    figures (also stored on ``conversion.parity``).

    ``rel`` errors are the max absolute error over the largest Keras output
    magnitude.  ``per_layer`` adds ``layers`` (one row per layer call) and
    ``first_divergence`` (see the module doc); ``rules`` are the extra
    rules the conversion used; ``custom_objects`` Python files that define
    the model's custom Keras classes (see :func:`run_keras`).
    ``training`` adds ``training``: one train-mode step's outputs,
    gradients and buffers against Keras's (:mod:`migrate.verify_train`),
    and for a compiled model ``training.trajectory``: five steps of
    ``training.py`` against five ``train_on_batch`` steps
    (:mod:`migrate.verify_steps`).
    Raises
    :class:`VerifyUnavailable` without TensorFlow.
    """
    if conversion is None:
        from .api import convert
        conversion = convert(model_path, weights, rules=rules)
    if rules is None:
        rules = getattr(conversion, "rules", None)
    major = int(str(conversion.source_info.get("keras_version") or "3")
                .split(".")[0] or 3)
    inputs = make_inputs(conversion.program, seed, batch)
    recorded = None
    if per_layer:
        keras_outs, version, recorded = run_keras(
            model_path, weights, major, inputs, taps=True,
            custom_objects=custom_objects)
    else:
        keras_outs, version = run_keras(model_path, weights, major, inputs,
                                        custom_objects=custom_objects)
    if len(keras_outs) != len(conversion.program.outputs):
        raise ConversionError(f"Keras returned {len(keras_outs)} outputs, "
                              f"the port {len(conversion.program.outputs)}")
    port_outs = run_port(conversion, inputs)
    result = compare(keras_outs, port_outs,
                     [t.name for t in conversion.program.outputs], atol)
    result.update({"seed": seed, "batch": batch,
                   "inputs": [list(a.shape) for a in inputs],
                   "keras_runtime": version})
    if per_layer:
        ported = run_traced(model_path, weights, conversion, inputs, rules)
        result.update(compare_layers(recorded, ported, atol,
                                     result["passed"]))
    if training:
        from .verify_train import train_parity
        result["training"] = train_parity(conversion, model_path, weights,
                                          major, inputs, seed, atol=1e-5,
                                          custom_objects=custom_objects)
        if getattr(conversion, "training", None) is not None:
            # a compiled model: five steps with training.py (verify_steps)
            from .verify_steps import trajectory
            steps = trajectory(conversion, model_path, weights, major,
                               inputs, seed, custom_objects=custom_objects)
            result["training"]["trajectory"] = steps
            if "passed" in steps:
                result["training"]["passed"] &= steps["passed"]
    conversion.parity = result
    return result


def run_traced(model_path, weights, conversion, inputs, rules=None,
               dtype=None):
    """The traced port's value of every layer call, in Keras layout:
    ``(node rows, {node_id: {output_index: array}})``; node rows are
    ``(node_id, layer name, class name, torch attr or None)``.  ``dtype``
    (e.g. ``torch.float64``) runs the port and its floating inputs in that
    dtype instead of float32."""
    from . import read as _read
    from .emit.source import render
    from .inspect import trace
    from .translate import Options
    program = conversion.program
    with _read.open_model(os.fspath(model_path), None if weights is None
                          else os.fspath(weights)) as src:
        tr = trace(src.graph, Options(program.layout, program.class_name,
                                      rules))
        if tr.program is None:
            raise ConversionError("cannot trace the model per layer: "
                                  f"{len(tr.problems)} layer(s) unsupported")
        state = {k: torch.as_tensor(np.array(fn()))
                 for k, fn in tr.program.state.items()}
    namespace: dict = {"__name__": "keras2torch_traced"}
    exec(compile(render(tr.program), "traced_model.py", "exec"), namespace)
    model = namespace[tr.program.class_name]()
    model.load_state_dict(state, strict=True)
    model.eval()
    args = [torch.from_numpy(a).permute(*t.layout.perm)
            for a, t in zip(inputs, tr.program.inputs)]
    if dtype is not None:
        model.to(dtype)
        args = [a.to(dtype) if a.is_floating_point() else a for a in args]
    with torch.no_grad():
        outs = model(*args)
    if not isinstance(outs, tuple):
        outs = (outs,)
    values: dict[str, dict[int, np.ndarray]] = {}
    for (node, i), o, t in zip(tr.taps, outs, tr.program.outputs):
        if i < 0 or not isinstance(o, torch.Tensor):  # a Python value
            continue  # (a tf.shape piece) is no layer output to compare
        back = [t.layout.perm.index(j) for j in range(len(t.layout.perm))]
        values.setdefault(node, {})[i] = o.permute(*back).detach().numpy()
    decls = {m.keras_name: m.attr for m in tr.program.modules}
    rows = [(n.id, n.layer.name, n.layer.class_name, decls.get(n.layer.name))
            for n in tr.graph.nodes]
    return rows, values


def compare_layers(recorded, ported, atol: float, outputs_passed: bool):
    """Per-layer rows and the first divergence (see the module doc)."""
    nodes, values = ported
    rows, first = [], None
    for node, name, cls, attr in nodes:
        row = {"node": node, "keras_name": name, "class_name": cls,
               "torch_name": attr, "shape": None, "max_abs_err": None,
               "max_rel_err": None, "status": "not compared"}
        keras, port = recorded.get(node), values.get(node, {})
        if keras is None:
            row["reason"] = "Keras did not record this call"
        else:
            errs, scales = [], []
            for i, t in sorted(port.items()):
                k = keras.get(i)
                if k is None:
                    continue
                k = np.asarray(k, dtype=np.float64)
                t = np.asarray(t, dtype=np.float64)
                if k.shape != t.shape:
                    row.update(status="diverged", reason=(
                        f"output {i}: Keras shape {list(k.shape)}, port "
                        f"shape {list(t.shape)}"))
                    break
                row["shape"] = list(k.shape)
                err, scale = _error(k, t)
                errs.append(err)
                scales.append(scale)
            else:
                if errs:
                    err, scale = max(errs), max(scales)
                    row.update(max_abs_err=err,
                               max_rel_err=err / scale if scale else err)
                    row["status"] = ("diverged" if err > atol * max(1.0, scale)
                                     else "ok")
        if row["status"] == "diverged" and first is None:
            first = dict(row)
        rows.append(row)
    note = None
    if first is None and not outputs_passed:
        note = ("every layer matches Keras on its own; the difference comes "
                "from how model.py joins them (a bug in keras2torch's "
                "emitter: please report it)")
    return {"layers": rows, "first_divergence": first,
            "per_layer_note": note}
