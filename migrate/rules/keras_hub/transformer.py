"""keras-hub TransformerEncoder and TransformerDecoder.

Each becomes a block class written once into ``model.py`` and made for the
way the model uses it (pre- or post-norm, its activation, causal or not,
with or without cross-attention), so its ``forward`` is the straight-line
code of that block, residuals written out, as in nanoGPT::

    def forward(self, x, padding_mask=None):
        ...
        h = self.self_attention(self.self_attention_layer_norm(x), mask=mask)
        x = x + self.dropout(h)

The attention is an ``Attention`` module (query, key, value and output
projections around ``F.scaled_dot_product_attention``).  Keras fills masked
scores with a large negative number, so a query step that may attend to
nothing (a fully padded sequence) gets uniform weights -- the mean of the
values -- or, when the layer has attention dropout (Keras then takes its
explicit softmax, which zeroes masked weights), zeros; ``Attention`` does
the same where SDPA alone would give NaN.

Sub-module names are the Keras sub-layer names (``self_attention``,
``self_attention_layer_norm``, ``feedforward_intermediate_dense``...), so
state-dict keys read like the Keras variable paths
(``transformer_layer_0/self_attention/query/kernel`` ->
``transformer_layer_0.self_attention.query.weight``).
"""
from __future__ import annotations

from ...graph import TensorRef
from ...layout import identity
from ..base import Emit, Out, Tensor
from ..common import lit
from ..registry import rule
from .weights import (HubWeights, dense_weight, heads_bias, heads_in,
                      heads_out, stored)

ATTENTION = '''\
class Attention(nn.Module):
    """Multi-head attention: query, key and value projections, scaled
    dot-product attention per head, the output projection.  ``mask``
    broadcasts to (B, heads, T, S) and is True where a query step may
    attend to a key step."""

    def __init__(self, hidden_dim, num_heads, key_dim=None, context_dim=None,
                 dropout=0.0):
        super().__init__()
        key_dim = key_dim or hidden_dim // num_heads
        context_dim = context_dim or hidden_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.query = nn.Linear(hidden_dim, num_heads * key_dim)
        self.key = nn.Linear(context_dim, num_heads * key_dim)
        self.value = nn.Linear(context_dim, num_heads * key_dim)
        self.attention_output = nn.Linear(num_heads * key_dim, hidden_dim)

    def forward(self, x, context=None, mask=None):
        context = x if context is None else context
        heads = (self.num_heads, -1)
        q = self.query(x).unflatten(-1, heads).transpose(1, 2)  # (B, h, T, d)
        k = self.key(context).unflatten(-1, heads).transpose(1, 2)
        v = self.value(context).unflatten(-1, heads).transpose(1, 2)
        p = self.dropout if self.training else 0.0
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:
            # A query that may attend to nothing: Keras gives it uniform
            # weights, or zeros when it has attention dropout.
            empty = ~mask.any(-1, keepdim=True)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | empty,
                                               dropout_p=p)
            fill = 0.0 if self.dropout else v.mean(-2, keepdim=True)
            y = torch.where(empty, fill, y)
        return self.attention_output(y.transpose(1, 2).flatten(2))
'''

# Whisper's attention: no bias on the key projection
# (WhisperCachedMultiHeadAttention), otherwise Attention
_DOC = ATTENTION[ATTENTION.index('    """'):ATTENTION.index('"""\n\n') + 4]
WHISPER_ATTENTION = ATTENTION.replace(
    "class Attention(nn.Module):", "class WhisperAttention(nn.Module):"
).replace(_DOC, '''\
    """Whisper's multi-head attention: query, key (no bias) and value
    projections, scaled dot-product attention per head, the output
    projection.  ``mask`` broadcasts to (B, heads, T, S) and is True where
    a query step may attend to a key step."""
''').replace(
    "self.key = nn.Linear(context_dim, num_heads * key_dim)",
    "self.key = nn.Linear(context_dim, num_heads * key_dim, bias=False)")
assert WHISPER_ATTENTION.count("bias=False") == 1

