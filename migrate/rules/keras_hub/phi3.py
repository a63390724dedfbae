"""Phi-3: a Llama-like decoder (RMSNorm, rotary positions, grouped
key/value heads, SwiGLU) as keras-hub 0.32 builds it
(``keras_hub/src/models/phi3/``), with its own rotary embedding when
``rope_scaling_type="su"``.

keras-hub facts this follows (0.32.0, TensorFlow backend):

* query, key and value are separate einsum projections without biases,
  the head size is ``hidden_dim // num_query_heads``; attention is the
  explicit masked softmax (a query that may attend to nothing gets zeros)
  with dropout on its output, before the output projection;
* dropout also follows the attention block and the feedforward block,
  before each residual add;
* ``Phi3SuScaledRotaryEmbedding`` divides the frequencies by the long
  factors when ``start_index + sequence length`` exceeds
  ``pretraining_sequence_length`` and by the short ones otherwise -- at
  run time, from the input's length (a tensor ``torch.where``, so that
  ``torch.export`` with a dynamic length keeps both) -- and scales cos
  and sin by ``sqrt(1 + log(s) / log(pretraining_sequence_length))``, ``s =
  max_sequence_length / pretraining_sequence_length`` (1 when s <= 1).
"""
from __future__ import annotations

import math
import textwrap

from ...errors import ConversionError
from ...layout import identity
from ...read.expand import expander
from ..base import Emit, Out, Tensor
from ..common import lit
from ..registry import rule
from .config import dim, layers, number, rate
from .functional import Functional
from .gpt2 import causal_lm
from .llama import (ROPE_ATTENTION, _keys, _rotary_code, gqa_input,
                    rms_layer_norm)
from .transformer import _fold, _indent, activation_step, helper_name
from .weights import HubWeights, dense_weight, heads_in, heads_out, stored

DECODER_MODULE = "keras_hub.src.models.phi3.phi3_decoder"
NORM_MODULE = "keras_hub.src.models.phi3.phi3_layernorm"

SU_ROTARY = '''\
def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """Phi-3's su-scaled rotary position embedding of (B, heads, T,
    head_dim) tensors: frequencies divided by the short factors, or by the
    long ones when the sequence is longer than {pretraining} steps (keras-hub
    chooses by the input's length), cos and sin scaled by {magnitude}."""

    def __init__(self, head_dim, max_wavelength=10000.0, scaling_factor=1.0):
        super().__init__()
        exponent = torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim
        inv_freq = max_wavelength ** -exponent / scaling_factor
        short_factor = torch.tensor({short})
        long_factor = torch.tensor({long})
        self.register_buffer("short_inv_freq", inv_freq / short_factor,
                             persistent=False)
        self.register_buffer("long_inv_freq", inv_freq / long_factor,
                             persistent=False)

    def forward(self, x):
        T = x.shape[-2]
        # a tensor test, not an if: an exported port keeps both choices
        long = torch.full((), T, device=x.device) > {pretraining}
        inv_freq = torch.where(long, self.long_inv_freq, self.short_inv_freq)
        positions = torch.arange(T, dtype=torch.float32, device=x.device)
        angles = torch.outer(positions, inv_freq)  # (T, head_dim / 2)
        angles = torch.cat((angles, angles), dim=-1)
        cos = angles.cos() * {magnitude}
        sin = angles.sin() * {magnitude}
        return x * cos + rotate_half(x) * sin
'''


def _factor_list(values) -> str:
    return "[" + ", ".join(lit(float(v)) for v in values) + "]"


def _su_rotary_code(cfg: dict, call, head_dim: int) -> str:
    short = cfg.get("rope_scaling_short_factor")
    long = cfg.get("rope_scaling_long_factor")
    for key, factors in (("rope_scaling_short_factor", short),
                         ("rope_scaling_long_factor", long)):
        if not isinstance(factors, (list, tuple)) or \
                len(factors) != head_dim // 2:
            call.refuse(key, f"must be a list of head_dim // 2 = "
                        f"{head_dim // 2} factors")
    length = dim(cfg, "max_sequence_length")
    pretraining = dim(cfg, "pretraining_sequence_length")
    scale = length / pretraining
    magnitude = 1.0 if scale <= 1.0 else math.sqrt(
        1 + math.log(scale) / math.log(pretraining))
    code = SU_ROTARY.format(short=_factor_list(short),
                            long=_factor_list(long),
                            pretraining=pretraining, magnitude=lit(magnitude))
    lines = []
    for line in code.split("\n"):  # long factor lists: wrap at 79 cols
        if len(line) > 79 and "torch.tensor([" in line:
            head, rest = line.split("torch.tensor(", 1)
            pad = " " * (len(head) + len("torch.tensor(["))
            wrapped = textwrap.wrap(rest, 79 - len(pad),
                                    break_long_words=False)
            lines.append(head + "torch.tensor(" + wrapped[0])
            lines += [pad + w for w in wrapped[1:]]
        else:
            lines.append(line)
    return "\n".join(lines)


