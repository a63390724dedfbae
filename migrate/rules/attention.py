"""MultiHeadAttention, Attention (Luong) and AdditiveAttention (Bahdanau).

MultiHeadAttention becomes a ``MultiHeadAttention`` module written into
``model.py``: four ``nn.Linear`` projections (query, key, value, output;
Keras's per-head kernels ``(in, heads, dim)`` flattened to ``heads * dim``
features) and explicit scaled dot-product attention, so every step is
visible and exact for any sizes: query, key and value of different widths,
``value_dim != key_dim``, ``output_shape``, ``use_bias=False``, dropout on
the attention weights in ``train()``.  The mask is built in ``forward``
the way Keras builds it, all parts AND-ed (True = may attend): the query's
Keras mask ``[:, :, None]``, the value's and the key's ``[:, None, :]``, an
explicit ``attention_mask``, and inside the module ``use_causal_mask`` and
``sliding_window``.  Masked scores become a large negative number as in
Keras (Keras 3 replaces them, Keras 2 adds -1e9), so a fully masked row
(a padded query) attends uniformly, exactly as Keras does, where ``-inf``
would give NaN.

Attention and AdditiveAttention compute their scores in ``forward``
(``query @ key.transpose(1, 2)``, or a sum of ``tanh(q + k)``) and apply
them with the ``attend`` helper: masked values are lowered by 1e9, softmax,
weighted sum, masked queries give zeros.
"""
from __future__ import annotations

import numpy as np

from ..graph import TensorRef
from ..layout import identity
from .base import TMP, Call, Emit, Out, Tensor, Transformed
from .common import as_f32, lit
from .recurrent import _split_weights
from .registry import rule

MULTI_HEAD_ATTENTION = '''\
class MultiHeadAttention(nn.Module):
    """Keras MultiHeadAttention: query, key and value projected for each
    head, scaled dot-product attention per head, the heads projected to
    the output.  Inputs are (B, T, features); ``mask`` (B, T, S) is True
    where a query step may attend to a value step."""

    def __init__(self, query_size, num_heads, key_dim, value_dim=None,
                 key_size=None, value_size=None, output_size=None,
                 bias=True, dropout=0.0, use_gate=False,
                 sliding_window=None):
        super().__init__()
        value_dim = value_dim or key_dim
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.sliding_window = sliding_window
        self.query = nn.Linear(query_size, num_heads * key_dim, bias=bias)
        self.key = nn.Linear(key_size or value_size or query_size,
                             num_heads * key_dim, bias=bias)
        self.value = nn.Linear(value_size or query_size,
                               num_heads * value_dim, bias=bias)
        self.gate = nn.Linear(query_size, num_heads * value_dim, bias=bias) \\
            if use_gate else None
        self.output = nn.Linear(num_heads * value_dim,
                                output_size or query_size, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query, value, key=None, mask=None,
                use_causal_mask=False, return_attention_scores=False):
        key = value if key is None else key
        heads = (self.num_heads, -1)
        q = self.query(query).unflatten(-1, heads).transpose(1, 2)
        k = self.key(key).unflatten(-1, heads).transpose(1, 2)
        v = self.value(value).unflatten(-1, heads).transpose(1, 2)
        mask, causal = combined_mask(mask, q, k, use_causal_mask,
                                     self.sliding_window,
                                     return_attention_scores)
{attend}
        out = out.transpose(1, 2).flatten(2)  # (B, T, heads * value_dim)
        if self.gate is not None:
            out = out * torch.sigmoid(self.gate(query))
        out = self.output(out)
        return (out, weights) if return_attention_scores else out
'''