# activation name (Keras, or keras-hub's registered functions) -> step
_ACTIVATIONS = {
    "relu": "F.relu({})", "gelu": "F.gelu({})", "silu": "F.silu({})",
    "swish": "F.silu({})", "tanh": "torch.tanh({})",
    "sigmoid": "torch.sigmoid({})", "linear": "{}", None: "{}",
    "keras_hub>gelu_approximate": 'F.gelu({}, approximate="tanh")',
    "keras_nlp>gelu_approximate": 'F.gelu({}, approximate="tanh")',
    "gelu_approximate": 'F.gelu({}, approximate="tanh")',
}


def activation_step(call, value) -> str:
    name = value.get("config") if isinstance(value, dict) and \
        value.get("class_name") == "function" else value
    if not isinstance(name, (str, type(None))) or name not in _ACTIVATIONS:
        call.refuse(f"activation={name!r}", "supported: " + ", ".join(
            sorted(k for k in _ACTIVATIONS if k)))
    return _ACTIVATIONS[name]


def helper_name(call, base: str, code: str) -> str:
    """``base``, or ``base2``, ``base3``... when a different variant of the
    block already has that name in this model."""
    have = call._conv.helpers
    name, k = base, 1
    while name in have and have[name] != code.replace(base, name, 1):
        k += 1
        name = f"{base}{k}"
    return name


# -- the block class ----------------------------------------------------------
def _block_code(name: str, decoder: bool, pre: bool, act: str, cross: bool,
                causal: bool, attn_mask: bool, query_mask: bool = False,
                kind: str = "", attention: str = "Attention") -> str:
    kind = kind or ("TransformerDecoder" if decoder
                    else "TransformerEncoder")
    parts = (["causal self-attention" if causal else "self-attention"]
             + (["cross-attention to the encoder"] if cross else [])
             + ["a feedforward network"])
    how = ("each on the layer-normalised input, added to it (pre-norm)"
           if pre else "each added to its input, then layer-normalised "
           "(post-norm)")
    doc = (f"keras-hub {kind}: {', '.join(parts[:-1])} and {parts[-1]}, "
           f"{how}.")
    args = ["x"]
    if cross:
        args.append("encoder_sequence")
    args.append("padding_mask=None")
    if attn_mask:
        args.append("attention_mask=None")
    if cross:
        args.append("encoder_padding_mask=None")
    if query_mask:
        args.append("query_mask=None")
    masks = ("``padding_mask`` (B, T) is 1 at real tokens, 0 at padding"
             + ("; ``encoder_padding_mask`` (B, S) the same for the encoder"
                if cross else "")
             + ("; ``query_mask`` (B, T), the input's Keras mask, also "
                "stops its padded steps attending (they attend to nothing, "
                "as in Keras)" if query_mask else "") + ".")
    lines = [f"class {name}(nn.Module):", f'    """{doc}', "", f"    {masks}"]
    lines = _wrap_doc(lines) + ['    """', ""]
    init = ["hidden_dim", "num_heads", "intermediate_dim"]
    if cross:
        init.append("encoder_dim=None")
    init += ["eps=1e-05", "dropout=0.0"]
    lines.append(f"    def __init__(self, {', '.join(init)}):")
    body = ["super().__init__()"]
    body.append("self.self_attention_layer_norm = nn.LayerNorm(hidden_dim, "
                "eps=eps)")
    body.append(f"self.self_attention = {attention}(hidden_dim, num_heads, "
                "dropout=dropout)")
    if cross:
        body.append("self.cross_attention_layer_norm = nn.LayerNorm("
                    "hidden_dim, eps=eps)")
        body.append(f"self.cross_attention = {attention}(hidden_dim, "
                    "num_heads, context_dim=encoder_dim, dropout=dropout)")
    body += ["self.feedforward_layer_norm = nn.LayerNorm(hidden_dim, "
             "eps=eps)",
             "self.feedforward_intermediate_dense = nn.Linear(hidden_dim, "
             "intermediate_dim)",
             "self.feedforward_output_dense = nn.Linear(intermediate_dim, "
             "hidden_dim)",
             "self.dropout = nn.Dropout(dropout)"]
    lines += _indent(body, 8) + [""]
    lines.append(f"    def forward(self, {', '.join(args)}):")
    fw = []
    if causal:
        fw += ["T = x.shape[1]",
               "# (T, T): step t attends to steps 0..t",
               "mask = torch.ones(T, T, dtype=torch.bool, "
               "device=x.device).tril()",
               "if padding_mask is not None:  # (B, 1, T, T)",
               "    mask = mask & padding_mask[:, None, None, :].bool()"]
    else:
        fw += ["mask = None  # (B, 1, 1, T): which steps may be attended to",
               "if padding_mask is not None:",
               "    mask = padding_mask[:, None, None, :].bool()"]
    if attn_mask:
        fw += ["if attention_mask is not None:  # (B, T, T)",
               "    am = attention_mask[:, None].bool()",
               "    mask = am if mask is None else mask & am"]
    if query_mask:
        fw += ["if query_mask is not None:  # (B, 1, T, 1)",
               "    q = query_mask[:, None, :, None].bool()",
               "    mask = q if mask is None else mask & q"]
    if cross:
        fw += ["encoder_mask = None",
               "if encoder_padding_mask is not None:  # (B, 1, 1, S)",
               "    encoder_mask = encoder_padding_mask[:, None, None, :]"
               ".bool()"]
    ff = [f"h = self.feedforward_intermediate_dense({'h' if pre else 'x'})"]
    if act != "{}":
        ff.append("h = " + act.replace("{}", "h"))
    ff.append("h = self.feedforward_output_dense(h)")
    if pre:
        fw += ["h = self.self_attention(self.self_attention_layer_norm(x), "
               "mask=mask)",
               "x = x + self.dropout(h)"]
        if cross:
            fw += ["h = self.cross_attention_layer_norm(x)",
                   "h = self.cross_attention(h, encoder_sequence, "
                   "mask=encoder_mask)",
                   "x = x + self.dropout(h)"]
        fw += ["h = self.feedforward_layer_norm(x)"] + ff + [
            "return x + self.dropout(h)"]
    else:
        fw += ["h = self.self_attention(x, mask=mask)",
               "x = self.self_attention_layer_norm(x + self.dropout(h))"]
        if cross:
            fw += ["h = self.cross_attention(x, encoder_sequence, "
                   "mask=encoder_mask)",
                   "x = self.cross_attention_layer_norm(x + self.dropout(h))"]
        fw += ff + ["return self.feedforward_layer_norm(x + self.dropout(h))"]
    lines += _indent(fw, 8)
    return "\n".join(_fold(lines)) + "\n"


