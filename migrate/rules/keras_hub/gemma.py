"""Gemma (1 and 2): GemmaBackbone and GemmaCausalLM, as keras-hub 0.32
builds them (``keras_hub/src/models/gemma/``).

What sets Gemma apart, each followed here:

* the token embedding is scaled by ``sqrt(hidden_dim)`` (a Keras op node);
* its RMSNorm multiplies by ``1 + scale``: the port's ``nn.RMSNorm`` weight
  is that sum (the weight map says so);
* attention always scales by ``head_dim ** -0.5`` (the block builds its
  attention with ``query_head_dim_normalize=True`` whatever the backbone
  says), rotary positions with wavelength 10000; Gemma 2's
  ``attention_logit_soft_cap`` (``tanh(scores / cap) * cap`` before the
  softmax) takes the explicit path, the rest
  ``F.scaled_dot_product_attention``; a query with nothing to attend to
  gets zeros, as Keras's masked softmax gives;
* Gemma 2's sliding window on every other layer (even ones), its post-
  attention and post-feedforward norms, and the final logit soft cap on
  the tied head;
* the feedforward network is GeGLU: ``gelu(tanh) (x W1) * (x W2)``, each of
  width ``intermediate_dim // 2``;
* keras-hub rotates then interleaves the halves of queries and keys; the
  same permutation of both leaves every score unchanged, so the port keeps
  the plain rotation.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass

from ...errors import ConversionError
from ...layout import identity
from ...read.expand import expander
from ..base import Emit, Out, Tensor, Transformed
from ..common import as_f32, lit
from ..registry import rule
from .config import dim, layers, number, rate
from .functional import Functional
from .gpt2 import causal_lm
from .llama import ROTARY, gqa_input, qk_norm
from .transformer import _fold, _indent, helper_name
from .weights import HubWeights, dense_weight, heads_first_in, heads_out


@dataclass(frozen=True)
class Family:
    """What one Gemma generation's generated block and attention classes
    look like."""
    title: str         # in the docstrings: "Gemma", "Gemma 3"
    block: str         # class names
    attention: str
    rope_args: bool    # rotary wavelength and scaling are arguments
    window: int        # the block's default sliding window
    halve: bool        # the GeGLU is intermediate_dim // 2 wide


GEMMA = Family("Gemma", "GemmaDecoderBlock", "GemmaAttention",
               rope_args=False, window=4096, halve=True)

_ATTENTION_HEAD = '''\
class {name}(nn.Module):
    """{title}'s grouped-query attention with rotary positions{qk_doc},
    scores scaled by ``head_dim ** -0.5``.  ``mask`` broadcasts to
    (B, heads, T, T), True where a query step may attend to a key step; a
    query that may attend to nothing gets zeros, as in Keras."""

    def __init__(self, hidden_dim, num_query_heads, num_key_value_heads,
                 head_dim, {rope_arg}dropout=0.0{cap_arg}):
        super().__init__()
        self.num_query_heads = num_query_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.dropout = dropout{cap_init}
        kv_dim = num_key_value_heads * head_dim
        self.query = nn.Linear(hidden_dim, num_query_heads * head_dim,
                               bias=False)
        self.key = nn.Linear(hidden_dim, kv_dim, bias=False)
        self.value = nn.Linear(hidden_dim, kv_dim, bias=False){qk_init}
        self.attention_output = nn.Linear(num_query_heads * head_dim,
                                          hidden_dim, bias=False)
        self.rotary_embedding = RotaryEmbedding({rotary_args})

    def forward(self, x, mask):
        q = self.query(x).unflatten(-1, (self.num_query_heads, -1))
        k = self.key(x).unflatten(-1, (self.num_key_value_heads, -1))
        v = self.value(x).unflatten(-1, (self.num_key_value_heads, -1)){qk_fw}
        q = self.rotary_embedding(q.transpose(1, 2))  # (B, h, T, d)
        k = self.rotary_embedding(k.transpose(1, 2))
        v = v.transpose(1, 2)
        groups = self.num_query_heads // self.num_key_value_heads
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
        p = self.dropout if self.training else 0.0
'''
_QK_INIT, _QK_FW = qk_norm(1e-6)  # Gemma 3's, whatever its epsilon
_SDPA = '''\
        empty = ~mask.any(-1, keepdim=True)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | empty,
                                           dropout_p=p)
        y = y.masked_fill(empty, 0.0)
        return self.attention_output(y.transpose(1, 2).flatten(2))
'''
_CAPPED = '''\
        scores = (q * self.head_dim ** -0.5) @ k.transpose(-2, -1)
        cap = self.logit_soft_cap
        scores = torch.tanh(scores / cap) * cap  # the soft cap
        scores = scores.masked_fill(~mask, -1e9)
        weights = scores.softmax(dim=-1).masked_fill(~mask, 0.0)
        y = F.dropout(weights, p, self.training) @ v
        return self.attention_output(y.transpose(1, 2).flatten(2))
'''


def _attention_code(family: Family, capped: bool, qk_norm: bool) -> str:
    fill = {
        "{name}": family.attention, "{title}": family.title,
        "{qk_doc}": " on per-head\n    RMS-normalised queries and keys"
        if qk_norm else "",
        "{rope_arg}": "max_wavelength=10000.0, scaling_factor=1.0,\n"
        "                 " if family.rope_args else "",
        "{cap_arg}": ",\n                 logit_soft_cap=None" if capped
        else "",
        "{cap_init}": "\n        self.logit_soft_cap = logit_soft_cap"
        if capped else "",
        "{qk_init}": _QK_INIT if qk_norm else "",
        "{rotary_args}": "head_dim, max_wavelength,\n"
        "                                                scaling_factor"
        if family.rope_args else "head_dim",
        "{qk_fw}": _QK_FW if qk_norm else ""}
    code = _ATTENTION_HEAD
    for key, value in fill.items():
        code = code.replace(key, value)
    return code + (_CAPPED if capped else _SDPA)


def _block_code(family: Family, capped, window, post_attn, post_ffw) -> str:
    doc = (f'    """keras-hub {family.title} decoder block: causal '
           "self-attention (rotary positions, grouped key/value heads"
           + (", a sliding window" if window else "")
           + (", soft-capped scores" if capped else "")
           + ") and a GeGLU feedforward network, each on the RMS-normalised "
           "input" + (" and normalised again" if post_attn or post_ffw
                      else "")
           + ", added to it.  ``padding_mask`` (B, T) is 1 at real "
           'tokens."""')
    lines = [f"class {family.block}(nn.Module):"]
    lines += textwrap.wrap(doc, 79, subsequent_indent="    ") + [""]
    init = ["hidden_dim", "num_query_heads", "num_key_value_heads",
            "head_dim", "intermediate_dim"]
    rope = ", max_wavelength, scaling_factor" if family.rope_args else ""
    if family.rope_args:
        init += ["max_wavelength=10000.0", "scaling_factor=1.0"]
    init += ["eps=1e-06", "dropout=0.0"]
    if capped:
        init.append("logit_soft_cap=None")
    if window:
        init.append(f"sliding_window={family.window}")
    lines.append(f"    def __init__(self, {', '.join(init)}):")
    width = "intermediate_dim // 2" if family.halve else "intermediate_dim"
    body = ["super().__init__()"]
    if window:
        body.append("self.sliding_window = sliding_window")
    body += ["self.pre_attention_norm = nn.RMSNorm(hidden_dim, eps=eps)",
             f"self.attention = {family.attention}(hidden_dim, "
             f"num_query_heads, num_key_value_heads, head_dim{rope}, "
             "dropout" + (", logit_soft_cap" if capped else "") + ")"]
    if post_attn:
        body.append("self.post_attention_norm = nn.RMSNorm(hidden_dim, "
                    "eps=eps)")
    body += ["self.pre_ffw_norm = nn.RMSNorm(hidden_dim, eps=eps)",
             f"self.gating_ffw = nn.Linear(hidden_dim, {width}, bias=False)",
             f"self.gating_ffw_2 = nn.Linear(hidden_dim, {width}, "
             "bias=False)",
             f"self.ffw_linear = nn.Linear({width}, hidden_dim, bias=False)"]
    if post_ffw:
        body.append("self.post_ffw_norm = nn.RMSNorm(hidden_dim, eps=eps)")
    body.append("self.dropout = nn.Dropout(dropout)")
    lines += _indent(body, 8) + [""]
    lines.append("    def forward(self, x, padding_mask=None):")
    fw = ["T = x.shape[1]",
          "# (T, T): step t attends to steps 0..t",
          "mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()"]
    if window:
        fw.append("mask = mask.triu(1 - self.sliding_window)  # the last "
                  "window steps")
    fw += ["if padding_mask is not None:  # (B, 1, T, T)",
           "    mask = mask & padding_mask[:, None, None, :].bool()",
           "h = self.attention(self.pre_attention_norm(x), mask)"]
    if post_attn:
        fw.append("h = self.post_attention_norm(h)")
    fw += ["x = x + self.dropout(h)",
           "h = self.pre_ffw_norm(x)",
           'gate = F.gelu(self.gating_ffw(h), approximate="tanh")',
           "h = self.ffw_linear(gate * self.gating_ffw_2(h))"]
    if post_ffw:
        fw.append("h = self.post_ffw_norm(h)")
    fw.append("return x + h")
    lines += _indent(fw, 8)
    return "\n".join(_fold(lines)) + "\n"