SELF_ATTENTION = '''\
class SelfAttention(nn.Module):
    """Keras MultiHeadAttention over one sequence (query = key = value),
    unmasked, no dropout: per-head scaled dot-product attention, the heads
    projected to the output.  Input and output (B, T, features)."""

    def __init__(self, size, num_heads, key_dim):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.query = nn.Linear(size, num_heads * key_dim)
        self.key = nn.Linear(size, num_heads * key_dim)
        self.value = nn.Linear(size, num_heads * key_dim)
        self.output = nn.Linear(num_heads * key_dim, size)

    def forward(self, x):
        heads = (self.num_heads, -1)
        q = self.query(x).unflatten(-1, heads).transpose(1, 2)
        k = self.key(x).unflatten(-1, heads).transpose(1, 2)
        v = self.value(x).unflatten(-1, heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v,
                                             scale=self.key_dim ** -0.5)
        out = out.transpose(1, 2).flatten(2)  # (B, T, heads * key_dim)
        return self.output(out)
'''

COMBINED_MASK = '''\
def combined_mask(mask, q, k, use_causal_mask, sliding_window=None,
                  explicit=False):
    """(mask, causal) for attention of q (B, heads, T, dim) over k: the
    mask (B or 1, 1, T, S), True where a query step may attend, with the
    causal and sliding-window parts AND-ed in, or None; ``causal`` when
    the causal part alone is left to F.scaled_dot_product_attention."""
    if use_causal_mask and mask is None and sliding_window is None \\
            and not explicit:
        return None, True
    steps = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool,
                       device=q.device)
    if use_causal_mask:
        mask = steps.tril() if mask is None else mask & steps.tril()
    if sliding_window is not None:
        w = sliding_window
        band = steps.triu(1 - w) & steps.tril(w - 1)
        mask = band if mask is None else mask & band
    return (None if mask is None else mask.unsqueeze(-3)), False
'''

# How the attention weights are applied.  Keras 3 runs
# ops.dot_product_attention (masked scores replaced by a large negative
# number: a query step that may attend to nothing attends uniformly) unless
# it has dropout or returns the scores; then its Softmax layer replaces
# masked scores by -1e9 and zeroes their weights (such a step gets zeros).
# Keras 2 adds -1e9 to masked scores.  F.scaled_dot_product_attention
# computes both; the scores, when returned, are computed explicitly.
_ATTEND = {3: """\
        scale = {dim} ** -0.5
        if return_attention_scores:{explicit_kv}
            scores = (q * scale) @ k.transpose(-2, -1)
            if mask is not None:
                scores = scores.masked_fill(~mask, -1e9)
            weights = scores.softmax(dim=-1)
            if mask is not None:
                weights = weights.masked_fill(~mask, 0.0)
            out = self.dropout(weights) @ v
        else:
            p = self.dropout.p if self.training else 0.0
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal,
                scale=scale{gqa})
            if mask is not None:  # a step that may attend to nothing
                none = v.mean(dim=-2, keepdim=True){repeat_mean}
                if self.dropout.p:  # Keras's Softmax zeroed its weights
                    none = torch.zeros_like(none)
                out = torch.where(mask.any(dim=-1, keepdim=True), out, none)""",
           2: """\
        scale = {dim} ** -0.5
        if mask is not None:  # Keras 2 adds -1e9 to masked scores
            mask = (1.0 - mask.to(q.dtype)) * -1e9
        if return_attention_scores:
            scores = (q * scale) @ k.transpose(-2, -1)
            if mask is not None:
                scores = scores + mask
            weights = scores.softmax(dim=-1)
            out = self.dropout(weights) @ v
        else:
            p = self.dropout.p if self.training else 0.0
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal,
                scale=scale)"""}

_REPEAT_KV = """
            k = k.repeat_interleave(repeats, dim=1)  # a query head's k, v
            v = v.repeat_interleave(repeats, dim=1)"""


def _attend_code(version: int, dim: str, grouped: bool = False) -> str:
    """The lines of a MultiHeadAttention / GroupedQueryAttention forward
    that attend (see _ATTEND); ``dim`` is the per-head size attribute."""
    code = _ATTEND[version].replace("{dim}", dim)
    return (code.replace("{explicit_kv}", _REPEAT_KV if grouped else "")
            .replace("{gqa}", ", enable_gqa=True" if grouped else "")
            .replace("{repeat_mean}", "\n                none = none."
                     "repeat_interleave(repeats, dim=1)" if grouped else ""))


