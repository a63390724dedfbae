"""T5: T5Backbone and T5Seq2SeqLM, as keras-hub 0.32 builds them
(``keras_hub/src/models/t5/``): one token embedding for encoder and
decoder, pre-norm layers (RMS norms without a mean, T5LayerNorm), attention
without 1/sqrt(d) scaling or biases, positions as a learned bias of the
attention scores.

keras-hub facts this follows (0.32.0, read in its source and checked by the
fixtures):

* each stack's first layer owns a (32 buckets, heads) table of relative
  position biases; it adds the bias and the mask, ``(1 - mask) * -1e9``,
  into one ``position_bias`` (B, heads, T, T) that every later layer of the
  stack takes as it is (a query with no key left gets uniform weights);
* buckets: 32, max distance 128, half per direction in the (bidirectional)
  encoder, the decoder's causal;
* cross-attention has no position bias: each decoder layer adds
  ``(1 - encoder_mask) * -1e9`` to its scores;
* the tied LM head scales the decoder output by ``hidden_dim ** -0.5``
  before the reversed token embedding; an untied head does not.

The port computes each stack's ``position_bias`` once, in ``forward``, with
a ``T5PositionBias`` module that holds the first layer's table
(``relative_position_bucket`` is a plain function), and every layer of the
stack is the same block class (``T5Block``, ``T5DecoderBlock``).
"""
from __future__ import annotations

import textwrap

from ...layout import identity
from ...read.expand import expander
from ...read.inline import SHARED
from ..base import TMP, Emit, Out
from ..common import lit
from ..registry import rule
from .config import backbone, dim, layers, number, rate
from .functional import SLICE, Functional, Ref
from .transformer import _fold, _indent, activation_step, helper_name
from .weights import HubWeights, dense_weight, stored

_INPUTS = ("encoder_token_ids", "encoder_padding_mask", "decoder_token_ids",
           "decoder_padding_mask")
BUCKETS, MAX_DISTANCE = 32, 128  # fixed in T5MultiHeadAttention
_LAYER = "keras_hub.src.models.t5.t5_transformer_layer"
_NORM = "keras_hub.src.models.t5.t5_layer_norm"

BUCKET = '''\
def relative_position_bucket(relative_position, bidirectional,
                             num_buckets=32, max_distance=128):
    """T5's bucket of each relative position (key step - query step):
    one bucket per distance below ``max_exact``, then logarithmically wider
    ones up to ``max_distance``; bidirectional buckets give half of them to
    keys after the query."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = -relative_position.clamp(max=0)
    max_exact = num_buckets // 2
    scale = torch.tensor(max_distance / max_exact).log()
    large = max_exact + (torch.log(distance.float() / max_exact) / scale
                         * (num_buckets - max_exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < max_exact, distance, large)
'''

POSITION_BIAS = '''\
class T5PositionBias(nn.Module):
    """A T5 stack's position bias (B, heads, T, T), added to every
    layer's attention scores: a learned bias per relative position bucket,
    -1e9 where ``mask`` (B, 1, T) is 0 and, when ``causal`` (the decoder),
    at later steps."""

    def __init__(self, num_heads, causal=False):
        super().__init__()
        self.causal = causal
        self.relative_attention_bias = nn.Embedding(32, num_heads)

    def forward(self, mask):
        T = mask.shape[-1]
        steps = torch.arange(T, device=mask.device)
        relative = steps[None, :] - steps[:, None]  # (T, T): key - query
        buckets = relative_position_bucket(relative, not self.causal)
        bias = self.relative_attention_bias(buckets)  # (T, T, heads)
        bias = bias.permute(2, 0, 1)[None]  # (1, heads, T, T)
        if self.causal:  # step t sees steps 0..t
            causal = torch.ones(T, T, dtype=torch.bool,
                                device=mask.device).tril()
            mask = causal & mask.bool()
        return bias + (1.0 - mask[:, None].float()) * -1e9
'''