def _indent(lines, n):
    return [" " * n + line for line in lines]


def _wrap_doc(lines):
    import textwrap
    out = [lines[0]]
    for line in lines[1:]:
        if len(line) <= 79:
            out.append(line)
            continue
        body = line.lstrip()
        first = line[:len(line) - len(body)]
        out += textwrap.wrap(body, 79, initial_indent=first,
                             subsequent_indent="    ")
    return out


def _fold(lines):
    """Break generated lines longer than 79 characters after the commas
    of their first call's arguments, aligned with its parenthesis."""
    out = []
    for line in lines:
        if len(line) <= 79 or "(" not in line:
            out.append(line)
            continue
        head, _, rest = line.partition("(")
        pad = " " * (len(head) + 1)
        first = True
        while True:
            room = 79 - (len(head) + 1 if first else len(pad))
            cut = rest.rfind(", ", 0, room)
            if len(rest) <= room or cut < 0:
                out.append((f"{head}(" if first else pad) + rest)
                break
            out.append((f"{head}(" if first else pad) + rest[:cut + 1])
            rest, first = rest[cut + 2:], False
    return out


# -- weights ---------------------------------------------------------------
_DENSE = {"query": ("query_dense", "_query_dense"),
          "key": ("key_dense", "_key_dense"),
          "value": ("value_dense", "_value_dense"),
          "attention_output": ("output_dense", "_output_dense")}