GROUPED_QUERY_ATTENTION = '''\
class GroupedQueryAttention(nn.Module):
    """Keras GroupQueryAttention: attention with ``num_heads`` query heads
    and ``num_key_value_heads`` key and value heads, each shared by
    ``num_heads // num_key_value_heads`` query heads in turn.  Inputs are
    (B, T, features); ``mask`` (B, T, S) is True where a query step may
    attend to a value step."""

    def __init__(self, query_size, num_heads, num_key_value_heads,
                 head_dim, key_size=None, value_size=None, bias=True,
                 dropout=0.0, use_gate=False, sliding_window=None):
        super().__init__()
        kv_size = num_key_value_heads * head_dim
        self.num_heads = num_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.sliding_window = sliding_window
        self.query = nn.Linear(query_size, num_heads * head_dim, bias=bias)
        self.key = nn.Linear(key_size or value_size or query_size, kv_size,
                             bias=bias)
        self.value = nn.Linear(value_size or query_size, kv_size, bias=bias)
        self.gate = nn.Linear(query_size, num_heads * head_dim, bias=bias) \\
            if use_gate else None
        self.output = nn.Linear(num_heads * head_dim, query_size, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query, value, key=None, mask=None,
                use_causal_mask=False, return_attention_scores=False):
        key = value if key is None else key
        q_heads = (self.num_heads, -1)
        kv_heads = (self.num_key_value_heads, -1)
        repeats = self.num_heads // self.num_key_value_heads
        q = self.query(query).unflatten(-1, q_heads).transpose(1, 2)
        k = self.key(key).unflatten(-1, kv_heads).transpose(1, 2)
        v = self.value(value).unflatten(-1, kv_heads).transpose(1, 2)
        mask, causal = combined_mask(mask, q, k, use_causal_mask,
                                     self.sliding_window,
                                     return_attention_scores)
{attend}
        out = out.transpose(1, 2).flatten(2)  # (B, T, heads * head_dim)
        if self.gate is not None:
            out = out * torch.sigmoid(self.gate(query))
        out = self.output(out)
        return (out, weights) if return_attention_scores else out
'''

ATTEND = '''\
def attend(scores, value, query_mask=None, value_mask=None,
           use_causal_mask=False, dropout=0.0, training=False,
           return_attention_scores=False):
    """Keras dense attention from its scores (B, Tq, Tv): scores of masked
    value steps are lowered by 1e9, softmax over the value steps, weighted
    sum of value (B, Tv, dim); masked query steps give zeros."""
    mask = None if value_mask is None else value_mask[:, None, :]
    if use_causal_mask:
        causal = torch.ones(scores.shape[-2:], dtype=torch.bool,
                            device=scores.device).tril()
        mask = causal if mask is None else mask & causal
    if mask is not None:
        scores = scores - 1e9 * ~mask
    weights = scores.softmax(dim=-1)
    out = F.dropout(weights, dropout, training) @ value
    if query_mask is not None:
        out = out * query_mask[..., None]
    return (out, weights) if return_attention_scores else out
'''


DOT_ATTEND = '''\
def dot_attend(query, key, value, query_mask=None, value_mask=None,
               use_causal_mask=False, dropout=0.0, training=False):
    """Keras dot-product attention, softmax(query @ key.T) @ value
    (B, Tq, dim), with F.scaled_dot_product_attention: the scores of masked
    value steps are lowered by 1e9, as Keras does (a query step that may
    attend to nothing attends uniformly); masked query steps give zeros."""
    mask = None if value_mask is None else value_mask[:, None, :]
    if use_causal_mask:
        causal = torch.ones(query.shape[1], key.shape[1], dtype=torch.bool,
                            device=query.device).tril()
        mask = causal if mask is None else mask & causal
    if mask is not None:  # added to the scores
        mask = torch.where(mask, 0.0, -1e9)
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask,
        dropout_p=dropout if training else 0.0, scale=1.0)
    if query_mask is not None:
        out = out * query_mask[..., None]
    return out
'''