def _block_code(name: str, act: str) -> str:
    doc = ('    """keras-hub Phi-3 decoder block: causal self-attention '
           "(rotary positions, grouped key/value heads) and a gated "
           "feedforward network, each on the RMS-normalised input, added "
           "to it after dropout.  ``padding_mask`` (B, T) is 1 at real "
           'tokens."""')
    lines = [f"class {name}(nn.Module):"]
    lines += textwrap.wrap(doc, 79, subsequent_indent="    ")
    lines.append("")
    init = ["hidden_dim", "num_query_heads", "num_key_value_heads",
            "intermediate_dim", "eps=1e-06", "dropout=0.0",
            "max_wavelength=10000.0"]
    lines.append(f"    def __init__(self, {', '.join(init)}):")
    body = [
        "super().__init__()",
        "head_dim = hidden_dim // num_query_heads",
        "self.pre_attention_layernorm = nn.RMSNorm(hidden_dim, eps=eps)",
        "self.attention = RopeAttention(hidden_dim, num_query_heads, "
        "num_key_value_heads, head_dim, False, dropout, max_wavelength)",
        "self.post_attention_layernorm = nn.RMSNorm(hidden_dim, eps=eps)",
        "self.feedforward_intermediate_dense = nn.Linear(hidden_dim, "
        "intermediate_dim, bias=False)",
        "self.feedforward_gate_dense = nn.Linear(hidden_dim, "
        "intermediate_dim, bias=False)",
        "self.feedforward_output_dense = nn.Linear(intermediate_dim, "
        "hidden_dim, bias=False)",
        "self.dropout = nn.Dropout(dropout)"]
    lines += _indent(body, 8) + [""]
    lines.append("    def forward(self, x, padding_mask=None):")
    fw = ["T = x.shape[1]",
          "# (T, T): step t attends to steps 0..t",
          "mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()",
          "if padding_mask is not None:  # (B, 1, T, T)",
          "    mask = mask & padding_mask[:, None, None, :].bool()",
          "h = self.attention(self.pre_attention_layernorm(x), mask)",
          "x = x + self.dropout(h)",
          "h = self.post_attention_layernorm(x)",
          "gate = " + act.replace("{}", "self.feedforward_gate_dense(h)"),
          "h = self.feedforward_intermediate_dense(h) * gate",
          "return x + self.dropout(self.feedforward_output_dense(h))"]
    lines += _indent(fw, 8)
    return "\n".join(_fold(lines)) + "\n"


rule(*_keys("Phi3LayerNorm"))(rms_layer_norm)