def _plus_one(a) -> Transformed:
    return Transformed(lambda x: as_f32(1.0 + x), [a],
                       "1 + scale (Gemma's RMSNorm multiplies by 1 + scale)")


@rule("keras_hub>RMSNormalization")
def gemma_rms_norm(call):
    """nn.RMSNorm, weight 1 + scale (keras-hub's Gemma RMSNormalization)"""
    x = call.want(0, identity(call.inputs[0].rank))
    hidden = x.shape[-1]
    eps = float(call.config.get("epsilon", 1e-6))
    w = HubWeights(call, own=["scale"])
    return Emit([Out([f"self.{call.attr}({x.expr})"], x.shape, x.layout)],
                module=f"nn.RMSNorm({hidden}, eps={lit(eps)})",
                state={"weight": _plus_one(w.array("", 0, (hidden,)))},
                init_lines=[])


@rule("keras_hub>GemmaDecoderBlock", masks="consume")
def gemma_decoder_block(call):
    """nn.Module: a `GemmaDecoderBlock` class (RoPE, GQA, GeGLU, SDPA)"""
    return decoder_block(call, GEMMA)


def decoder_block(call, family: Family) -> Emit:
    """A Gemma decoder block of any generation: the block and attention
    classes written once, the weights, and the call."""
    cfg = call.config
    x, hidden, nq, nkv = gqa_input(call, ("cache",))
    head_dim, inter = dim(cfg, "head_dim"), dim(cfg, "intermediate_dim")
    # Gemma 1/2 always halve; Gemma 3's block says by how much
    reduction = dim(cfg, "gate_dim_reduction") \
        if "gate_dim_reduction" in cfg and not family.halve else 2
    width = inter // reduction
    if width < 1:
        call.refuse(f"intermediate_dim={inter}", "the gate has no width")
    eps = number(cfg, "layer_norm_epsilon", 1e-6)
    dropout = rate(cfg, "dropout", 0.0)
    cap = cfg.get("logit_soft_cap")
    cap = None if cap is None else number(cfg, "logit_soft_cap", 0.0)
    if cap is not None and cap <= 0:
        call.refuse(f"logit_soft_cap={cap}", "must be positive")
    window = dim(cfg, "sliding_window_size") \
        if cfg.get("use_sliding_window_attention") else None
    wavelength = number(cfg, "rope_wavelength", 10000.0) \
        if family.rope_args else 10000.0
    scaling = number(cfg, "rope_scaling_factor", 1.0) \
        if family.rope_args else 1.0
    qk_norm = bool(cfg.get("use_query_key_norm", False))
    post_attn = bool(cfg.get("use_post_attention_norm"))
    post_ffw = bool(cfg.get("use_post_ffw_norm"))
    code = _block_code(family, cap is not None, window, post_attn, post_ffw)
    name = helper_name(call, family.block, code)
    code = code.replace(family.block, name, 1)
    attention = _attention_code(family, cap is not None, qk_norm)
    attn_name = helper_name(call, family.attention, attention)
    attention = attention.replace(family.attention, attn_name, 1)
    code = code.replace(f"{family.attention}(", f"{attn_name}(")
    rotary = ROTARY.replace("{adjust}", "")
    if call._conv.helpers.get("RotaryEmbedding", rotary) != rotary:
        raise ConversionError("two RotaryEmbedding variants in one model")
    helpers = {"RotaryEmbedding": rotary, attn_name: attention, name: code}
    w = HubWeights(call, norm=("scale",))
    state = {}
    for part, heads in (("query", nq), ("key", nkv), ("value", nkv)):
        state[f"attention.{part}.weight"] = heads_first_in(w.array(
            (f"attention/{part}_dense", f"attention/_{part}_dense"), 0,
            (heads, hidden, head_dim)))
    state["attention.attention_output.weight"] = heads_out(w.array(
        ("attention/output_dense", "attention/_output_dense"), 0,
        (nq, head_dim, hidden)))
    if qk_norm:
        for part in ("query_norm", "key_norm"):
            state[f"attention.{part}.weight"] = _plus_one(w.array(
                f"attention/{part}", 0, (head_dim,)))
    norms = ["pre_attention_norm", "pre_ffw_norm"] + (
        ["post_attention_norm"] if post_attn else []) + (
        ["post_ffw_norm"] if post_ffw else [])
    for norm in norms:
        state[f"{norm}.weight"] = _plus_one(w.array(norm, 0, (hidden,)))
    for dense, shape in (("gating_ffw", (hidden, width)),
                         ("gating_ffw_2", (hidden, width)),
                         ("ffw_linear", (width, hidden))):
        state[f"{dense}.weight"] = dense_weight(w.array(dense, 0, shape))
    args = [str(hidden), str(nq), str(nkv), str(head_dim),
            str(inter if family.halve else width)]
    if wavelength != 10000.0:
        args.append(f"max_wavelength={lit(wavelength)}")
    if scaling != 1.0:
        args.append(f"scaling_factor={lit(scaling)}")
    if eps != 1e-6:
        args.append(f"eps={lit(eps)}")
    if dropout:
        args.append(f"dropout={lit(dropout)}")
    if cap is not None:
        args.append(f"logit_soft_cap={lit(cap)}")
    if window:
        args.append(f"sliding_window={window}")
    pad = call.kwarg("padding_mask")
    padding = pad.expr if isinstance(pad, Tensor) else (
        x.mask if x.masked else None)
    code_args = [x.expr] + ([padding] if padding is not None else [])
    return Emit([Out([f"self.{call.attr}({', '.join(code_args)})"], x.shape,
                     identity(3), masked=True)],
                module=f"{name}({', '.join(args)})", state=state,
                helpers=helpers)