def _arg(call: Call, position: int, name: str) -> Tensor | None:
    """The tensor passed as positional ``position`` or keyword ``name``."""
    node = call.node
    value = None
    if len(node.args) > position:
        value = node.args[position]
    elif name in node.kwargs:
        value = node.kwargs[name]
    if isinstance(value, TensorRef):
        return call.inputs[node.inputs.index(value)]
    return None


def _sequence(call: Call, t: Tensor) -> Tensor:
    if t.layout.is_identity:
        return t
    i = call.index(t)
    if call.inputs[i].layout.is_identity:  # converted for another argument
        return call.inputs[i]
    return call.want(i, identity(t.rank))


def _shared_args(cfg: dict, sizes: dict, out_size: int,
                 use_bias: bool) -> list[str]:
    """The keyword arguments MultiHeadAttention and GroupedQueryAttention
    modules take alike, each only when it differs from its default."""
    args = []
    if sizes["key"] != sizes["value"]:
        args.append(f"key_size={sizes['key']}")
    if sizes["value"] != sizes["query"]:
        args.append(f"value_size={sizes['value']}")
    if out_size != sizes["query"]:
        args.append(f"output_size={out_size}")
    if not use_bias:
        args.append("bias=False")
    dropout = float(cfg.get("dropout") or 0.0)
    if dropout:
        args.append(f"dropout={lit(dropout)}")
    if cfg.get("use_gate"):
        args.append("use_gate=True")
    if cfg.get("sliding_window") is not None:
        args.append(f"sliding_window={int(cfg['sliding_window'])}")
    return args


def _flag(call: Call, name: str) -> bool:
    value = call.node.kwargs.get(name, False)
    if not isinstance(value, bool):
        call.refuse(name, "only a constant True/False is supported")
    return value


def _bool(t: Tensor) -> str:
    return t.expr if t.dtype == "bool" else f"({t.expr} != 0)"


# -- MultiHeadAttention -------------------------------------------------------
_MHA_PARTS = {
    "query": ("query_dense", "_query_dense", "query"),
    "key": ("key_dense", "_key_dense", "key"),
    "value": ("value_dense", "_value_dense", "value"),
    "output": ("output_dense", "_output_dense", "attention_output"),
    "gate": ("gate_dense", "_gate_dense", "gate"),
}


def _mha_variables(cfg):
    names = ["kernel"] + (["bias"] if cfg.get("use_bias", True) else [])
    parts = ["key_dense", "output_dense", "query_dense", "value_dense"]
    if cfg.get("use_gate"):
        parts.insert(1, "gate_dense")
    return [f"{p}/{n}" for p in parts for n in names]


