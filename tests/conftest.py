import importlib.util
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "fixtures" / "models"

HAS_TF = importlib.util.find_spec("tensorflow") is not None
needs_tf = pytest.mark.skipif(not HAS_TF, reason="TensorFlow not installed")


def fixture_dir(name: str) -> Path:
    return MODELS / name


def model_files(case_dir: Path):
    """(label, model path, weights path or None) for every format saved."""
    out = []
    if (case_dir / "model.keras").exists():
        out.append(("keras", case_dir / "model.keras", None))
    if (case_dir / "model.h5").exists():
        out.append(("h5", case_dir / "model.h5", None))
    if (case_dir / "savedmodel").is_dir():
        out.append(("savedmodel", case_dir / "savedmodel", None))
    if (case_dir / "model.json").exists():
        for w in ("model.weights.h5", "model_weights.h5"):
            if (case_dir / w).exists():
                out.append(("json", case_dir / "model.json", case_dir / w))
    return out


def case_meta(case_dir: Path) -> dict:
    return json.loads((case_dir / "case.json").read_text())


def require(tool: str, available: bool, hint: str) -> None:
    """Skip the calling test when an optional ``tool`` is missing, or fail
    it when ``$KERAS2TORCH_REQUIRE`` names the tool (CI sets it, so that a
    test CI is meant to run cannot pass by skipping)."""
    if available:
        return
    required = os.environ.get("KERAS2TORCH_REQUIRE", "").replace(",", " ")
    if tool in required.split():
        pytest.fail(f"{tool} is required here (KERAS2TORCH_REQUIRE) but "
                    f"missing: {hint}")
    pytest.skip(f"{tool} is not installed ({hint})")