def _attention_state(w: HubWeights, sub: str, prefix: str, hidden: int,
                     heads: int, head_dim: int, context: int,
                     key_bias: bool = True) -> dict:
    state = {}
    for part, names in _DENSE.items():
        paths = tuple(f"{sub}/{n}" for n in names)
        if part == "attention_output":
            k = w.array(paths, 0, (heads, head_dim, hidden))
            state[f"{prefix}.{part}.weight"] = heads_out(k)
            state[f"{prefix}.{part}.bias"] = stored(w.array(paths, 1,
                                                            (hidden,)))
        else:
            k = w.array(paths, 0, (hidden if part == "query" else context,
                                   heads, head_dim))
            state[f"{prefix}.{part}.weight"] = heads_in(k)
            if part != "key" or key_bias:
                state[f"{prefix}.{part}.bias"] = heads_bias(
                    w.array(paths, 1, (heads, head_dim)))
    return state


def _norm_state(w: HubWeights, sub: str, prefix: str, hidden: int) -> dict:
    return {f"{prefix}.weight": stored(w.array(sub, 0, (hidden,))),
            f"{prefix}.bias": stored(w.array(sub, 1, (hidden,)))}


def _dense_state(w: HubWeights, sub: str, prefix: str, n_in: int,
                 n_out: int) -> dict:
    return {f"{prefix}.weight": dense_weight(w.array(sub, 0, (n_in, n_out))),
            f"{prefix}.bias": stored(w.array(sub, 1, (n_out,)))}


# -- the rules -------------------------------------------------------------
def _tensor(call, position: int, name: str) -> Tensor | None:
    node = call.node
    value = node.args[position] if len(node.args) > position \
        else node.kwargs.get(name)
    if isinstance(value, TensorRef):
        return call.inputs[node.inputs.index(value)]
    return None


def _mask_arg(call, t: Tensor | None, explicit: Tensor | None):
    """The padding mask Keras uses: the explicit argument, else the
    tensor's own Keras mask."""
    if explicit is not None:
        return explicit.expr
    if t is not None and t.masked:
        if t.mask is None:
            call.refuse("mask", "the input's Keras mask is not available")
        return t.mask
    return None


