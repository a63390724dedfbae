"""Gemma 3 (text): Gemma3Backbone and Gemma3CausalLM, as keras-hub 0.32
builds them (``keras_hub/src/models/gemma3/``).

What Gemma 3 changes from Gemma 2 (:mod:`.gemma`), each followed here:

* queries and keys are RMS-normalised per head (``1 + scale``, epsilon
  1e-6 whatever ``layer_norm_epsilon`` says: the block does not pass it on)
  before the rotation, when ``use_query_key_norm``;
* five local layers then one global (``i % 6 < 5`` is local when
  ``use_sliding_window_attention``): local layers rotate with wavelength
  10000 and ``local_rope_scaling_factor``, global ones with 1000000 and
  ``global_rope_scaling_factor``; without sliding windows every layer is
  global;
* the GeGLU feedforward is ``intermediate_dim`` wide (``gate_dim_reduction``
  1);
* the block builds its attention with ``query_head_dim_normalize=True``
  whatever the backbone says, so scores scale by ``head_dim ** -0.5``;
* dropout acts on the attention weights and the attention output only (the
  feedforward dropout keras-hub creates is never called).

A vision encoder, bidirectional attention and the embedding-model head are
refused by name.
"""
from __future__ import annotations

import textwrap

from ...read.expand import expander
from ..base import Emit, Out, Tensor
from ..common import lit
from ..registry import rule
from ...layout import identity
from ...errors import ConversionError
from .config import dim, layers, number, rate
from .functional import Functional
from .gemma import _CAPPED, _SDPA, _plus_one
from .gpt2 import causal_lm
from .llama import ROTARY, qk_norm
from .transformer import _fold, _indent, helper_name
from .weights import HubWeights, dense_weight, heads_first_in, heads_out

