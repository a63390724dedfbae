"""Llama, Llama 3, Mistral, Qwen (Qwen2) and Qwen 3: decoder-only language
models with RMSNorm, rotary positions, grouped key/value heads and a SwiGLU
feedforward network, as keras-hub 0.32 builds them
(``keras_hub/src/models/{llama,llama3,mistral,qwen,qwen3}/``).

Their decoder blocks differ only in options, so one rule writes one block
class per model (``LlamaTransformerDecoder``, ``MistralTransformerDecoder``
...), made for its options (Mistral's, Qwen's and Qwen 3's sliding window,
Qwen's query/key/value biases, Qwen 3's per-head query/key RMSNorm and
``head_dim``, Llama 3's frequency adjustment), around a ``RopeAttention``
module and a ``RotaryEmbedding`` that computes its frequencies from the
config (a buffer, not a weight).

keras-hub facts this follows (0.32.0, TensorFlow backend):

* RoPE rotates the two halves of each head (``x * cos + rotate_half(x) *
  sin``); Mistral and Qwen divide the frequencies by ``rope_scaling_factor``;
  Llama's rotary layer ignores ``rope_position_scaling_factor`` (it
  overrides the frequencies without it) and applies the Llama 3 adjustment
  when its factors are set;
* attention is the explicit softmax (keras-hub's fused path is JAX/torch
  only), so a query that may attend to nothing gets zeros; dropout is on
  the attention output, before its projection;
* the sliding window keeps keys ``i - window < j <= i``; Qwen 3's backbone
  always passes ``sliding_window_size`` (32768 by default) and its
  attention always applies it;
* Qwen 3 normalises each query and key head (``scale``, not ``1 + scale``)
  before the rotation with epsilon 1e-5, keras-hub's attention default:
  the decoder does not pass ``layer_norm_epsilon`` on to it.
"""
from __future__ import annotations

from ...layout import identity
from ...read.expand import expander, refused
from ..base import Emit, Out, Tensor
from ..common import lit
from ..registry import rule
from .config import dim, layers, number, rate
from .functional import Functional
from .gpt2 import causal_lm
from .transformer import _fold, _indent, activation_step, helper_name
from .weights import (HubWeights, dense_weight, heads_bias, heads_in,
                      heads_out, stored)

ROTARY = '''\
def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE) of (B, heads, T, head_dim) tensors:
    each pair (i, i + head_dim / 2) rotated by position * frequency i."""

    def __init__(self, head_dim, max_wavelength=10000.0, scaling_factor=1.0):
        super().__init__()
        exponent = torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim
        inv_freq = max_wavelength ** -exponent / scaling_factor{adjust}
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x):
        positions = torch.arange(x.shape[-2], dtype=torch.float32,
                                 device=x.device)
        angles = torch.outer(positions, self.inv_freq)  # (T, head_dim / 2)
        angles = torch.cat((angles, angles), dim=-1)
        return x * angles.cos() + rotate_half(x) * angles.sin()
'''

# Llama 3's frequency adjustment (LlamaRotaryEmbedding._get_inverse_freq)
LLAMA3 = '''
        # Llama 3: low frequencies slowed by {factor}, a smooth ramp between
        wavelen = 2 * torch.pi / inv_freq
        low_wavelen = {length} / {low}
        high_wavelen = {length} / {high}
        slowed = inv_freq / {factor}
        smooth = ({length} / wavelen - {low}) / ({high} - {low})
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv_freq = torch.where(wavelen > low_wavelen, slowed, inv_freq)
        inv_freq = torch.where(
            medium, (1 - smooth) * slowed + smooth * inv_freq, inv_freq)'''

