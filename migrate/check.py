"""``keras2torch check``: is every model in a repository convertible, right,
and is its committed port up to date?

    report = check(["models/"], verify=None, atol=1e-4)
    report.models        # one ModelResult per model found, sorted by path
    report.exit_code     # 0 all pass, 1 a model fails, 2 a model errors

Each model is converted in memory, in isolation (one bad model never stops
the rest), verified against Keras when asked (``verify=None``: when
TensorFlow is installed), and compared with its committed port, if it has
one (*drift*, like ``black --check``).

**Where the committed port is** (the drift convention), first match wins:

1. ``ports`` in the ``[tool.keras2torch]`` table of ``pyproject.toml`` (or
   ``[tool:keras2torch]`` in ``setup.cfg``): model path -> port directory,
   both relative to that file;
2. ``port-dir`` there, a pattern relative to the model's directory,
   ``{stem}`` being the model file name without its extension;
3. by default ``{stem}_torch/`` beside the model: ``models/cnn.keras`` ->
   ``models/cnn_torch/`` (an importable package name).

A port has *drifted* when its ``model.py`` is not byte for byte what the
model converts to now, or its weights file does not hold exactly the same
tensors.  The model is converted again with the options recorded in the
port's ``conversion.json`` (layout, class name, weights format), so a port
made with ``--layout keras`` is compared as such.  A model without a port
is only converted (and verified).

Statuses: ``pass``; ``fail`` (unsupported layers, parity above ``atol``,
drift); ``error`` (the file cannot be read, Keras cannot run it, an internal
error); ``skipped`` (not a model, with why).
"""
from __future__ import annotations

import configparser
import difflib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .discover import Found, discover, port_name
from .errors import ConversionError, UnsupportedLayers

STATUSES = ("pass", "fail", "error", "skipped")
EXIT_CODES = {"pass": 0, "skipped": 0, "fail": 1, "error": 2}
DEFAULT_PORT_DIR = "{stem}_torch"


# -- configuration ----------------------------------------------------------
@dataclass
class Config:
    """``[tool.keras2torch]`` settings; paths resolved against ``root``."""

    root: Path | None = None  # directory of the config file
    source: str | None = None  # "pyproject.toml" / "setup.cfg" path
    ports: dict[Path, Path] = field(default_factory=dict)  # resolved
    port_dir: str = DEFAULT_PORT_DIR
    exclude: list[str] = field(default_factory=list)
    atol: float | None = None
    rules: list[Path] = field(default_factory=list)  # custom rules files
    # files defining the models' custom Keras classes, for verification
    custom_objects: list[Path] = field(default_factory=list)


def find_config(paths) -> Config:
    """The config of the project holding ``paths``: the nearest
    ``pyproject.toml`` with ``[tool.keras2torch]`` or ``setup.cfg`` with
    ``[tool:keras2torch]``, looking up from their common directory and
    stopping at a ``.git`` directory."""
    dirs = [Path(p).resolve() for p in paths] or [Path.cwd()]
    dirs = [d if d.is_dir() else d.parent for d in dirs]
    start = Path(os.path.commonpath([str(d) for d in dirs]))
    for d in [start, *start.parents]:
        for name in ("pyproject.toml", "setup.cfg"):
            cfg = load_config(d / name) if (d / name).is_file() else None
            if cfg is not None:
                return cfg
        if (d / ".git").exists():
            break
    return Config()


def load_config(path) -> Config | None:
    """Read one config file; None when it has no keras2torch section.
    Raises ``ValueError`` for a malformed section."""
    path = Path(path)
    if path.name.endswith(".toml"):
        table = _toml_table(path)
        if table is None:
            return None
        ports = table.get("ports", {})
        exclude = table.get("exclude", [])
        if isinstance(exclude, str):
            exclude = [exclude]
        port_dir = table.get("port-dir", DEFAULT_PORT_DIR)
        atol = table.get("atol")
        rules = table.get("rules", [])
        if isinstance(rules, str):
            rules = [rules]
        objects = table.get("custom-objects", [])
        if isinstance(objects, str):
            objects = [objects]
    else:
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str  # keep the case of model paths
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error as exc:
            raise ValueError(f"{path}: {exc}") from None
        if not parser.has_section("tool:keras2torch"):
            return None
        sec = parser["tool:keras2torch"]
        ports = {}
        for line in sec.get("ports", "").splitlines():
            if line.strip():
                model, sep, port = line.partition("=")
                if not sep:
                    raise ValueError(f"{path}: ports: expected 'MODEL = "
                                     f"PORT_DIR', got {line.strip()!r}")
                ports[model.strip()] = port.strip()
        exclude = [ln.strip() for ln in sec.get("exclude", "").splitlines()
                   if ln.strip()]
        port_dir = sec.get("port-dir", DEFAULT_PORT_DIR)
        atol = sec.get("atol")
        rules = [ln.strip() for ln in sec.get("rules", "").splitlines()
                 if ln.strip()]
        objects = [ln.strip() for ln in
                   sec.get("custom-objects", "").splitlines() if ln.strip()]
    root = path.parent.resolve()
    if not isinstance(ports, dict) or not all(
            isinstance(k, str) and isinstance(v, str)
            for k, v in ports.items()):
        raise ValueError(f"{path}: ports must map model paths to port "
                         "directories")
    try:
        atol = None if atol is None else float(atol)
    except ValueError:
        raise ValueError(f"{path}: atol must be a number") from None
    if "{stem}" not in port_dir:
        raise ValueError(f"{path}: port-dir must contain {{stem}}")
    for key, files in (("rules", rules), ("custom-objects", objects)):
        if not isinstance(files, list) or not all(isinstance(r, str)
                                                  for r in files):
            raise ValueError(f"{path}: {key} must be a list of Python "
                             "files")
    return Config(root, str(path),
                  {(root / k).resolve(): (root / v) for k, v in ports.items()},
                  port_dir, list(exclude), atol, [root / r for r in rules],
                  [root / o for o in objects])


