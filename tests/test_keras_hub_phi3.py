"""keras-hub's Phi-3: structure of the port (parity is in test_parity,
the expansion and --verify in test_keras_hub_llama)."""
import pytest

import migrate
from conftest import MODELS
from migrate.errors import ConversionError
from migrate.read.expand import expand


def test_phi3_backbone_port_reads_like_llama():
    conv = migrate.convert(MODELS / "k3_hub_phi3_backbone" / "model.keras")
    src = conv.source
    assert src.count("class Phi3Decoder(nn.Module)") == 1
    assert "class RopeAttention(nn.Module)" in src
    assert "self.pre_attention_layernorm" in src
    assert "x + self.dropout(self.feedforward_output_dense(h))" in src
    assert "nn.RMSNorm(16, eps=1e-05)" in src and "dropout=0.1" in src
    assert "max_wavelength=500.0" in src and "long_inv_freq" not in src
    assert any(k.endswith("attention.query.weight") for k in conv.state_dict)


def test_phi3_su_rope_picks_its_factors_by_the_input_length():
    conv = migrate.convert(MODELS / "k3_hub_phi3_causal_lm" / "model.keras")
    src = conv.source
    assert "long = torch.full((), T, device=x.device) > 4" in src
    # sqrt(1 + log(64 / 4) / log(4)) = sqrt(3)
    assert "angles.cos() * 1.73205080757" in src
    assert "torch.tensor([2.0, 7.5])" in src
    assert not any("inv_freq" in k for k in conv.state_dict)  # buffers
    import torch
    model = conv.module().eval()
    rope = next(m for m in model.modules()
                if type(m).__name__ == "RotaryEmbedding")
    x = torch.randn(1, 1, 8, 4)
    assert not torch.allclose(rope(x)[..., :4, :], rope(x[..., :4, :]))


def test_phi3_unknown_rope_scaling_is_refused_by_name():
    import json
    import zipfile
    with zipfile.ZipFile(MODELS / "k3_hub_phi3_backbone"
                         / "model.keras") as z:
        saved = json.loads(z.read("config.json"))
    saved["config"]["rope_scaling_type"] = "longrope"
    with pytest.raises(ConversionError, match="rope_scaling_type"):
        expand(saved, "m.keras")


def test_phi3_su_rope_exports_with_a_dynamic_length_on_both_sides():
    """The short/long choice is a tensor op: one exported program serves
    sequences shorter and longer than pretraining_sequence_length."""
    import torch
    conv = migrate.convert(MODELS / "k3_hub_phi3_causal_lm" / "model.keras")
    model = conv.module().eval()
    names = [t.var for t in conv.program.inputs]
    T = torch.export.Dim("T", min=2, max=32)

    def inputs(n):
        return {"padding_mask": torch.ones(2, n, dtype=torch.int64),
                "token_ids": torch.randint(0, 100, (2, n))}
    args = tuple(inputs(8)[k] for k in names)
    ep = torch.export.export(model, args,
                             dynamic_shapes=tuple({1: T} for _ in names))
    for n in (3, 9):  # short factors, long factors
        a = tuple(inputs(n)[k] for k in names)
        torch.testing.assert_close(ep.module()(*a), model(*a))