_HEAD = '''\
class Gemma3Attention(nn.Module):
    """Gemma 3's grouped-query attention with rotary positions{qk_doc},
    scores scaled by ``head_dim ** -0.5``.  ``mask`` broadcasts to
    (B, heads, T, T), True where a query step may attend to a key step; a
    query that may attend to nothing gets zeros, as in Keras."""

    def __init__(self, hidden_dim, num_query_heads, num_key_value_heads,
                 head_dim, max_wavelength=10000.0, scaling_factor=1.0,
                 dropout=0.0{cap_arg}):
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
        self.rotary_embedding = RotaryEmbedding(head_dim, max_wavelength,
                                                scaling_factor)

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
_QK_INIT, _QK_FW = qk_norm(1e-6)  # as Qwen 3's, at Gemma's epsilon


def _attention_code(capped: bool, qk_norm: bool) -> str:
    code = _HEAD.replace(
        "{cap_arg}", ",\n                 logit_soft_cap=None" if capped
        else "").replace(
        "{cap_init}", "\n        self.logit_soft_cap = logit_soft_cap"
        if capped else "").replace(
        "{qk_doc}", " on per-head\n    RMS-normalised queries and keys"
        if qk_norm else "").replace(
        "{qk_init}", _QK_INIT if qk_norm else "").replace(
        "{qk_fw}", _QK_FW if qk_norm else "")
    tail = _CAPPED.replace("Gemma 2's soft cap", "soft cap") if capped \
        else _SDPA
    return code + tail


def _block_code(name, capped, window, post_attn, post_ffw) -> str:
    doc = ('    """keras-hub Gemma 3 decoder block: causal self-attention '
           "(rotary positions, grouped key/value heads"
           + (", a sliding window" if window else "")
           + (", soft-capped scores" if capped else "")
           + ") and a GeGLU feedforward network, each on the RMS-normalised "
           "input" + (" and normalised again" if post_attn or post_ffw
                      else "")
           + ", added to it.  ``padding_mask`` (B, T) is 1 at real "
           'tokens."""')
    lines = [f"class {name}(nn.Module):"]
    lines += textwrap.wrap(doc, 79, subsequent_indent="    ") + [""]
    init = ["hidden_dim", "num_query_heads", "num_key_value_heads",
            "head_dim", "intermediate_dim", "max_wavelength=10000.0",
            "scaling_factor=1.0", "eps=1e-06", "dropout=0.0"]
    if capped:
        init.append("logit_soft_cap=None")
    if window:
        init.append("sliding_window=1024")
    lines.append(f"    def __init__(self, {', '.join(init)}):")
    body = ["super().__init__()"]
    if window:
        body.append("self.sliding_window = sliding_window")
    body += ["self.pre_attention_norm = nn.RMSNorm(hidden_dim, eps=eps)",
             "self.attention = Gemma3Attention(hidden_dim, num_query_heads, "
             "num_key_value_heads, head_dim, max_wavelength, scaling_factor, "
             "dropout" + (", logit_soft_cap" if capped else "") + ")"]
    if post_attn:
        body.append("self.post_attention_norm = nn.RMSNorm(hidden_dim, "
                    "eps=eps)")
    body += ["self.pre_ffw_norm = nn.RMSNorm(hidden_dim, eps=eps)",
             "self.gating_ffw = nn.Linear(hidden_dim, intermediate_dim, "
             "bias=False)",
             "self.gating_ffw_2 = nn.Linear(hidden_dim, intermediate_dim, "
             "bias=False)",
             "self.ffw_linear = nn.Linear(intermediate_dim, hidden_dim, "
             "bias=False)"]
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


@rule("keras_hub>Gemma3DecoderBlock", masks="consume")
def gemma3_decoder_block(call):
    """nn.Module: a `Gemma3DecoderBlock` class (q/k norm, RoPE, GQA)"""
    cfg = call.config
    if call.node.kwargs.get("cache") is not None:
        call.refuse("cache", "decoding caches are not converted")
    if cfg.get("use_bidirectional_attention"):
        call.refuse("use_bidirectional_attention=True",
                    "EmbeddingGemma's bidirectional attention is not "
                    "converted yet")
    if call.node.kwargs.get("vision_mask") is not None:
        call.refuse("vision_mask", "the vision tower is not supported yet")
    x = call.inputs[0]
    if x.rank != 3 or x.shape[-1] is None:
        call.refuse("inputs", "a (B, T, features) sequence is required")
    x = call.want(0, identity(3))
    hidden = x.shape[-1]
    nq, nkv = dim(cfg, "num_query_heads"), dim(cfg, "num_key_value_heads")
    if nq % nkv:
        call.refuse(f"num_key_value_heads={nkv}", f"must divide "
                    f"num_query_heads={nq}")
    head_dim, inter = dim(cfg, "head_dim"), dim(cfg, "intermediate_dim")
    reduction = dim(cfg, "gate_dim_reduction") \
        if "gate_dim_reduction" in cfg else 2
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
    wavelength = number(cfg, "rope_wavelength", 10000.0)
    scaling = number(cfg, "rope_scaling_factor", 1.0)
    qk_norm = bool(cfg.get("use_query_key_norm", False))
    post_attn = bool(cfg.get("use_post_attention_norm"))
    post_ffw = bool(cfg.get("use_post_ffw_norm"))
    code = _block_code("Gemma3DecoderBlock", cap is not None, window,
                       post_attn, post_ffw)
    name = helper_name(call, "Gemma3DecoderBlock", code)
    code = code.replace("Gemma3DecoderBlock", name, 1)
    attention = _attention_code(cap is not None, qk_norm)
    attn_name = helper_name(call, "Gemma3Attention", attention)
    attention = attention.replace("Gemma3Attention", attn_name, 1)
    code = code.replace("Gemma3Attention(", f"{attn_name}(")
    rotary = ROTARY.replace("{adjust}", "")
    if call._conv.helpers.get("RotaryEmbedding", rotary) != rotary:
        raise ConversionError("two RotaryEmbedding variants in one model")
    helpers = {"RotaryEmbedding": rotary, attn_name: attention, name: code}
    w = HubWeights(call, norm=("scale",))
    state = {}
    for part, heads in (("query", nq), ("key", nkv), ("value", nkv)):
        state[f"attention.{part}.weight"] = heads_first_in(w.array(
            f"attention/{part}_dense", 0, (heads, hidden, head_dim)))
    state["attention.attention_output.weight"] = heads_out(w.array(
        "attention/output_dense", 0, (nq, head_dim, hidden)))
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
    args = [str(hidden), str(nq), str(nkv), str(head_dim), str(width)]
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


_BLOCK_KEYS = ["intermediate_dim", "head_dim", "num_query_heads",
               "num_key_value_heads", "query_head_dim_normalize",
               "use_query_key_norm", "use_post_ffw_norm",
               "use_post_attention_norm", "sliding_window_size", "dropout",
               "use_bidirectional_attention"]


@expander("keras_hub>Gemma3Backbone")
def gemma3_backbone(cfg: dict) -> dict:
    if cfg.get("vision_encoder") is not None:
        raise ConversionError(
            "vision_encoder: Gemma 3's vision tower is not supported yet "
            "(a text-only Gemma3Backbone, vision_encoder=None, converts)")
    if cfg.get("is_embedding_model"):
        raise ConversionError(
            "is_embedding_model=True: EmbeddingGemma's pooling head is not "
            "supported yet")
    if cfg.get("use_bidirectional_attention"):
        raise ConversionError(
            "use_bidirectional_attention=True: EmbeddingGemma's "
            "bidirectional attention is not supported yet")
    vocab, hidden = dim(cfg, "vocabulary_size"), dim(cfg, "hidden_dim")
    eps = number(cfg, "layer_norm_epsilon", 1e-6)
    local_scale = number(cfg, "local_rope_scaling_factor", 1.0)
    global_scale = number(cfg, "global_rope_scaling_factor", 1.0)
    for k in ("intermediate_dim", "head_dim", "num_query_heads",
              "num_key_value_heads"):
        dim(cfg, k)
    g = Functional(cfg, "gemma3_backbone")
    token_ids = g.input("token_ids", (None,), "int32")
    padding_mask = g.input("padding_mask", (None,), "int32")
    x = g.layer("ReversibleEmbedding", "token_embedding",
                {"input_dim": vocab, "output_dim": hidden,
                 "tie_weights": True,
                 "logit_soft_cap": cfg.get("final_logit_soft_cap")},
                token_ids)
    scale = {"class_name": "__tensor__",
             "config": {"value": float(hidden) ** 0.5, "dtype": "float32"}}
    x = g.op("Multiply", x, scale)
    window = bool(cfg.get("use_sliding_window_attention", False))
    base = {k: cfg[k] for k in _BLOCK_KEYS if k in cfg}
    # the blocks keep their own epsilon (1e-6): the backbone passes only
    # the final norm's
    base.update(logit_soft_cap=cfg.get("attention_logit_soft_cap"),
                gate_dim_reduction=1)
    for i in range(layers(cfg)):
        local = window and i % 6 < 5  # five local layers, then one global
        block = dict(base, hidden_dim=hidden,
                     use_sliding_window_attention=local,
                     rope_wavelength=10000.0 if local else 1000000.0,
                     rope_scaling_factor=local_scale if local
                     else global_scale)
        x = g.layer("Gemma3DecoderBlock", f"decoder_block_{i}", block, x,
                    module="keras_hub.src.models.gemma3.gemma3_decoder_block",
                    registered="Gemma3DecoderBlock",
                    padding_mask=padding_mask, vision_mask=None)
    x = g.layer("RMSNormalization", "final_normalization", {"epsilon": eps},
                x, module="keras_hub.src.models.gemma3.gemma3_layers",
                registered="RMSNormalization")
    return g.build(x, {"token_ids": token_ids, "padding_mask": padding_mask},
                   names=["sequence_output"])


@expander("keras_hub>Gemma3CausalLM")
def gemma3_causal_lm(cfg: dict) -> dict:
    # keras-hub calls the backbone as ``backbone(inputs=inputs)``; the
    # expansion calls it positionally (same graph: the nested-model inliner
    # reads positional inputs only)
    return causal_lm(cfg, "gemma3_causal_lm")