@expander("keras_hub>GemmaBackbone", "keras_nlp>GemmaBackbone")
def gemma_backbone(cfg: dict) -> dict:
    vocab, hidden = dim(cfg, "vocabulary_size"), dim(cfg, "hidden_dim")
    eps = number(cfg, "layer_norm_epsilon", 1e-6)
    g = Functional(cfg, "gemma_backbone")
    token_ids = g.input("token_ids", (None,), "int32")
    padding_mask = g.input("padding_mask", (None,), "int32")
    cap = cfg.get("final_logit_soft_cap")
    x = g.layer("ReversibleEmbedding", "token_embedding",
                {"input_dim": vocab, "output_dim": hidden,
                 "tie_weights": True, "logit_soft_cap": cap}, token_ids)
    scale = {"class_name": "__tensor__",
             "config": {"value": float(hidden) ** 0.5, "dtype": "float32"}}
    x = g.op("Multiply", x, scale)
    window = bool(cfg.get("use_sliding_window_attention", False))
    keys = ["intermediate_dim", "head_dim", "num_query_heads",
            "num_key_value_heads", "use_post_ffw_norm",
            "use_post_attention_norm", "sliding_window_size", "dropout",
            "query_head_dim_normalize"]
    for k in ("intermediate_dim", "head_dim", "num_query_heads",
              "num_key_value_heads"):
        dim(cfg, k)
    base = {k: cfg[k] for k in keys if k in cfg}
    base["logit_soft_cap"] = cfg.get("attention_logit_soft_cap")
    for i in range(layers(cfg)):
        block = dict(base, hidden_dim=hidden,
                     use_sliding_window_attention=window and i % 2 == 0)
        x = g.layer("GemmaDecoderBlock", f"decoder_block_{i}", block, x,
                    module="keras_hub.src.models.gemma.gemma_decoder_block",
                    registered="GemmaDecoderBlock", padding_mask=padding_mask)
    x = g.layer("RMSNormalization", "final_normalization", {"epsilon": eps},
                x, module="keras_hub.src.models.gemma.rms_normalization",
                registered="RMSNormalization")
    return g.build(x, {"token_ids": token_ids, "padding_mask": padding_mask},
                   names=["sequence_output"])


@expander("keras_hub>GemmaCausalLM", "keras_nlp>GemmaCausalLM")
def gemma_causal_lm(cfg: dict) -> dict:
    return causal_lm(cfg, "gemma_causal_lm")