def _toml_table(path: Path) -> dict | None:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            return None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    table = data.get("tool", {}).get("keras2torch")
    if table is not None and not isinstance(table, dict):
        raise ValueError(f"{path}: [tool.keras2torch] must be a table")
    return table


def port_for(model: Path, config: Config) -> Path:
    """Where ``model``'s committed port is (it may not exist)."""
    explicit = config.ports.get(model.resolve())
    if explicit is not None:
        return explicit
    return model.parent / config.port_dir.format(stem=port_name(model))


# -- results ----------------------------------------------------------------
@dataclass
class ModelResult:
    path: str
    status: str  # pass, fail, error, skipped
    reason: str = ""
    category: str | None = None  # unsupported, parity, drift, read, ...
    weights: str | None = None
    format: str | None = None
    class_name: str | None = None
    layers: int | None = None
    verified: bool = False
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    atol: float | None = None
    port: str | None = None  # the committed port compared, if any
    drift: dict | None = None  # {"model_py": bool, "weights": [...], ...}
    diff: str | None = None  # unified diff of model.py, when drifted
    unsupported: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self, diff: bool = False) -> dict:
        d = dict(self.__dict__)
        if not diff:
            d.pop("diff")
        return d


@dataclass
class CheckReport:
    """Counts outcomes and owns the exit code (black's ``Report``)."""

    models: list[ModelResult]
    verify: bool = False
    atol: float = 1e-4

    def count(self, status: str) -> int:
        return sum(m.status == status for m in self.models)

    @property
    def exit_code(self) -> int:
        return max((EXIT_CODES[m.status] for m in self.models), default=0)

    def summary(self) -> dict:
        out = {"total": len(self.models)}
        out.update({s: self.count(s) for s in STATUSES})
        out.update(verified=sum(m.verified for m in self.models),
                   exit_code=self.exit_code)
        return out

    def to_dict(self, diff: bool = False) -> dict:
        return {"tool": {"name": "keras2torch", "version": __version__},
                "verify": self.verify, "atol": self.atol,
                "models": [m.to_dict(diff) for m in self.models],
                "summary": self.summary()}


# -- checking ---------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One model to check; plain data, so it can go to another process."""

    path: str
    weights: str | None
    port: str | None  # committed port directory, if it exists
    verify: bool
    atol: float
    rules: tuple[str, ...] = ()  # custom rules files (loaded per worker)
    custom_objects: tuple[str, ...] = ()  # for Keras, when verifying
    plugins: bool = True  # load the installed rule packs
    origin: int = field(default_factory=os.getpid)  # the caller's process