@rule(*_keys("Phi3Decoder"), masks="consume")
def phi3_decoder(call):
    """nn.Module: a Phi-3 decoder block class (RMSNorm, RoPE, GQA, SwiGLU)"""
    cfg = call.config
    x, hidden, nq, nkv = gqa_input(call, (
        "attention_cache", "attention_cache_update_index",
        "decoder_attention_mask"))
    head_dim = hidden // nq
    inter = dim(cfg, "intermediate_dim")
    eps = number(cfg, "layer_norm_epsilon", 1e-5)
    dropout = rate(cfg, "dropout", 0.0)
    wavelength = number(cfg, "rope_max_wavelength", 10000)
    scaling_type = cfg.get("rope_scaling_type")
    if scaling_type is None:
        rotary = _rotary_code(None)
    elif scaling_type == "su":
        rotary = _su_rotary_code(cfg, call, head_dim)
    else:
        call.refuse(f"rope_scaling_type={scaling_type!r}",
                    'keras-hub 0.32 takes only None or "su"')
    act = activation_step(call, cfg.get("activation", "silu"))
    base = "Phi3Decoder"
    code = _block_code(base, act)
    name = helper_name(call, base, code)
    code = code.replace(base, name, 1)
    if call._conv.helpers.get("RotaryEmbedding", rotary) != rotary:
        call.refuse("rope", "two different rotary embeddings in one model")
    helpers = {"RopeAttention": ROPE_ATTENTION, "RotaryEmbedding": rotary,
               name: code}
    w = HubWeights(call, norm=("scale",))
    att = "attention"
    state = {}
    for part, shape in (("query", (hidden, nq, head_dim)),
                        ("key", (hidden, nkv, head_dim)),
                        ("value", (hidden, nkv, head_dim))):
        state[f"attention.{part}.weight"] = heads_in(
            w.array(f"{att}/{part}_dense", 0, shape))
    state["attention.attention_output.weight"] = heads_out(
        w.array(f"{att}/output_dense", 0, (nq, head_dim, hidden)))
    for norm in ("pre_attention_layernorm", "post_attention_layernorm"):
        state[f"{norm}.weight"] = stored(w.array(norm, 0, (hidden,)))
    for dense, shape in (("feedforward_intermediate_dense", (hidden, inter)),
                         ("feedforward_gate_dense", (hidden, inter)),
                         ("feedforward_output_dense", (inter, hidden))):
        state[f"{dense}.weight"] = dense_weight(w.array(dense, 0, shape))
    args = [str(hidden), str(nq), str(nkv), str(inter)]
    if eps != 1e-6:
        args.append(f"eps={lit(eps)}")
    if dropout:
        args.append(f"dropout={lit(dropout)}")
    if wavelength != 10000:
        args.append(f"max_wavelength={lit(wavelength)}")
    pad = call.kwarg("decoder_padding_mask")
    padding = pad.expr if isinstance(pad, Tensor) else (
        x.mask if x.masked else None)
    if x.masked and padding is None:
        call.refuse("mask", "the input's Keras mask is not available")
    code_args = [x.expr] + ([padding] if padding is not None else [])
    step = f"self.{call.attr}({', '.join(code_args)})"
    return Emit([Out([step], x.shape, identity(3), masked=True)],
                module=f"{name}({', '.join(args)})", state=state,
                helpers=helpers)


_DECODER_KEYS = ("hidden_dim", "intermediate_dim", "num_query_heads",
                 "num_key_value_heads", "dropout", "max_sequence_length",
                 "pretraining_sequence_length", "rope_max_wavelength",
                 "rope_scaling_type", "rope_scaling_short_factor",
                 "rope_scaling_long_factor")


@expander("keras_hub>Phi3Backbone")
def phi3_backbone(cfg):
    vocab, hidden = dim(cfg, "vocabulary_size"), dim(cfg, "hidden_dim")
    eps = number(cfg, "layer_norm_epsilon", 1e-6)
    for k in ("intermediate_dim", "num_query_heads", "num_key_value_heads"):
        dim(cfg, k)
    scaling = cfg.get("rope_scaling_type")
    if scaling not in (None, "su"):
        raise ConversionError(
            f"rope_scaling_type = {scaling!r} is not supported (keras-hub "
            '0.32 takes only None or "su")')
    g = Functional(cfg, "phi3_backbone")
    token_ids = g.input("token_ids", (None,), "int32")
    padding_mask = g.input("padding_mask", (None,), "int32")
    x = g.layer("ReversibleEmbedding", "token_embedding",
                {"input_dim": vocab, "output_dim": hidden,
                 "tie_weights": False}, token_ids)
    layer_cfg = {k: cfg[k] for k in _DECODER_KEYS if k in cfg}
    layer_cfg.update(activation="silu", layer_norm_epsilon=eps)
    for i in range(layers(cfg)):
        x = g.layer("Phi3Decoder", f"transformer_layer_{i}",
                    dict(layer_cfg), x, module=DECODER_MODULE,
                    registered="Phi3Decoder",
                    decoder_padding_mask=padding_mask)
    x = g.layer("Phi3LayerNorm", "sequence_output_layernorm",
                {"epsilon": eps}, x, module=NORM_MODULE,
                registered="Phi3LayerNorm")
    return g.build(x, {"token_ids": token_ids, "padding_mask": padding_mask},
                   names=["sequence_output"])


@expander("keras_hub>Phi3CausalLM")
def phi3_causal_lm(cfg):
    return causal_lm(cfg, "phi3_causal_lm")