def _block(call, decoder: bool, whisper: bool = False) -> Emit:
    """A TransformerEncoder/Decoder block; ``whisper``: Whisper's
    subclasses, whose key projections have no bias."""
    cfg = call.config
    for key in ("self_attention_cache", "cross_attention_cache",
                "self_attention_cache_update_index",
                "cross_attention_cache_update_index"):
        if call.node.kwargs.get(key) is not None:
            call.refuse(key, "decoding caches are not converted (the port "
                        "runs the whole sequence)")
    if call.node.kwargs.get("return_attention_scores"):
        call.refuse("return_attention_scores=True", "not supported")
    x = _tensor(call, 0, "decoder_sequence" if decoder else "inputs")
    if x is None or x.rank != 3:
        call.refuse("inputs", "a (B, T, features) sequence is required")
    x = call.want(call.index(x), identity(3))
    hidden = x.shape[-1]
    if hidden is None:
        call.refuse("inputs", "the feature size must be known")
    heads = int(cfg["num_heads"])
    inter = int(cfg["intermediate_dim"])
    head_dim = hidden // heads
    if head_dim == 0:
        call.refuse(f"num_heads={heads}", f"more heads than features "
                    f"({hidden})")
    eps = float(cfg.get("layer_norm_epsilon", 1e-5))
    dropout = float(cfg.get("dropout") or 0.0)
    pre = bool(cfg.get("normalize_first", False))
    act = activation_step(call, cfg.get("activation", "relu"))
    if decoder:
        enc = _tensor(call, 1, "encoder_sequence")
        pad = _tensor(call, 2, "decoder_padding_mask")
        am = _tensor(call, 3, "decoder_attention_mask")
        enc_pad = _tensor(call, 4, "encoder_padding_mask")
        if _tensor(call, 5, "encoder_attention_mask") is not None:
            call.refuse("encoder_attention_mask", "not supported")
        causal = call.node.kwargs.get("use_causal_mask", True)
        if not isinstance(causal, bool):
            call.refuse("use_causal_mask", "must be a constant True/False")
    else:
        enc = enc_pad = None
        pad = _tensor(call, 1, "padding_mask")
        am = _tensor(call, 2, "attention_mask")
        causal = False
    cross = enc is not None
    # the encoder names its attention "self_attention_layer", the decoder
    # "self_attention" (their variables' paths)
    w = HubWeights(call, names=None if decoder else {
        "self_attention_layer": "self_attention_layer"})
    if cross != w.has("_cross_attention_layer"):
        call.refuse("encoder_sequence", "the call and the stored weights "
                    "disagree about cross-attention")
    if cross:
        enc = call.want(call.index(enc), identity(3))
    base = ("Whisper" if whisper else "Transformer") + (
        "Decoder" if decoder else "Encoder")
    attention = "WhisperAttention" if whisper else "Attention"
    # Keras's MultiHeadAttention also masks the queries by the Keras mask
    # of its query (keras-hub's encoder passes its input, masked or not;
    # its decoder's self-attention query carries none).
    query = None
    if not decoder and x.masked:
        if x.mask is None:
            call.refuse("mask", "the input's Keras mask is not available")
        query = x.mask
    code = _block_code(base, decoder, pre, act, cross, causal, am is not None,
                       query is not None, kind=base, attention=attention)
    name = helper_name(call, base, code)
    code = code.replace(base, name, 1)
    helpers = {attention: WHISPER_ATTENTION if whisper else ATTENTION,
               name: code}

    state = {}
    state.update(_attention_state(w, "_self_attention_layer",
                                  "self_attention", hidden, heads, head_dim,
                                  hidden, key_bias=not whisper))
    state.update(_norm_state(w, "_self_attention_layer_norm",
                             "self_attention_layer_norm", hidden))
    enc_dim = None
    if cross:
        enc_dim = enc.shape[-1]
        if enc_dim is None:
            call.refuse("encoder_sequence", "its feature size must be known")
        state.update(_attention_state(w, "_cross_attention_layer",
                                      "cross_attention", hidden, heads,
                                      head_dim, enc_dim,
                                      key_bias=not whisper))
        state.update(_norm_state(w, "_cross_attention_layer_norm",
                                 "cross_attention_layer_norm", hidden))
    state.update(_norm_state(w, "_feedforward_layer_norm",
                             "feedforward_layer_norm", hidden))
    state.update(_dense_state(w, "_feedforward_intermediate_dense",
                              "feedforward_intermediate_dense", hidden,
                              inter))
    state.update(_dense_state(w, "_feedforward_output_dense",
                              "feedforward_output_dense", inter, hidden))

    args = [str(hidden), str(heads), str(inter)]
    if cross and enc_dim != hidden:
        args.append(f"encoder_dim={enc_dim}")
    if eps != 1e-5:
        args.append(f"eps={lit(eps)}")
    if dropout:
        args.append(f"dropout={lit(dropout)}")
    module = f"{name}({', '.join(args)})"

    call_args = [x.expr]
    if cross:
        call_args.append(enc.expr)
    padding = _mask_arg(call, x, pad)
    if padding is not None:
        call_args.append(padding if not cross and am is None
                         else f"padding_mask={padding}")
    if am is not None:
        call_args.append(f"attention_mask={am.expr}")
    if cross:
        enc_padding = _mask_arg(call, enc, enc_pad)
        if enc_padding is not None:
            call_args.append(f"encoder_padding_mask={enc_padding}")
    if query is not None:
        call_args.append(f"query_mask={query}")
    step = f"self.{call.attr}({', '.join(call_args)})"
    return Emit([Out([step], x.shape, identity(3), masked=True)],
                module=module, state=state, helpers=helpers)


@rule("keras_hub>TransformerEncoder", "keras_nlp>TransformerEncoder",
      masks="consume")
def transformer_encoder(call):
    """nn.Module: a `TransformerEncoder` block class around SDPA"""
    return _block(call, decoder=False)


@rule("keras_hub>TransformerDecoder", "keras_nlp>TransformerDecoder",
      masks="consume")
def transformer_decoder(call):
    """nn.Module: a `TransformerDecoder` block class around SDPA"""
    return _block(call, decoder=True)