ROPE_ATTENTION = '''\
class RopeAttention(nn.Module):
    """Grouped-query attention with rotary positions: ``num_query_heads``
    query heads share ``num_key_value_heads`` key and value heads in turn.
    ``mask`` broadcasts to (B, heads, T, T) and is True where a query step
    may attend to a key step; a query that may attend to nothing gets
    zeros, as in Keras."""

    def __init__(self, hidden_dim, num_query_heads, num_key_value_heads,
                 head_dim, bias=False, dropout=0.0, max_wavelength=10000.0,
                 scaling_factor=1.0):
        super().__init__()
        self.num_query_heads = num_query_heads
        self.num_key_value_heads = num_key_value_heads
        self.dropout = dropout
        kv_dim = num_key_value_heads * head_dim
        self.query = nn.Linear(hidden_dim, num_query_heads * head_dim,
                               bias=bias)
        self.key = nn.Linear(hidden_dim, kv_dim, bias=bias)
        self.value = nn.Linear(hidden_dim, kv_dim, bias=bias)
        self.attention_output = nn.Linear(num_query_heads * head_dim,
                                          hidden_dim, bias=False)
        self.rotary_embedding = RotaryEmbedding(head_dim, max_wavelength,
                                                scaling_factor)

    def forward(self, x, mask):
        q = self.query(x).unflatten(-1, (self.num_query_heads, -1))
        k = self.key(x).unflatten(-1, (self.num_key_value_heads, -1))
        v = self.value(x).unflatten(-1, (self.num_key_value_heads, -1))
        q = self.rotary_embedding(q.transpose(1, 2))  # (B, h, T, d)
        k = self.rotary_embedding(k.transpose(1, 2))
        v = v.transpose(1, 2)
        groups = self.num_query_heads // self.num_key_value_heads
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
        empty = ~mask.any(-1, keepdim=True)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | empty)
        y = F.dropout(y.masked_fill(empty, 0.0), self.dropout, self.training)
        return self.attention_output(y.transpose(1, 2).flatten(2))
'''


def qk_norm(eps: float) -> tuple[str, str]:
    """Per-head query/key RMSNorm (Gemma 3, Qwen 3): the ``__init__`` lines
    and the ``forward`` line, after q, k, v are split into heads."""
    init = (f"\n        self.query_norm = nn.RMSNorm(head_dim, eps={lit(eps)})"
            f"\n        self.key_norm = nn.RMSNorm(head_dim, eps={lit(eps)})")
    return init, ("\n        q, k = self.query_norm(q), self.key_norm(k)  "
                  "# per head")


def rope_attention_code(qk_eps: float | None = None) -> str:
    """The ``RopeAttention`` class; with ``qk_eps``, queries and keys are
    RMS-normalised per head (Qwen 3) with that epsilon."""
    if qk_eps is None:
        return ROPE_ATTENTION
    init, fw = qk_norm(qk_eps)
    value = "self.value = nn.Linear(hidden_dim, kv_dim, bias=bias)"
    split = "v = self.value(x).unflatten(-1, (self.num_key_value_heads, -1))"
    return ROPE_ATTENTION.replace(
        "rotary positions: ``num_query_heads``\n    query heads share",
        "rotary positions on per-head\n    RMS-normalised queries and "
        "keys: ``num_query_heads`` query heads\n    share").replace(
        value, value + init).replace(split, split + fw)


# family -> (Keras class names of its decoder and norm, module of each)
FAMILIES = {
    "llama": ("LlamaTransformerDecoder", "LlamaLayerNorm",
              "keras_hub.src.models.llama.llama_decoder",
              "keras_hub.src.models.llama.llama_layernorm"),
    "mistral": ("MistralTransformerDecoder", "MistralLayerNormalization",
                "keras_hub.src.models.mistral.mistral_transformer_decoder",
                "keras_hub.src.models.mistral.mistral_layer_norm"),
    "qwen": ("QwenTransformerDecoder", "QwenLayerNorm",
             "keras_hub.src.models.qwen.qwen_decoder",
             "keras_hub.src.models.qwen.qwen_layernorm"),
    "qwen3": ("Qwen3TransformerDecoder", "Qwen3LayerNorm",
              "keras_hub.src.models.qwen3.qwen3_decoder",
              "keras_hub.src.models.qwen3.qwen3_layernorm"),
}
QK_NORM_EPS = {"qwen3": 1e-5}  # families with per-head q/k norms
HEAD_DIM = ("mistral", "qwen3")  # families whose config gives head_dim
_DECODERS = {v[0]: k for k, v in FAMILIES.items()}