@rule("MultiHeadAttention", variables=_mha_variables, masks="consume")
def multi_head_attention(call):
    cfg = call.config
    heads, key_dim = int(cfg["num_heads"]), int(cfg["key_dim"])
    value_dim = int(cfg.get("value_dim") or key_dim)
    use_bias = bool(cfg.get("use_bias", True))
    query = _arg(call, 0, "query")
    value = _arg(call, 1, "value")
    key = _arg(call, 2, "key")
    if query is None or value is None:
        call.refuse("inputs", "query and value must be tensors")
    rank = query.rank
    axes = cfg.get("attention_axes")
    if axes is not None:
        axes = [axes] if isinstance(axes, int) else list(axes)
        if sorted(a % rank for a in axes) != list(range(1, rank - 1)):
            call.refuse(f"attention_axes={axes}", "only attention over all "
                        "axes between batch and features is supported")
    if any(t is not None and t.rank != rank for t in (value, key)):
        call.refuse("inputs", "query, key and value of different ranks")
    query, value = _sequence(call, query), _sequence(call, value)
    key = _sequence(call, key) if key is not None else None
    self_key = key is None or call.node.inputs[call.index(key)] == \
        call.node.inputs[call.index(value)]
    fold = rank > 3  # several attention axes: one sequence axis
    parts = _mask_parts(call, query, value, key, self_key, fold)
    attention_mask = call.kwarg("attention_mask")
    causal = _flag(call, "use_causal_mask")
    if isinstance(attention_mask, Tensor):
        if fold:
            call.refuse("attention_mask", "with several attention axes")
        attention_mask = _sequence(call, attention_mask)
        # Keras 2 uses a lone attention_mask as it is: (1 - mask) * -1e9
        raw = call.keras_major < 3 and not parts and not causal
        parts.insert(0, attention_mask.expr if raw
                     else _bool(attention_mask))
    scores_out = _flag(call, "return_attention_scores")
    if fold and scores_out:
        call.refuse("return_attention_scores", "with several attention axes")

    out_shape = cfg.get("output_shape")
    if out_shape is None:
        out_dims = (query.shape[-1],)
    else:
        out_dims = tuple(int(d) for d in ([out_shape] if isinstance(
            out_shape, int) else out_shape))
    sizes = {"query": query.shape[-1], "key": (key or value).shape[-1],
             "value": value.shape[-1]}
    if None in sizes.values():
        call.refuse("inputs", "feature sizes must be known")
    out_size = int(np.prod(out_dims))
    args = [str(sizes["query"]), f"num_heads={heads}", f"key_dim={key_dim}"]
    if value_dim != key_dim:
        args.append(f"value_dim={value_dim}")
    args += _shared_args(cfg, sizes, out_size, use_bias)
    gate = bool(cfg.get("use_gate"))
    module = f"MultiHeadAttention({', '.join(args)})"
    version = 3 if call.keras_major >= 3 else 2
    helpers = {"MultiHeadAttention": MULTI_HEAD_ATTENTION.replace(
        "{attend}", _attend_code(version, "self.key_dim")),
        "combined_mask": COMBINED_MASK}
    state = _mha_state(call, heads, key_dim, value_dim, use_bias, gate)
    one = call.node.inputs[call.index(query)] == \
        call.node.inputs[call.index(value)]
    if (one and self_key and len(args) == 3 and not parts and not causal
            and not scores_out and not fold):
        # attention of a sequence over itself, nothing optional used: the
        # short helper (nanoGPT's shape), the same weights and arithmetic
        module = f"SelfAttention({sizes['query']}, {heads}, {key_dim})"
        helpers = {"SelfAttention": SELF_ATTENTION}

    def seq(t):
        return f"{t.expr}.flatten(1, -2)" if fold else t.expr

    call_args = [seq(query)] if module.startswith("SelfAttention") \
        else [seq(query), seq(value)]
    if key is not None and not self_key:
        call_args.append(f"key={seq(key)}")
    if parts:
        call_args.append(f"mask={' & '.join(parts)}")
    if causal:
        call_args.append("use_causal_mask=True")
    if scores_out:
        call_args.append("return_attention_scores=True")
    code = f"self.{call.attr}({', '.join(call_args)})"
    shape = tuple(query.shape[:-1]) + out_dims
    if fold:
        dims = ", ".join(lit(d) if d is not None else "-1"
                         for d in query.shape[1:-1])
        code = f"{code}.unflatten(1, ({dims}))"
    if len(out_dims) > 1:
        code = f"{code}.unflatten(-1, {lit(out_dims)})"
    outs = [Out([code], shape, identity(len(shape)), masked=True)]
    emit = Emit(outs, module=module, state=state, helpers=helpers)
    if scores_out:
        scores_shape = (None, heads, query.shape[1], value.shape[1])
        emit.outputs.append(Out([], scores_shape, identity(4),
                                masked=False))
        emit.multi = [code]
    return emit


def _mask_parts(call, query, value, key, self_key, fold,
                query_kwarg=False) -> list[str]:
    """The parts of the attention mask, as Keras builds it (to be AND-ed):
    Keras 3 reads the query's mask from the tensor (GroupQueryAttention:
    a ``query_mask`` argument first) and fills value_mask / key_mask from
    theirs unless given; Keras 2 reads all three from the tensors."""
    masks = []
    for t, name, index in ((query, "query_mask", "[:, :, None]"),
                           (value, "value_mask", "[:, None, :]"),
                           (None if self_key else key, "key_mask",
                            "[:, None, :]")):
        if t is None:
            continue
        explicit = call.kwarg(name) if call.keras_major >= 3 and (
            t is not query or query_kwarg) else None
        if explicit is not None:
            masks.append((_bool(explicit), index))
        elif t.masked:
            masks.append((t.mask, index))
    if fold and masks and call.keras_major >= 3:
        call.refuse("mask", "Keras masks with several attention axes")
    parts = []
    for m, index in masks:
        if m is None:
            call.refuse("mask", "an input's Keras mask is not available")
        parts.append(f"{m}.flatten(1){index}" if fold else f"{m}{index}")
    return parts