ATTENTION = '''\
class T5Attention(nn.Module):
    """T5 multi-head attention: no 1/sqrt(d) scaling, no biases;
    ``position_bias`` (relative positions and the mask, -1e9 where a key
    is hidden) is added to the scores."""

    def __init__(self, hidden_dim, num_heads, key_value_dim, dropout=0.0):
        super().__init__()
        inner = num_heads * key_value_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.query_projector = nn.Linear(hidden_dim, inner, bias=False)
        self.key_projector = nn.Linear(hidden_dim, inner, bias=False)
        self.value_projector = nn.Linear(hidden_dim, inner, bias=False)
        self.output_projector = nn.Linear(inner, hidden_dim, bias=False)

    def forward(self, x, position_bias, context=None):
        context = x if context is None else context
        heads = (self.num_heads, -1)
        q = self.query_projector(x).unflatten(-1, heads).transpose(1, 2)
        k = self.key_projector(context).unflatten(-1, heads).transpose(1, 2)
        v = self.value_projector(context).unflatten(-1, heads).transpose(1, 2)
        # The softmax written out, as Keras computes it: a row that is all
        # padding (every score -1e9) gets uniform weights, and SDPA's fused
        # backward, which recomputes them from a log-sum-exp rounded at
        # -1e9, would give that row's gradient T times over.
        scores = q @ k.transpose(-2, -1) + position_bias  # (B, h, T, S)
        weights = F.dropout(scores.softmax(-1), self.dropout, self.training)
        y = weights @ v  # (B, h, T, d)
        return self.output_projector(y.transpose(1, 2).flatten(2))
'''


def _keys(*names):
    return [k for n in names for k in (n, f"keras_hub>{n}")]


# -- the norm ----------------------------------------------------------------
@rule(*_keys("T5LayerNorm"))
def t5_layer_norm(call):
    """nn.RMSNorm (keras-hub's T5LayerNorm: w * x * rsqrt(mean(x^2) + eps))"""
    x = call.want(0, identity(call.inputs[0].rank))
    hidden = x.shape[-1]
    eps = number(call.config, "epsilon", 1e-6)
    w = HubWeights(call, own=["weight"])
    return Emit([Out([f"self.{call.attr}({x.expr})"], x.shape, x.layout)],
                module=f"nn.RMSNorm({hidden}, eps={lit(eps)})",
                state={"weight": stored(w.array("", 0, (hidden,)))})


# -- the block ----------------------------------------------------------------
def _block_code(name: str, act: str, gated: bool, decoder: bool) -> str:
    kind = "decoder" if decoder else "encoder"
    doc = (f'    """keras-hub T5 {kind} layer: self-attention'
           + (", cross-attention to the encoder output" if decoder else "")
           + f" and a {'gated ' if gated else ''}feedforward network, each "
           "on the RMS-normalised input, added to it.  ``position_bias`` "
           "(B, heads, T, T) is the stack's (``T5PositionBias``)"
           + ("; ``encoder_mask`` (B, 1, S) is 1 at real encoder tokens"
              if decoder else "") + '."""')
    lines = [f"class {name}(nn.Module):"]
    lines += textwrap.wrap(doc, 79, subsequent_indent="    ") + [""]
    lines.append("    def __init__(self, hidden_dim, num_heads, "
                 "key_value_dim, intermediate_dim, eps=1e-06, dropout=0.0):")
    body = [
        "super().__init__()",
        "self.self_attention = T5Attention(hidden_dim, num_heads, "
        "key_value_dim, dropout)",
        "self.self_attention_layer_norm = nn.RMSNorm(hidden_dim, eps=eps)"]
    if decoder:
        body += ["self.cross_attention = T5Attention(hidden_dim, num_heads, "
                 "key_value_dim, dropout)",
                 "self.cross_attention_layer_norm = nn.RMSNorm(hidden_dim, "
                 "eps=eps)"]
    body += ["self.layer_norm = nn.RMSNorm(hidden_dim, eps=eps)",
             "self.input_projector = nn.Linear(hidden_dim, intermediate_dim, "
             "bias=False)"]
    if gated:
        body.append("self.gate_projector = nn.Linear(hidden_dim, "
                    "intermediate_dim, bias=False)")
    body += ["self.output_projector = nn.Linear(intermediate_dim, "
             "hidden_dim, bias=False)",
             "self.dropout = nn.Dropout(dropout)"]
    lines += _indent(body, 8) + [""]
    args = "x, position_bias" + (", encoder_hidden, encoder_mask"
                                 if decoder else "")
    lines.append(f"    def forward(self, {args}):")
    fw = ["h = self.self_attention(self.self_attention_layer_norm(x), "
          "position_bias)",
          "x = x + self.dropout(h)"]
    if decoder:
        fw += ["# no position bias across: -1e9 at encoder padding",
               "cross_bias = (1.0 - encoder_mask[:, None].float()) * -1e9",
               "h = self.cross_attention(self.cross_attention_layer_norm(x), "
               "cross_bias, encoder_hidden)",
               "x = x + self.dropout(h)"]
    fw.append("h = self.layer_norm(x)")
    up = act.replace("{}", "self.input_projector(h)")
    fw.append(f"h = {up} * self.gate_projector(h)" if gated
              else f"h = {up}")
    fw += ["h = self.output_projector(self.dropout(h))",
           "return x + self.dropout(h)"]
    lines += _indent(fw, 8)
    return "\n".join(_fold(lines)) + "\n"