def _keys(*names):
    return [k for n in names for k in (n, f"keras_hub>{n}")]


# -- the norms ----------------------------------------------------------------
@rule(*_keys("LlamaLayerNorm", "MistralLayerNormalization", "QwenLayerNorm",
             "Qwen3LayerNorm"))
def rms_layer_norm(call):
    """nn.RMSNorm (keras-hub's Llama / Mistral / Qwen / Qwen 3 layer norms)"""
    x = call.want(0, identity(call.inputs[0].rank))
    hidden = x.shape[-1]
    eps = float(call.config.get("epsilon", 1e-6))
    w = HubWeights(call, own=["scale"])
    return Emit([Out([f"self.{call.attr}({x.expr})"], x.shape, x.layout)],
                module=f"nn.RMSNorm({hidden}, eps={lit(eps)})",
                state={"weight": stored(w.array("", 0, (hidden,)))})


# -- the decoder block -------------------------------------------------------
def _rope(cfg: dict, family: str):
    """(max_wavelength, scaling_factor, llama3 adjustment or None)."""
    wavelength = number(cfg, "rope_max_wavelength", 10000)
    if family == "llama":
        factors = [cfg.get(k) for k in (
            "rope_frequency_adjustment_factor", "rope_low_freq_factor",
            "rope_high_freq_factor", "rope_pretraining_sequence_length")]
        if all(f is None for f in factors):
            return wavelength, 1.0, None
        if any(f is None for f in factors):
            raise ValueError("the Llama 3 RoPE factors are set only in part")
        return wavelength, 1.0, tuple(float(f) for f in factors)
    return wavelength, number(cfg, "rope_scaling_factor", 1.0), None


def _window(cfg: dict, family: str):
    if family == "mistral":
        w = cfg.get("sliding_window")
        return None if w is None else dim(cfg, "sliding_window")
    if family == "qwen" and cfg.get("use_sliding_window_attention"):
        return dim(cfg, "sliding_window_size")
    if family == "qwen3" and cfg.get("sliding_window_size"):
        return dim(cfg, "sliding_window_size")
    return None