def _mha_erases(node, keras_major: int) -> list:
    """Keras 3's MultiHeadAttention erases the Keras masks of its query,
    value and key tensors when it runs (``set_keras_mask(query, None)`` in
    its ``call``): layers that Keras runs later see them unmasked."""
    if keras_major < 3:
        return []
    refs = []
    for position, name in enumerate(("query", "value", "key")):
        value = node.args[position] if len(node.args) > position \
            else node.kwargs.get(name)
        if isinstance(value, TensorRef):
            refs.append(value)
    return refs


multi_head_attention.erases_masks = _mha_erases


def _mha_state(call, heads, key_dim, value_dim, use_bias, gate) -> dict:
    groups = {name: (lambda h, names=names: h in names)
              for name, names in _MHA_PARTS.items()
              if name != "gate" or gate}
    parts = _split_weights(call, call.layer.weights, groups)
    names = ["kernel"] + (["bias"] if use_bias else [])
    state = {}
    for part, weights in parts.items():
        w = weights.bind(names)

        def weight(k, part=part):
            if part == "output":  # (heads, value_dim, *out) -> (out, in)
                return as_f32(k.reshape(heads * value_dim, -1).T)
            return as_f32(k.reshape(k.shape[0], -1).T)  # (in, heads, dim)

        state[f"{part}.weight"] = Transformed(
            weight, [w["kernel"]],
            "(heads, value_dim, out..) reshaped to (heads*value_dim, out), "
            "transposed" if part == "output" else
            "(in, heads, dim) reshaped to (in, heads*dim), transposed")
        if use_bias:
            state[f"{part}.bias"] = Transformed(
                lambda b: as_f32(b.reshape(-1)), [w["bias"]], "flattened")
    return state


# -- GroupQueryAttention (Keras 3) --------------------------------------------
@rule("GroupQueryAttention", "GroupedQueryAttention",
      variables=_mha_variables, masks="consume")
def grouped_query_attention(call):
    """A ``GroupedQueryAttention`` module: MultiHeadAttention whose key and
    value heads are shared by groups of query heads.  Keras fills its
    ``query_mask``, ``value_mask`` and ``key_mask`` from the inputs' masks
    (it does not erase them, unlike MultiHeadAttention), and keeps the
    query's mask on its output."""
    cfg = call.config
    heads = int(cfg["num_query_heads"])
    kv_heads = int(cfg["num_key_value_heads"])
    head_dim = int(cfg["head_dim"])
    use_bias = bool(cfg.get("use_bias", True))
    if heads % kv_heads:
        call.refuse(f"num_key_value_heads={kv_heads}", "must divide "
                    f"num_query_heads={heads}")
    query = _arg(call, 0, "query")
    value = _arg(call, 1, "value")
    key = _arg(call, 2, "key")
    if query is None or value is None:
        call.refuse("inputs", "query and value must be tensors")
    if any(t is not None and t.rank != 3 for t in (query, value, key)):
        call.refuse("inputs", "(batch, steps, features) inputs only")
    query, value = _sequence(call, query), _sequence(call, value)
    key = _sequence(call, key) if key is not None else None
    self_key = key is None or call.node.inputs[call.index(key)] == \
        call.node.inputs[call.index(value)]
    parts = _mask_parts(call, query, value, key, self_key, False,
                        query_kwarg=True)
    attention_mask = call.kwarg("attention_mask")
    if isinstance(attention_mask, Tensor):
        parts.insert(0, _bool(_sequence(call, attention_mask)))
    causal = _flag(call, "use_causal_mask")
    scores_out = _flag(call, "return_attention_scores")
    sizes = {"query": query.shape[-1], "key": (key or value).shape[-1],
             "value": value.shape[-1]}
    if None in sizes.values():
        call.refuse("inputs", "feature sizes must be known")
    args = [str(sizes["query"]), f"num_heads={heads}",
            f"num_key_value_heads={kv_heads}", f"head_dim={head_dim}"]
    args += _shared_args(cfg, sizes, sizes["query"], use_bias)
    gate = bool(cfg.get("use_gate"))
    module = f"GroupedQueryAttention({', '.join(args)})"
    helpers = {"GroupedQueryAttention": GROUPED_QUERY_ATTENTION.replace(
        "{attend}", _attend_code(3, "self.head_dim", grouped=True)),
        "combined_mask": COMBINED_MASK}
    # Keras's (in, heads, head_dim) kernels, as for MultiHeadAttention
    state = _mha_state(call, heads, head_dim, head_dim, use_bias, gate)
    call_args = [query.expr, value.expr]
    if key is not None and not self_key:
        call_args.append(f"key={key.expr}")
    if parts:
        call_args.append(f"mask={' & '.join(parts)}")
    if causal:
        call_args.append("use_causal_mask=True")
    if scores_out:
        call_args.append("return_attention_scores=True")
    code = f"self.{call.attr}({', '.join(call_args)})"
    outs = [Out([code], query.shape, identity(3), masked=True)]
    emit = Emit(outs, module=module, state=state, helpers=helpers)
    if scores_out:
        scores_shape = (None, heads, query.shape[1], value.shape[1])
        emit.outputs.append(Out([], scores_shape, identity(4),
                                masked=False))
        emit.multi = [code]
    return emit


