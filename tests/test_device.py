"""A port follows its module to any device: every constant in forward()
is made on the input's device or is a buffer.  Checked by running every
fixture's port on the meta device, where a CPU tensor is an error."""
import pytest
import torch

import migrate

from conftest import MODELS


def _model_file(d):
    return next((d / n for n in ("model.keras", "model.h5")
                 if (d / n).exists()), None)


def _reference_batch(d) -> int:
    """The batch the fixture's reference ran with (a layer may need a
    multiple of something: Swin's window mask takes B * windows rows)."""
    import numpy as np
    ref = d / "reference.npz"
    if ref.exists():
        with np.load(ref, allow_pickle=False) as data:
            if "in_0" in data.files and data["in_0"].ndim:
                return int(data["in_0"].shape[0])
    return 2


CASES = sorted(d.name for d in MODELS.iterdir() if _model_file(d))


@pytest.mark.parametrize("case", CASES)
def test_port_runs_on_another_device(case):
    try:
        conv = migrate.convert(_model_file(MODELS / case))
    except migrate.ConversionError:
        pytest.skip("does not convert (an unsupported-layer fixture)")
    module = conv.module_class()().to("meta").eval()
    batch = _reference_batch(MODELS / case)
    args = []
    for t in conv.program.inputs:
        shape = [batch] + [16 if d is None else d for d in t.torch_shape[1:]]
        dtype = torch.int64 if "int" in t.dtype else torch.float32
        args.append(torch.zeros(shape, dtype=dtype, device="meta"))
    with torch.no_grad():
        module(*args)