def check(paths, *, verify: bool | None = None, atol: float | None = None,
          config: Config | None = None, rules=(), custom_objects=(),
          jobs: int | None = None, executor=None, progress=None,
          found: list[Found] | None = None,
          plugins: bool = True) -> CheckReport:
    """Check every model under ``paths`` (see the module doc); ``rules``
    are custom rules files (:mod:`migrate.userrules`) and
    ``custom_objects`` files that define the models' custom Keras classes
    (for verification), both added to the config's; ``jobs`` and
    ``executor`` as in :func:`migrate.convert_many`, ``progress(done,
    total, result)`` per model checked, ``found`` the result of
    :func:`migrate.discover.discover` if already known; ``plugins=False``
    leaves the installed rule packs out.  A rules file or rule pack that
    cannot be loaded raises :class:`ConversionError`."""
    from .userrules import load_rule_files
    from .verify import verify_available
    if config is None:
        config = find_config(paths)
    rule_files = tuple(os.path.abspath(p) for p in
                       [*config.rules, *rules])
    load_rule_files(rule_files)  # fail here, once, for a bad file
    if plugins:
        from .plugins import load_plugins
        load_plugins()  # and for a broken pack or a clash
    objects = tuple(os.path.abspath(p) for p in
                    [*config.custom_objects, *custom_objects])
    for p in objects:
        if not os.path.isfile(p):
            raise ConversionError(f"custom objects file {p}: no such file")
    if atol is None:
        atol = config.atol if config.atol is not None else 1e-4
    if verify is None:
        verify = verify_available()
    if found is None:
        found = discover(paths, config.exclude)
    work, results = [], {}
    for i, f in enumerate(found):
        if not f.is_model:
            results[i] = ModelResult(str(f.path), "skipped", f.skip,
                                     category="not a model")
            continue
        port = port_for(f.path, config)
        work.append((i, Job(str(f.path), None if f.weights is None
                            else str(f.weights),
                            str(port) if port.exists() else None,
                            verify, atol, rule_files, objects, plugins)))
    from .batch import run_jobs
    from .verify import keras_session
    with keras_session():  # verify: start TensorFlow once, not per model
        done = run_jobs(check_one, [j for _, j in work], jobs=jobs,
                        executor=executor, progress=progress,
                        on_crash=_crashed)
    for (i, _), result in zip(work, done):
        results[i] = result
    return CheckReport([results[i] for i in range(len(found))], verify, atol)


def _crashed(job: Job, exc: BaseException) -> ModelResult:
    from .batch import crash_reason
    return ModelResult(job.path, "error", crash_reason(exc),
                       category="internal", weights=job.weights)


def check_one(job: Job) -> ModelResult:
    """Check one model; never raises for a problem with the model."""
    start = time.perf_counter()
    r = ModelResult(job.path, "pass", weights=job.weights, port=job.port,
                    atol=job.atol)
    try:
        _check(job, r)
    except UnsupportedLayers as exc:
        r.status, r.category, r.reason = "fail", "unsupported", str(exc)
        r.unsupported = [{"layer": n, "class_name": c, "reason": why}
                         for n, c, why in exc.problems]
    except ConversionError as exc:
        r.status, r.reason = "error", str(exc)
        r.category = r.category or "read"
    except (OSError, MemoryError) as exc:
        r.status, r.category = "error", "read"
        r.reason = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a bug in keras2torch: report, go on
        r.status, r.category = "error", "internal"
        r.reason = f"internal error: {type(exc).__name__}: {exc}"
    r.seconds = round(time.perf_counter() - start, 3)
    return r


def _check(job: Job, r: ModelResult) -> None:
    from .api import convert
    from .userrules import load_rule_files
    from .verify import verify as run_verify
    from .plugins import with_plugins
    rules = with_plugins(load_rule_files(job.rules) if job.rules else None,
                         job.plugins)
    if job.verify:
        from .verify import reuse_keras_in_worker
        reuse_keras_in_worker(job.origin)
    options = {}
    committed = None
    if job.port is not None:
        committed = _committed(Path(job.port))
        options = committed["options"]
    conv = convert(job.path, job.weights, rules=rules, **options)
    if committed is not None and committed["class_name"] \
            and conv.class_name != committed["class_name"]:
        options["class_name"] = committed["class_name"]
        conv = convert(job.path, job.weights, rules=rules, **options)
    report = conv.report
    r.format = report["source"].get("format")
    r.class_name = conv.class_name
    r.layers = len(report["layers"])
    r.warnings = list(report["warnings"])
    problems = []
    if committed is not None:
        drift = _drift(conv, committed)
        if drift is not None:
            r.drift, r.diff = drift
            r.drift["regenerate"] = regenerate_command(
                job, options, conv.class_name, committed["class_name"])
            problems.append(("drift", _drift_reason(job, r.drift)))
    if job.verify:
        r.category = "verify"
        parity = run_verify(job.path, conv, job.weights, atol=job.atol,
                            rules=rules, custom_objects=job.custom_objects)
        r.category = None
        r.verified = True
        r.max_abs_err = parity["max_abs_err"]
        r.max_rel_err = parity["max_rel_err"]
        if not parity["passed"]:
            problems.insert(0, ("parity", f"parity: max abs err "
                                f"{parity['max_abs_err']:.3g} > atol "
                                f"{job.atol:g}"))
    if problems:
        r.status = "fail"
        r.category = problems[0][0]
        r.reason = "; ".join(p for _, p in problems)