# -- Attention, AdditiveAttention ---------------------------------------------
def _dense_inputs(call: Call):
    """(query, value, key, query mask, value mask) of a dense attention
    layer called on ``[query, value]`` or ``[query, value, key]``."""
    first = call.node.args[0] if call.node.args else None
    if not isinstance(first, list) or len(first) not in (2, 3):
        call.refuse("inputs", "expected [query, value] or [query, value, "
                    "key]")
    refs = call.node.inputs
    q, v = (call.inputs[refs.index(r)] for r in first[:2])
    k = call.inputs[refs.index(first[2])] if len(first) > 2 else None
    for t in (q, v, k):
        if t is not None and t.rank != 3:
            call.refuse("inputs", "(batch, steps, features) inputs only")
    q, v = _sequence(call, q), _sequence(call, v)
    k = _sequence(call, k) if k is not None else None
    explicit = call.node.kwargs.get("mask")
    if isinstance(explicit, list):  # mask=[query_mask, value_mask, ...]
        masks = [call.inputs[refs.index(m)] if isinstance(m, TensorRef)
                 else None for m in explicit[:2]]
        q_mask, v_mask = (None if m is None else _bool(m) for m in masks)
    else:
        q_mask, v_mask = q.mask, v.mask
        if (q.masked and q_mask is None) or (v.masked and v_mask is None):
            call.refuse("mask", "an input's Keras mask is not available")
    return q, v, k, q_mask, v_mask


def _attend(call, q, v, scores_code, q_mask, v_mask, module, state):
    args = [TMP(0), v.expr]
    if q_mask is not None:
        args.append(f"query_mask={q_mask}")
    if v_mask is not None:
        args.append(f"value_mask={v_mask}")
    if _flag(call, "use_causal_mask") or call.get("causal"):
        args.append("use_causal_mask=True")
    dropout = float(call.get("dropout") or 0.0)
    if dropout:
        args.append(f"dropout={lit(dropout)}, training=self.training")
    scores_out = _flag(call, "return_attention_scores")
    if scores_out:
        args.append("return_attention_scores=True")
    code = f"attend({', '.join(args)})"
    shape = (None, q.shape[1], v.shape[2])
    outs = [Out([code], shape, identity(3), masked=q.masked)]
    emit = Emit(outs, module=module, state=state, helpers={"attend": ATTEND},
                pre=[(["scores"], scores_code)])
    if scores_out:
        outs.append(Out([], (None, q.shape[1], v.shape[1]), identity(3),
                        masked=False))
        emit.multi = [code]
    return emit


