"""Convert many models: ``convert_many(sources, outdir)``.

    results = migrate.convert_many(["a.keras", "models/"], "ports/", jobs=4)
    for r in results:
        r.source, r.status, r.outdir, r.error    # one per model, in order

Each model is converted (and optionally verified) in isolation and written
to its own subdirectory of ``outdir``, named after the model file
(``models/cnn.keras`` -> ``ports/cnn``; see :func:`output_names` for
clashes).  A failure is that model's result; it never stops the others.

Where the work runs:

* ``jobs=None`` or ``1``: in this process, one model after the other;
* ``jobs=N``: a pool of N worker processes on this machine (``0``: one per
  CPU), each using one torch thread.  Workers are forked from a
  ``forkserver`` that has imported keras2torch (so torch is imported once)
  but run nothing; never ``fork`` from this process, which is unsafe once
  torch has started threads.  ``spawn`` where there is no forkserver.  As
  with any process pool, call it from under ``if __name__ == "__main__":``
  in a script;
* ``executor=``: any :class:`concurrent.futures.Executor`, for example a
  Dask cluster's ``distributed.Client(...).get_executor()``.  The workers
  need keras2torch installed and must see the same files: sources and
  ``outdir`` should be on a filesystem they share.

Only plain data crosses process boundaries: a :class:`Job` goes out, a
:class:`BatchResult` (with the ``conversion.json`` content, not the
tensors) comes back.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .discover import Found, discover, port_name
from .errors import ConversionError, UnsupportedLayers

__all__ = ["BatchResult", "Job", "convert_many", "expand_sources",
           "output_names", "run_jobs"]

_OPTIONS = {"class_name", "layout", "weights_format", "rules", "plugins",
            "atol", "force", "per_layer", "report", "custom_objects"}


@dataclass(frozen=True)
class Job:
    source: str
    weights: str | None
    outdir: str
    verify: bool = False
    options: dict = field(default_factory=dict)
    origin: int = field(default_factory=os.getpid)  # the caller's process


@dataclass
class BatchResult:
    """What happened to one source.

    ``status``: ``ok`` (written; parity within ``atol`` if verified),
    ``fail`` (unsupported layers: nothing written; or parity above ``atol``:
    written, as ``keras2torch convert --verify`` does), ``error`` (could not
    be read or written), ``skipped`` (found in a directory, not a model).
    ``path``, ``reason`` and ``category`` mean what they mean in
    ``keras2torch check`` (:class:`migrate.check.ModelResult`); ``source``
    and ``error`` are their names before 0.2, kept as aliases for one
    release (attributes and JSON keys).
    """

    path: str
    status: str
    outdir: str | None = None
    weights: str | None = None
    reason: str | None = None  # one line, when status is not ok
    # which step failed: unsupported, parity, read, verify, write,
    # internal, not a model (check's categories)
    category: str | None = None
    error_type: str | None = None  # ConversionError, UnsupportedLayers, ...
    report: dict | None = None  # conversion.json content, when converted
    seconds: float = 0.0

    @property
    def source(self) -> str:
        """Alias of ``path`` (before 0.2)."""
        return self.path

    @property
    def error(self) -> str | None:
        """Alias of ``reason`` (before 0.2)."""
        return self.reason

    @error.setter
    def error(self, value: str | None) -> None:
        self.reason = value

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def parity(self) -> dict | None:
        return (self.report or {}).get("parity")

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        report = d.pop("report") or {}
        d["class_name"] = (report.get("module") or {}).get("class_name")
        d["layers"] = len(report.get("layers") or []) if report else None
        parity = report.get("parity")
        d["max_abs_err"] = parity["max_abs_err"] if parity else None
        d["warnings"] = list(report.get("warnings") or [])
        d["source"], d["error"] = d["path"], d["reason"]  # aliases, < 0.2
        return d


def convert_many(sources, outdir, *, jobs: int | None = None,
                 executor: cf.Executor | None = None, verify: bool = False,
                 progress: Callable | None = None,
                 **options) -> list[BatchResult]:
    """Convert every model in ``sources`` into ``outdir/<name>/``.

    ``sources`` are model files, ``(model, weights)`` pairs for JSON
    configs, or directories (searched as ``keras2torch check`` does:
    :func:`migrate.discover.discover`).  ``options`` go to
    :func:`migrate.convert` (``layout``, ``weights_format``, ``class_name``,
    ``rules``: a ``{key: Rule}`` dict, or a list of rules files that each
    worker loads, see :mod:`migrate.userrules`; ``plugins=False`` leaves
    the installed rule packs out, else every worker loads the packs
    installed here, :mod:`migrate.plugins`) and to saving (``force``;
    ``report="html"`` adds ``report.html``); with ``verify=True``,
    ``atol``, ``per_layer`` and ``custom_objects`` go to
    :func:`migrate.verify`.  ``progress(done, total, result)`` is called as
    each model finishes.

    Returns one :class:`BatchResult` per model, in the order of
    ``sources`` (a directory's models sorted by path).
    """
    unknown = set(options) - _OPTIONS
    if unknown:
        raise TypeError(f"convert_many() got unexpected option(s) "
                        f"{sorted(unknown)}")
    rules = options.get("rules")
    if rules is not None and not isinstance(rules, dict):
        from .userrules import load_rule_files
        if isinstance(rules, (str, os.PathLike)):
            rules = [rules]
        options["rules"] = [os.path.abspath(p) for p in rules]
        load_rule_files(options["rules"])  # a bad file fails here, once
    if options.get("plugins", True):
        from .plugins import load_plugins, pack_names
        load_plugins()  # a broken pack or a clash fails here, once
        options["_packs"] = pack_names()  # each worker must have them
    found = expand_sources(sources)
    outdir = Path(outdir)
    names = output_names([f.path for f in found])
    results: dict[int, BatchResult] = {}
    work = []
    for i, (f, name) in enumerate(zip(found, names)):
        if f.skip:
            results[i] = BatchResult(str(f.path), "skipped", reason=f.skip,
                                     category="not a model")
        else:
            work.append((i, Job(str(f.path), None if f.weights is None
                                else str(f.weights), str(outdir / name),
                                verify, dict(options))))
    from .verify import keras_session
    with keras_session():  # verify: start TensorFlow once, not per model
        done = run_jobs(convert_job, [j for _, j in work], jobs=jobs,
                        executor=executor, progress=progress,
                        on_crash=_crashed)
    for (i, _), r in zip(work, done):
        results[i] = r
    return [results[i] for i in range(len(found))]


def expand_sources(sources, skipped=None) -> list[Found]:
    """``sources`` as :func:`convert_many` takes them -> one
    :class:`~migrate.discover.Found` per model (or skipped file);
    ``skipped`` (a :class:`~migrate.discover.Skipped`) counts what the
    directory walks passed over."""
    out: list[Found] = []
    for s in sources:
        if isinstance(s, Found):
            out.append(s)
        elif isinstance(s, (tuple, list)):
            model, weights = s
            out.append(Found(Path(model), Path(weights)))
        elif Path(s).is_dir():
            out.extend(discover([s], skipped=skipped))
        else:
            out.append(Found(Path(s)))  # a missing file is its own error
    return out


def output_names(paths: list[Path]) -> list[str]:
    """One subdirectory name per model path, unique and stable: the file
    name without its extension; models that clash get, whichever first
    tells them apart, their parent directory's name in front, or their
    extension behind (or both), and a number as a last resort."""
    paths = [Path(p) for p in paths]
    names = [_safe(port_name(p)) for p in paths]
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        groups.setdefault(n, []).append(i)
    for n, idx in groups.items():
        if len(idx) < 2:
            continue
        for make in (lambda p: f"{p.absolute().parent.name}_{n}",
                     lambda p: f"{n}_{p.suffix.lstrip('.')}",
                     lambda p: f"{p.absolute().parent.name}_{n}_"
                               f"{p.suffix.lstrip('.')}"):
            tried = [_safe(make(paths[i])) for i in idx]
            if len(set(tried)) == len(tried):
                for i, t in zip(idx, tried):
                    names[i] = t
                break
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0) + 1
        seen[n] = k
        out.append(n if k == 1 else f"{n}_{k}")
    return out


def _safe(name: str) -> str:
    name = re.sub(r"[^\w.-]+", "_", name).strip("._") or "model"
    return name


def convert_job(job: Job) -> BatchResult:
    """Convert, verify if asked, and write one model.  Never raises for a
    problem with the model."""
    from .api import convert
    start = time.perf_counter()
    r = BatchResult(job.source, "ok", job.outdir, job.weights)
    opts = dict(job.options)
    if job.verify:
        from .verify import reuse_keras_in_worker
        reuse_keras_in_worker(job.origin)
    atol = opts.pop("atol", 1e-4)
    per_layer = opts.pop("per_layer", False)
    objects = opts.pop("custom_objects", ())
    force = opts.pop("force", False)
    report = opts.pop("report", None)
    packs = opts.pop("_packs", ())
    step = "read"
    try:
        from .userrules import resolve_rules
        opts["rules"] = resolve_rules(opts.get("rules"))
        if packs:
            from .plugins import pack_names
            lacking = sorted(set(packs) - set(pack_names()))
            if lacking:
                raise ConversionError(
                    f"this worker lacks the rule pack(s) {lacking} "
                    "installed where the batch was started (install them "
                    "on every worker, or pass plugins=False)")
        if not Path(job.source).exists():
            raise ConversionError(f"{job.source}: no such file")
        if Path(job.outdir).exists() and not force:
            step = "write"
            raise ConversionError(f"{job.outdir} already exists (replace "
                                  "it with force=True, --force on the "
                                  "command line)")
        conv = convert(job.source, job.weights, **opts)
        parity = None
        if job.verify:
            from .verify import verify
            step = "verify"
            parity = verify(job.source, conv, job.weights, atol=atol,
                            per_layer=per_layer, rules=conv.rules,
                            custom_objects=objects)
        step = "write"
        conv.save(job.outdir, force=force)
        r.report = conv.report
        if report == "html":
            from .html import write_report
            write_report(conv, job.outdir, job.source, job.weights,
                         conv.rules)
        if parity is not None and not parity["passed"]:
            r.status, r.category = "fail", "parity"
            r.error_type = "ParityError"
            r.reason = (f"parity failed: max abs err "
                        f"{parity['max_abs_err']:.3g} > atol {atol:g}")
    except UnsupportedLayers as exc:
        r.status, r.reason, r.category = "fail", str(exc), "unsupported"
        r.error_type, r.outdir = type(exc).__name__, None
    except ConversionError as exc:
        r.status, r.reason, r.category = "error", str(exc), step
        r.error_type, r.outdir = type(exc).__name__, None
    except Exception as exc:  # a bug in keras2torch: report, go on
        r.status, r.category = "error", "internal"
        r.error_type, r.outdir = type(exc).__name__, None
        r.reason = f"internal error: {type(exc).__name__}: {exc}"
    r.seconds = round(time.perf_counter() - start, 3)
    return r


def _crashed(job: Job, exc: BaseException) -> BatchResult:
    return BatchResult(job.source, "error", None, job.weights,
                       reason=crash_reason(exc), category="internal",
                       error_type=type(exc).__name__)


def crash_reason(exc: BaseException) -> str:
    """Why a job's worker gave no result, and what to do about it."""
    from concurrent.futures.process import BrokenProcessPool
    if not isinstance(exc, BrokenProcessPool):
        return f"worker failed: {type(exc).__name__}: {exc}"
    script = _unguarded_main()
    if script is not None:
        return (f"a worker process died (BrokenProcessPool): each worker "
                f"imports your script {script}, which has no 'if __name__ "
                f"== \"__main__\":' block; put the code that starts the "
                "batch under one")
    return ("a worker process died (BrokenProcessPool): a model crashed it "
            "or memory ran out; run the batch with jobs=1 (-j 1) to see "
            "which model")


def _unguarded_main() -> str | None:
    """The path of the ``__main__`` script when it is a file that the
    workers import (spawn, forkserver) and has no ``__name__ ==
    "__main__"`` test, so its top-level code runs again in each worker."""
    import sys
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or not os.path.isfile(path):  # an interactive session
        return None
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return None
    return None if re.search(r"__name__\s*==|==\s*__name__", text) \
        else path


# -- running ----------------------------------------------------------------
def _worker_init(workers: int = 1) -> None:
    import torch
    from .verify import keep_keras_running
    torch.set_num_threads(1)
    # each worker's Keras process gets its share of the CPUs: N of them
    # with every CPU each would only take turns
    os.environ["KERAS2TORCH_KERAS_THREADS"] = str(
        max(1, (os.cpu_count() or 1) // workers))
    keep_keras_running()  # one Keras process per worker, not per model


def _context():
    """``forkserver`` with keras2torch preloaded where there is one: torch
    is imported once, in the server, and each worker is a cheap fork of a
    process that has run no torch code (so has no threads to break);
    ``spawn`` elsewhere."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["migrate", "migrate.batch",
                                    "migrate.write", "safetensors.torch"])
        return ctx
    return multiprocessing.get_context("spawn")


def run_jobs(fn, jobs_list: list, *, jobs: int | None = None,
             executor: cf.Executor | None = None,
             progress: Callable | None = None,
             on_crash: Callable) -> list:
    """``[fn(job) for job in jobs_list]``, in order, run as the module doc
    says.  ``fn`` must handle its own errors; an exception that escapes it
    (a worker that died, a result that cannot be pickled) becomes
    ``on_crash(job, exc)``."""
    total = len(jobs_list)
    results: list = [None] * total
    done = 0

    def finish(i, value):
        nonlocal done
        results[i] = value
        done += 1
        if progress is not None:
            progress(done, total, value)

    if jobs == 0:
        jobs = os.cpu_count() or 1
    if executor is None and (not jobs or jobs <= 1 or total <= 1):
        for i, job in enumerate(jobs_list):
            try:
                value = fn(job)
            except Exception as exc:
                value = on_crash(job, exc)
            finish(i, value)
        return results
    own = executor is None
    if own:
        executor = cf.ProcessPoolExecutor(
            max_workers=min(jobs, total), mp_context=_context(),
            initializer=_worker_init, initargs=(min(jobs, total),))
    try:
        futures = {executor.submit(fn, job): i
                   for i, job in enumerate(jobs_list)}
        for fut in cf.as_completed(futures):
            i = futures[fut]
            try:
                value = fut.result()
            except Exception as exc:
                value = on_crash(jobs_list[i], exc)
            finish(i, value)
    finally:
        if own:
            executor.shutdown(wait=True, cancel_futures=True)
    return results