def _block_code(name: str, family: str, act: str, window,
                attention: str = "RopeAttention") -> str:
    title = {"llama": "Llama", "mistral": "Mistral", "qwen": "Qwen",
             "qwen3": "Qwen 3"}[family]
    doc = (f'    """keras-hub {title} decoder block: causal self-attention '
           "(rotary positions, grouped key/value heads"
           + (", per-head query/key norms" if family in QK_NORM_EPS else "")
           + (", a sliding window" if window else "") + ") and a gated "
           "feedforward network, each on the RMS-normalised input, added "
           "to it.  ``padding_mask`` (B, T) is 1 at real tokens.\"\"\"")
    import textwrap
    lines = [f"class {name}(nn.Module):"]
    lines += textwrap.wrap(doc, 79, subsequent_indent="    ")
    lines.append("")
    init = ["hidden_dim", "num_query_heads", "num_key_value_heads",
            "intermediate_dim", "head_dim=None", "eps=1e-06", "dropout=0.0",
            "bias=False", "max_wavelength=10000.0", "scaling_factor=1.0"]
    if window:
        init.append("sliding_window=None")
    lines.append(f"    def __init__(self, {', '.join(init)}):")
    body = ["super().__init__()",
            "head_dim = head_dim or hidden_dim // num_query_heads"]
    if window:
        body.append("self.sliding_window = sliding_window")
    body += [
        "self.self_attention_layernorm = nn.RMSNorm(hidden_dim, eps=eps)",
        f"self.self_attention = {attention}(hidden_dim, num_query_heads, "
        "num_key_value_heads, head_dim, bias, dropout, max_wavelength, "
        "scaling_factor)",
        "self.feedforward_layernorm = nn.RMSNorm(hidden_dim, eps=eps)",
        "self.feedforward_gate_dense = nn.Linear(hidden_dim, "
        "intermediate_dim, bias=False)",
        "self.feedforward_intermediate_dense = nn.Linear(hidden_dim, "
        "intermediate_dim, bias=False)",
        "self.feedforward_output_dense = nn.Linear(intermediate_dim, "
        "hidden_dim, bias=False)",
        "self.dropout = nn.Dropout(dropout)"]
    lines += _indent(body, 8) + [""]
    lines.append("    def forward(self, x, padding_mask=None):")
    fw = ["T = x.shape[1]",
          "# (T, T): step t attends to steps 0..t",
          "mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()"]
    if window:
        fw += ["mask = mask.triu(1 - self.sliding_window)  # the last "
               "window steps"]
    fw += ["if padding_mask is not None:  # (B, 1, T, T)",
           "    mask = mask & padding_mask[:, None, None, :].bool()",
           "h = self.self_attention(self.self_attention_layernorm(x), mask)",
           "x = x + self.dropout(h)",
           "h = self.feedforward_layernorm(x)",
           "gate = " + act.replace("{}", "self.feedforward_gate_dense(h)"),
           "h = self.feedforward_intermediate_dense(h) * gate",
           "return x + self.feedforward_output_dense(h)"]
    lines += _indent(fw, 8)
    return "\n".join(_fold(lines)) + "\n"


def _rotary_code(llama3) -> str:
    if llama3 is None:
        return ROTARY.replace("{adjust}", "")
    factor, low, high, length = (lit(v) for v in llama3)
    return ROTARY.replace("{adjust}", LLAMA3.format(
        factor=factor, low=low, high=high, length=length))


def _stored_head_dim(w: HubWeights, family: str) -> int | None:
    """``head_dim`` read off the stored query kernel (hidden, heads,
    head_dim): Qwen 3's decoder config does not keep it (keras-hub 0.32's
    ``get_config`` drops it; the backbone's has it)."""
    if family != "qwen3":
        return None
    for key in ("_self_attention_layer/_query_dense/vars/0",
                "_self_attention_layer/query_dense/vars/0"):
        kernel = w.arrays.get(key)
        if kernel is not None and len(kernel.shape) == 3:
            return int(kernel.shape[-1]) or None
    return None


def gqa_input(call, unsupported=()):
    """What every grouped-query decoder block checks first: none of the
    ``unsupported`` call arguments (decoding caches), a (B, T, features)
    input, key/value heads that divide the query heads.  Returns the input
    (Keras layout), its width and the two head counts."""
    for key in unsupported:
        if call.node.kwargs.get(key) is not None:
            call.refuse(key, "not supported (the port runs the whole "
                        "sequence, with a padding mask)")
    x = call.inputs[0]
    if x.rank != 3 or x.shape[-1] is None:
        call.refuse("inputs", "a (B, T, features) sequence is required")
    x = call.want(0, identity(3))
    nq = dim(call.config, "num_query_heads")
    nkv = dim(call.config, "num_key_value_heads")
    if nq % nkv:
        call.refuse(f"num_key_value_heads={nkv}", f"must divide "
                    f"num_query_heads={nq}")
    return x, x.shape[-1], nq, nkv