def _norm_names(call, decoder: bool) -> list[str]:
    """The names Keras gives this layer's T5LayerNorms on a fresh load
    (``t5_layer_norm_N``: one counter over the layers, in order)."""
    before = 0
    for layer in call._conv.graph.layers():
        if layer.name == call.layer.name:
            break
        if layer.class_name == "T5TransformerLayer":
            before += 3 if layer.config.get("is_decoder") else 2
    count = 3 if decoder else 2
    return [f"t5_layer_norm_{n}" if n else "t5_layer_norm"
            for n in range(before, before + count)]


def _path(w: HubWeights, sub: str, shape, keras_path: str):
    a = w.array(sub, 0, shape)
    a.path = keras_path
    return a


@rule(*_keys("T5TransformerLayer"))
def t5_transformer_layer(call):
    """nn.Module: a `T5Block` / `T5DecoderBlock` class (RMSNorm, unscaled attention, gated or plain feedforward); a stack's first layer adds a `T5PositionBias` module"""
    cfg, node = call.config, call.node
    for key in ("self_attention_cache", "cross_attention_cache",
                "self_attention_cache_update_index",
                "cross_attention_cache_update_index"):
        if node.kwargs.get(key) is not None:
            call.refuse(key, "decoding caches are not converted (the port "
                        "runs the whole sequence)")
    decoder = cfg.get("is_decoder")
    if not isinstance(decoder, bool):
        call.refuse(f"is_decoder={decoder!r}", "must be true or false")
    if bool(node.kwargs.get("use_causal_mask")) != decoder:
        call.refuse("use_causal_mask", "keras-hub's T5 masks causally "
                    "exactly in the decoder")
    x = call.inputs[0]
    if x.rank != 3 or x.shape[-1] is None:
        call.refuse("inputs", "a (B, T, features) sequence is required")
    x = call.want(0, identity(3))
    hidden = x.shape[-1]
    if dim(cfg, "hidden_dim") != hidden:
        call.refuse("hidden_dim", f"{cfg['hidden_dim']} but the input has "
                    f"{hidden} features")
    heads, kv = dim(cfg, "num_heads"), dim(cfg, "key_value_dim")
    inter = dim(cfg, "intermediate_dim")
    eps = number(cfg, "layer_norm_epsilon", 1e-6)
    dropout = rate(cfg, "dropout", 0.0)
    gated = bool(cfg.get("use_gated_activation", False))
    owns_table = bool(cfg.get("use_relative_attention_bias", False))
    act = activation_step(call, cfg.get("activation", "relu"))
    mask = call.kwarg("attention_mask")
    bias = call.kwarg("position_bias")
    if mask is None:
        call.refuse("attention_mask", "a padding mask is required (the "
                    "Backbone always passes one)")
    if (bias is None) != owns_table:
        call.refuse("position_bias", "only the first layer of a stack (the "
                    "one with use_relative_attention_bias) computes it")
    base = "T5DecoderBlock" if decoder else "T5Block"
    code = _block_code(base, act, gated, decoder)
    name = helper_name(call, base, code)
    code = code.replace(base, name, 1)
    helpers = {"T5Attention": ATTENTION, name: code}
    # weights, by the paths Keras gives them
    w = HubWeights(call, own=["embeddings"])
    keras = call.layer.keras_name
    inner = heads * kv
    state = {}
    attentions = ["self_attention"] + (["cross_attention"] if decoder else [])
    for att in attentions:
        for part, shape in (("query_projector", (hidden, inner)),
                            ("key_projector", (hidden, inner)),
                            ("value_projector", (hidden, inner)),
                            ("output_projector", (inner, hidden))):
            state[f"{att}.{part}.weight"] = dense_weight(_path(
                w, f"{att}/{part}", shape, f"{keras}/{att}/{part}/kernel"))
    norms = ["self_attention_layer_norm"] + (
        ["cross_attention_layer_norm"] if decoder else []) + ["layer_norm"]
    for norm, keras_norm in zip(norms, _norm_names(call, decoder)):
        state[f"{norm}.weight"] = stored(_path(
            w, norm, (hidden,), f"{keras}/{keras_norm}/weight"))
    dense = [("input_projector", (hidden, inter))]
    if gated:
        dense.append(("gate_projector", (hidden, inter)))
    dense.append(("output_projector", (inter, hidden)))
    for part, shape in dense:
        state[f"{part}.weight"] = dense_weight(_path(
            w, part, shape, f"{keras}/{part}/kernel"))
    args = [str(hidden), str(heads), str(kv), str(inter)]
    if eps != 1e-6:
        args.append(f"eps={lit(eps)}")
    if dropout:
        args.append(f"dropout={lit(dropout)}")
    step, pre, modules = f"self.{call.attr}({x.expr}, ", [], {}
    if owns_table:  # the stack's position bias: its own module, once
        table = _path(w, "self_attention", (BUCKETS, heads),
                      "self_attention/embeddings")  # a bare path (Keras's)
        extra = call.extra_attr(("decoder" if decoder else "encoder")
                                + "_position_bias")
        causal = ", causal=True" if decoder else ""
        modules[extra] = (f"T5PositionBias({heads}{causal})", {
            "relative_attention_bias.weight": stored(table)})
        helpers = {"relative_position_bucket": BUCKET,
                   "T5PositionBias": POSITION_BIAS, **helpers}
        pre = [(["position_bias"], f"self.{extra}({mask.expr})")]
        step += TMP(0)
    else:
        step += bias.expr
    if decoder:
        enc = call.kwarg("encoder_hidden_states")
        enc_mask = call.kwarg("encoder_attention_mask")
        if enc is None or enc_mask is None:
            call.refuse("encoder_hidden_states", "a decoder layer needs the "
                        "encoder output and its mask")
        step += f", {enc.expr}, {enc_mask.expr}"
    step += ")"
    pb_shape = (x.shape[0], heads, x.shape[1], x.shape[1])
    second = TMP(0) if owns_table else bias.expr
    return Emit([Out([step], x.shape, identity(3)),
                 Out([second], pb_shape, identity(4), shared=True)],
                module=f"{name}({', '.join(args)})", state=state,
                helpers=helpers, pre=pre, modules=modules)