def _committed(port: Path) -> dict:
    """What the committed port holds, and the options it was made with."""
    from .api import WEIGHT_FILES
    meta_path = port / "conversion.json"
    meta = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError:
            meta = {}
    module = meta.get("module") or {}
    weights_file = module.get("weights_file")
    fmt = next((k for k, v in WEIGHT_FILES.items() if v == weights_file),
               None)
    if fmt is None:  # no usable conversion.json: go by the files present
        fmt = next((k for k, v in WEIGHT_FILES.items()
                    if (port / v).exists()), "safetensors")
    options = {"weights_format": fmt}
    if meta.get("layout") in ("torch", "keras"):
        options["layout"] = meta["layout"]
    model_py = port / "model.py"
    return {"port": port, "options": options,
            "class_name": module.get("class_name"),
            "has_meta": bool(meta),
            "source": model_py.read_text(encoding="utf-8")
            if model_py.is_file() else None,
            "weights_path": port / WEIGHT_FILES[fmt]}


def port_source(source: str, port) -> str:
    """model.py as written to ``port`` (its header names the folder)."""
    from .write import _with_outdir
    return _with_outdir(source, Path(port))


def _drift(conv, committed) -> tuple[dict, str | None] | None:
    drift = {"model_py": False, "weights": [], "missing": []}
    diff = None
    if committed["source"] is None:
        drift["missing"].append("model.py")
    elif committed["source"] != port_source(conv.source, committed["port"]):
        drift["model_py"] = True
        diff = "".join(difflib.unified_diff(
            committed["source"].splitlines(keepends=True),
            port_source(conv.source, committed["port"]).splitlines(
                keepends=True),
            f"{committed['port']}/model.py",
            f"{committed['port']}/model.py (converted now)"))
    wpath = committed["weights_path"]
    if not wpath.is_file():
        drift["missing"].append(wpath.name)
    else:
        drift["weights"] = _weight_diff(wpath, conv.state_dict)
    if not committed["has_meta"]:
        drift["missing"].append("conversion.json")
    training = getattr(conv, "training", None)  # a compiled model
    if training is not None and training.source is not None:
        path = committed["port"] / "training.py"
        if not path.is_file():
            drift["missing"].append("training.py")
        elif path.read_text(encoding="utf-8") != port_source(
                training.source, committed["port"]):
            drift["training_py"] = True
    if (drift["model_py"] or drift["weights"] or drift["missing"]
            or drift.get("training_py")):
        return drift, diff
    return None


def _weight_diff(path: Path, state: dict) -> list[str]:
    """Names of tensors that differ (missing, extra, shape, dtype, value)."""
    import torch
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            stored = load_file(str(path))
        else:
            stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConversionError(f"{path}: cannot read the committed weights "
                              f"({type(exc).__name__})") from None
    if not isinstance(stored, dict):
        return ["<not a state dict>"]
    names = sorted(set(stored) | set(state))
    return [k for k in names if k not in stored or k not in state
            or not isinstance(stored[k], torch.Tensor)
            or stored[k].dtype != state[k].dtype
            or stored[k].shape != state[k].shape
            or not torch.equal(stored[k], state[k])]


def _drift_reason(job: Job, drift: dict) -> str:
    parts = []
    if drift["missing"]:
        parts.append("missing " + ", ".join(drift["missing"]))
    if drift["model_py"]:
        parts.append("model.py differs")
    if drift.get("training_py"):
        parts.append("training.py differs")
    if drift["weights"]:
        names = drift["weights"]
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        parts.append(f"weights differ ({', '.join(names[:3])}{more})")
    return (f"drift: {job.port}: " + "; ".join(parts)
            + f" (regenerate: {drift['regenerate']})")


def regenerate_command(job: Job, options: dict, class_name: str | None,
                       committed_class: str | None) -> str:
    """The ``keras2torch convert`` command that rewrites the port."""
    import shlex
    cmd = ["keras2torch", "convert", job.path]
    if job.weights:
        cmd += ["--weights", job.weights]
    cmd += ["-o", str(job.port)]
    if options.get("layout", "torch") != "torch":
        cmd += ["--layout", options["layout"]]
    if committed_class and committed_class == class_name \
            and options.get("class_name"):
        cmd += ["--class-name", class_name]
    if options.get("weights_format", "safetensors") != "safetensors":
        cmd += ["--weights-format", options["weights_format"]]
    for f in job.rules:
        short = os.path.relpath(f)
        cmd += ["--rules", f if short.startswith("..") else short]
    if not job.plugins:
        cmd.append("--no-plugins")
    return " ".join(shlex.quote(c) for c in cmd + ["--force"])


__all__ = ["CheckReport", "Config", "Job", "ModelResult", "check",
           "check_one", "find_config", "load_config", "port_for"]