@rule(*_keys(*_DECODERS), masks="consume")
def rope_decoder(call):
    """nn.Module: a decoder block class (RMSNorm, RoPE, GQA, SwiGLU)"""
    cfg = call.config
    family = _DECODERS[call.layer.class_name]
    x, hidden, nq, nkv = gqa_input(call, (
        "self_attention_cache", "self_attention_cache_update_index",
        "decoder_attention_mask"))
    w = HubWeights(call, norm=("scale",))
    head_dim = dim(cfg, "head_dim") if family in HEAD_DIM and cfg.get(
        "head_dim") else _stored_head_dim(w, family) or hidden // nq
    inter = dim(cfg, "intermediate_dim")
    eps = number(cfg, "layer_norm_epsilon", 1e-6)
    dropout = rate(cfg, "dropout", 0.0)
    wavelength, scaling, llama3 = _rope(cfg, family)
    window = _window(cfg, family)
    act = activation_step(call, cfg.get("activation", "silu"))
    qk_eps = QK_NORM_EPS.get(family)
    attention = rope_attention_code(qk_eps)
    attn_name = helper_name(call, "RopeAttention", attention)
    attention = attention.replace("RopeAttention", attn_name, 1)
    base = FAMILIES[family][0]
    code = _block_code(base, family, act, window, attn_name)
    name = helper_name(call, base, code)
    code = code.replace(base, name, 1)
    rotary = _rotary_code(llama3)
    helpers = {attn_name: attention, "RotaryEmbedding": rotary, name: code}
    if call._conv.helpers.get("RotaryEmbedding", rotary) != rotary:
        call.refuse("rope", "two different Llama 3 RoPE adjustments in one "
                    "model")
    bias = family == "qwen"
    att = "_self_attention_layer"
    state = {}
    for part, shape in (("query", (hidden, nq, head_dim)),
                        ("key", (hidden, nkv, head_dim)),
                        ("value", (hidden, nkv, head_dim))):
        paths = (f"{att}/_{part}_dense", f"{att}/{part}_dense")
        state[f"self_attention.{part}.weight"] = heads_in(
            w.array(paths, 0, shape))
        if bias:
            state[f"self_attention.{part}.bias"] = heads_bias(
                w.array(paths, 1, shape[1:]))
    if qk_eps is not None:
        for part in ("query", "key"):
            state[f"self_attention.{part}_norm.weight"] = stored(w.array(
                f"{att}/_{part}_dense_layer_norm", 0, (head_dim,)))
    out_paths = (f"{att}/_output_dense", f"{att}/output_dense")
    state["self_attention.attention_output.weight"] = heads_out(
        w.array(out_paths, 0, (nq, head_dim, hidden)))
    for norm in ("self_attention_layernorm", "feedforward_layernorm"):
        state[f"{norm}.weight"] = stored(w.array(f"_{norm}", 0, (hidden,)))
    for dense, shape in (("feedforward_gate_dense", (hidden, inter)),
                         ("feedforward_intermediate_dense", (hidden, inter)),
                         ("feedforward_output_dense", (inter, hidden))):
        state[f"{dense}.weight"] = dense_weight(w.array(f"_{dense}", 0,
                                                        shape))
    args = [str(hidden), str(nq), str(nkv), str(inter)]
    if head_dim != hidden // nq:
        args.append(f"head_dim={head_dim}")
    if eps != 1e-6:
        args.append(f"eps={lit(eps)}")
    if dropout:
        args.append(f"dropout={lit(dropout)}")
    if bias:
        args.append("bias=True")
    if wavelength != 10000:
        args.append(f"max_wavelength={lit(wavelength)}")
    if scaling != 1.0:
        args.append(f"scaling_factor={lit(scaling)}")
    if window:
        args.append(f"sliding_window={window}")
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