# -- backbones ---------------------------------------------------------------
@expander("keras_hub>T5Backbone", "keras_nlp>T5Backbone")
def t5_backbone(cfg: dict) -> dict:
    vocab, hidden = dim(cfg, "vocabulary_size"), dim(cfg, "hidden_dim")
    heads, inter = dim(cfg, "num_heads"), dim(cfg, "intermediate_dim")
    kv = cfg.get("key_value_dim")
    kv = hidden // heads if kv is None else dim(cfg, "key_value_dim")
    if kv < 1:
        raise ValueError(f"hidden_dim {hidden} // num_heads {heads} is 0; "
                         "set key_value_dim")
    dropout = rate(cfg, "dropout", 0.1)
    eps = number(cfg, "layer_norm_epsilon", 1e-6)
    activation = cfg.get("activation", "relu")
    gated = cfg.get("use_gated_activation", True)
    tied = cfg.get("tie_embedding_weights", True)
    for key, value in (("use_gated_activation", gated),
                       ("tie_embedding_weights", tied)):
        if not isinstance(value, bool):
            raise ValueError(f"{key} = {value!r} is not true or false")
    n = layers(cfg)
    g = Functional(cfg, "t5_backbone")
    refs = {k: g.input(k, (None,), "int32") for k in _INPUTS}
    block = {"hidden_dim": hidden, "intermediate_dim": inter,
             "key_value_dim": kv, "dropout": dropout,
             "activation": activation, "layer_norm_epsilon": eps,
             "num_heads": heads, "use_gated_activation": gated}
    x = g.layer("ReversibleEmbedding", "token_embedding",
                {"input_dim": vocab, "output_dim": hidden,
                 "tie_weights": tied}, refs["encoder_token_ids"])
    x = g.layer("Dropout", "encoder_embedding_dropout", {"rate": dropout}, x)
    encoder_mask = g.op("GetItem", refs["encoder_padding_mask"],
                        [SLICE, None, SLICE])
    bias = None
    for i in range(n):
        out = g.layer("T5TransformerLayer", f"transformer_encoder_layer_{i}",
                      dict(block, is_decoder=False,
                           use_relative_attention_bias=i == 0), x,
                      module=_LAYER, registered="T5TransformerLayer",
                      attention_mask=encoder_mask, position_bias=bias,
                      use_causal_mask=False)
        x, bias = g.outputs(out, 2)
    x = g.layer("T5LayerNorm", "encoder_output_layer_norm", {"epsilon": eps},
                x, module=_NORM, registered="T5LayerNorm")
    encoder_output = g.layer("Dropout", "encoder_output_dropout",
                             {"rate": dropout}, x)
    x = g.call("token_embedding", refs["decoder_token_ids"])
    x = g.layer("Dropout", "decoder_embedding_dropout", {"rate": dropout}, x)
    decoder_mask = g.op("GetItem", refs["decoder_padding_mask"],
                        [SLICE, None, SLICE])
    bias = None
    for i in range(n):
        out = g.layer("T5TransformerLayer", f"transformer_decoder_layer_{i}",
                      dict(block, is_decoder=True,
                           use_relative_attention_bias=i == 0), x,
                      module=_LAYER, registered="T5TransformerLayer",
                      attention_mask=decoder_mask, position_bias=bias,
                      encoder_hidden_states=encoder_output,
                      encoder_attention_mask=encoder_mask,
                      use_causal_mask=True)
        x, bias = g.outputs(out, 2)
    x = g.layer("T5LayerNorm", "decoder_output_layer_norm", {"epsilon": eps},
                x, module=_NORM, registered="T5LayerNorm")
    x = g.layer("Dropout", "decoder_output_dropout", {"rate": dropout}, x)
    return g.build({"encoder_sequence_output": encoder_output,
                    "decoder_sequence_output": x}, refs)


@expander("keras_hub>T5Seq2SeqLM", "keras_nlp>T5Seq2SeqLM")
def t5_seq2seq_lm(cfg: dict) -> dict:
    entry = backbone(cfg)
    name = entry["config"]["name"]
    tied = entry["config"].get("tie_embedding_weights", True)
    hidden = dim(entry["config"], "hidden_dim")
    g = Functional(cfg, cfg.get("name") or "t5_seq2_seq_lm")
    refs = {k: g.input(k, (None,), "int32") for k in sorted(_INPUTS)}
    out = g.model(entry, refs)
    names = sorted(["encoder_sequence_output", "decoder_sequence_output"])
    x = Ref(out.layer, out.node, names.index("decoder_sequence_output"))
    if tied is True:  # T5 rescales the decoder output for the tied head
        x = g.op("Multiply", x, {"class_name": "__tensor__", "config": {
            "value": float(hidden) ** -0.5, "dtype": "float32"}})
    logits = g.layer("ReversibleEmbedding", "token_embedding",
                     {SHARED: f"{name}/token_embedding"}, x, reverse=True)
    return g.build(logits, refs, names=["logits"])