def _dot_attend(call, q, v, args, q_mask, v_mask, module, state):
    """Attention(score_mode="dot") without returned scores: dot_attend."""
    if q_mask is not None:
        args.append(f"query_mask={q_mask}")
    if v_mask is not None:
        args.append(f"value_mask={v_mask}")
    if _flag(call, "use_causal_mask") or call.get("causal"):
        args.append("use_causal_mask=True")
    dropout = float(call.get("dropout") or 0.0)
    if dropout:
        args.append(f"dropout={lit(dropout)}, training=self.training")
    code = f"dot_attend({', '.join(args)})"
    shape = (None, q.shape[1], v.shape[2])
    return Emit([Out([code], shape, identity(3), masked=q.masked)],
                module=module, state=state,
                helpers={"dot_attend": DOT_ATTEND})


def _attention_variables(cfg):
    names = ["scale"] if cfg.get("use_scale") else []
    if cfg.get("score_mode", "dot") == "concat":
        names.append("concat_score_weight")
    return names


@rule("Attention", variables=_attention_variables, masks="consume")
def attention(call):
    """Luong attention: ``softmax(q @ k.T [* scale]) @ v``; with
    ``score_mode="concat"``, scores ``w * sum(tanh([scale *] (q + k)))``."""
    q, v, k, q_mask, v_mask = _dense_inputs(call)
    use_scale = bool(call.get("use_scale", False))
    mode = call.get("score_mode", "dot")
    if mode not in ("dot", "concat"):
        call.refuse(f"score_mode={mode!r}", "expected dot or concat")
    names = _attention_variables(call.config)
    w = call.layer.weights.bind(names)
    key = (k or v).expr
    attr = f"self.{call.attr}"
    if len(names) == 1:
        module = "nn.Parameter(torch.empty(()))"
        state = {"": Transformed(as_f32, [w[names[0]]])}
        params = {names[0]: attr}
    elif names:
        module = ("nn.ParameterDict({\"scale\": torch.empty(()), "
                  "\"concat_score_weight\": torch.empty(())})")
        state = {n: Transformed(as_f32, [w[n]]) for n in names}
        params = {n: f"{attr}[\"{n}\"]" for n in names}
    else:
        module, state, params = None, {}, {}
    if mode == "dot" and not _flag(call, "return_attention_scores"):
        query = f"{q.expr} * {params['scale']}" if use_scale else q.expr
        return _dot_attend(call, q, v, [query, key, v.expr], q_mask, v_mask,
                           module, state)
    if mode == "dot":
        scores = f"{q.expr} @ {key}.transpose(1, 2)"
        if use_scale:
            scores += f" * {params['scale']}"
    else:
        total = f"{q.expr}[:, :, None] + {key}[:, None]"
        if use_scale:
            total = f"{params['scale']} * ({total})"
        scores = (f"{params['concat_score_weight']} * "
                  f"torch.tanh({total}).sum(dim=-1)")
    return _attend(call, q, v, scores, q_mask, v_mask, module, state)


@rule("AdditiveAttention", variables=lambda cfg: (
    ["scale"] if cfg.get("use_scale", True) else []), masks="consume")
def additive_attention(call):
    """Bahdanau attention: scores ``sum(scale * tanh(q + k))``."""
    q, v, k, q_mask, v_mask = _dense_inputs(call)
    use_scale = bool(call.get("use_scale", True))
    key = (k or v).expr
    tanh = f"torch.tanh({q.expr}[:, :, None] + {key}[:, None])"
    if use_scale:
        w = call.layer.weights.bind(["scale"])
        module = f"nn.Parameter(torch.empty({w['scale'].shape[0]}))"
        state = {"": Transformed(as_f32, [w["scale"]])}
        scores = f"(self.{call.attr} * {tanh}).sum(dim=-1)"
    else:
        module, state = None, {}
        scores = f"{tanh}.sum(dim=-1)"
    return _attend(call, q, v, scores, q_mask, v_mask, module, state)