# -- backbones ---------------------------------------------------------------
def _decoder_backbone(cfg: dict, family: str, default_name: str,
                      tie_default: bool) -> dict:
    decoder, norm, decoder_module, norm_module = FAMILIES[family]
    vocab, hidden = dim(cfg, "vocabulary_size"), dim(cfg, "hidden_dim")
    eps = number(cfg, "layer_norm_epsilon", 1e-6)
    # Mistral never ties; Llama's get_config drops tie_word_embeddings
    # (keras-hub 0.32): None lets the stored weights say
    tied = False if family == "mistral" else cfg.get(
        "tie_word_embeddings", None if family == "llama" else tie_default)
    if family in HEAD_DIM and cfg.get("head_dim") is not None:
        dim(cfg, "head_dim")
    _window(cfg, family)  # checked here, where the file is named
    rate(cfg, "dropout", 0.0)
    g = Functional(cfg, default_name)
    token_ids = g.input("token_ids", (None,), "int32")
    padding_mask = g.input("padding_mask", (None,), "int32")
    x = g.layer("ReversibleEmbedding", "token_embedding",
                {"input_dim": vocab, "output_dim": hidden,
                 "tie_weights": tied}, token_ids)
    keys = ["intermediate_dim", "num_query_heads", "num_key_value_heads",
            "rope_max_wavelength", "rope_scaling_factor",
            "rope_frequency_adjustment_factor", "rope_low_freq_factor",
            "rope_high_freq_factor", "rope_pretraining_sequence_length",
            "layer_norm_epsilon", "dropout", "sliding_window", "head_dim",
            "use_sliding_window_attention", "sliding_window_size"]
    layer_cfg = {k: cfg[k] for k in keys if k in cfg}
    layer_cfg.update(activation="silu", layer_norm_epsilon=eps)
    for k in ("intermediate_dim", "num_query_heads", "num_key_value_heads"):
        dim(cfg, k)
    for i in range(layers(cfg)):
        x = g.layer(decoder, f"transformer_layer_{i}", dict(layer_cfg), x,
                    module=decoder_module, registered=decoder,
                    decoder_padding_mask=padding_mask)
    x = g.layer(norm, "sequence_output_layernorm", {"epsilon": eps}, x,
                module=norm_module, registered=norm)
    return g.build(x, {"token_ids": token_ids, "padding_mask": padding_mask},
                   names=["sequence_output"])


@expander("keras_hub>LlamaBackbone", "keras_nlp>LlamaBackbone")
def llama_backbone(cfg):
    return _decoder_backbone(cfg, "llama", "llama_backbone", False)


@expander("keras_hub>Llama3Backbone", "keras_nlp>Llama3Backbone")
def llama3_backbone(cfg):
    return _decoder_backbone(cfg, "llama", "llama3_backbone", False)


@expander("keras_hub>MistralBackbone", "keras_nlp>MistralBackbone")
def mistral_backbone(cfg):
    return _decoder_backbone(cfg, "mistral", "mistral_backbone", False)


@expander("keras_hub>QwenBackbone", "keras_hub>Qwen2Backbone")
def qwen_backbone(cfg):
    return _decoder_backbone(cfg, "qwen", "qwen_backbone", True)


@expander("keras_hub>Qwen3Backbone")
def qwen3_backbone(cfg):
    return _decoder_backbone(cfg, "qwen3", "qwen3_backbone", True)


@expander("keras_hub>LlamaCausalLM", "keras_hub>Llama3CausalLM",
          "keras_hub>MistralCausalLM", "keras_hub>QwenCausalLM",
          "keras_hub>Qwen2CausalLM", "keras_hub>Qwen3CausalLM",
          "keras_nlp>LlamaCausalLM", "keras_nlp>MistralCausalLM")
def decoder_causal_lm(cfg):
    return causal_lm(cfg, "causal_lm")


refused("keras_hub>Qwen3MoeBackbone", "keras_hub>Qwen3MoeCausalLM",
        "keras_hub>QwenMoeBackbone", "keras_hub>QwenMoeCausalLM",
        reason="its mixture-of-experts feedforward (a router choosing "
        "experts per token) is not converted yet; the dense Qwen3Backbone "
        "and Qwen3CausalLM convert")
