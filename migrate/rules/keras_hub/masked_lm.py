"""keras-hub's MaskedLMHead layer and the MaskedLM tasks built on it (BERT,
RoBERTa, DistilBERT, XLM-RoBERTa, ALBERT, FNet), as keras-hub 0.32 builds
them (``keras_hub/src/layers/modeling/masked_lm_head.py``, ``keras_hub/
src/models/*/*_masked_lm.py``).

The head gathers the encoder's hidden states at ``mask_positions`` (one
row of positions per sequence, ``take_along_axis`` on the time axis:
``x[rows, mask_positions]`` in torch), runs them through a dense layer of
the embedding's width, its activation and a layer norm, then maps them
to token logits with the token embedding's own table (tied, as keras-hub
passes ``backbone.token_embedding``) or its ``output_kernel``, plus
``output_bias``; ``activation`` (``"softmax"``) comes last.

The port is one ``MaskedLMHead`` module class; a tied head takes the
embedding's table as an argument (``self.mlm_head(x, mask_positions,
self.token_embedding.weight)``), so the table is one parameter, as in
Keras.
"""
from __future__ import annotations

from ...layout import identity
from ...read.expand import expander
from ..base import HOLE, Emit, Out
from ..common import lit
from ..registry import rule
from .config import backbone, dim
from .functional import Functional, Ref
from .transformer import _dense_state, _fold, _norm_state, activation_step, \
    helper_name
from .weights import HubWeights, dense_weight, stored

# config key an expander writes: the graph name of the layer whose token
# table the head uses (keras-hub passes the layer object; its config holds
# a copy of the embedding's config, which names no layer of the graph)
TIED = "_tied_embedding"


def _kind(layer) -> str:
    """A layer's class without its package (``keras_hub>...``)."""
    return layer.class_name.rsplit(">", 1)[-1]


def _head_code(name: str, act: str, tied: bool) -> str:
    h = act.replace("{}", "self.intermediate_dense(x)")
    width = "embedding_dim" if tied else "hidden_dim"
    if tied:
        doc = ["    norm, then token logits from the token embedding's "
               "table (tied,",
               '    given as ``embedding``) plus a bias."""']
        args = "hidden_dim, embedding_dim, vocabulary_size, eps=1e-05"
        head = ["        self.output_bias = nn.Parameter(torch.zeros("
                "vocabulary_size))"]
        call = "x, mask_positions, embedding"
        last = "        return F.linear(x, embedding, self.output_bias)"
    else:
        doc = ['    norm, then token logits from its own output layer."""']
        args = "hidden_dim, vocabulary_size, eps=1e-05"
        head = ["        self.output_dense = nn.Linear(hidden_dim, "
                "vocabulary_size)"]
        call = "x, mask_positions"
        last = "        return self.output_dense(x)"
    lines = [
        f"class {name}(nn.Module):",
        '    """keras-hub MaskedLMHead: the hidden states at the '
        '(B, M) positions',
        "    ``mask_positions`` through a dense layer, its activation and "
        "a layer",
        *doc,
        "",
        f"    def __init__(self, {args}):",
        "        super().__init__()",
        f"        self.intermediate_dense = nn.Linear(hidden_dim, {width})",
        f"        self.intermediate_layer_norm = nn.LayerNorm({width}, "
        "eps=eps)",
        *head,
        "",
        f"    def forward(self, {call}):",
        "        rows = torch.arange(x.shape[0], device=x.device)[:, None]",
        "        x = x[rows, mask_positions]  # (B, M, hidden_dim)",
        f"        x = {h}",
        "        x = self.intermediate_layer_norm(x)",
        last,
    ]
    return "\n".join(_fold(lines)) + "\n"


def _tied_table(call, vocab):
    """``(code, width, vocabulary size)`` of the token table a tied head
    uses, or None for a head with its own output kernel."""
    cfg = call.config
    hint, embedding = cfg.get(TIED), cfg.get("token_embedding")
    if hint is None and embedding is None:
        return None
    declared = call.declared()
    if isinstance(hint, str):
        found = [hint] if hint in declared else []
    else:
        inner = embedding.get("config") if isinstance(embedding, dict) \
            else None
        name = inner.get("name") if isinstance(inner, dict) else None
        found = [n for n, (layer, _) in declared.items()
                 if _kind(layer) == "ReversibleEmbedding"
                 and layer.keras_name == name]
    if len(found) != 1:
        call.refuse("token_embedding", "the head's token embedding is not "
                    "one layer of this model called before the head (a "
                    "head with its own table: token_embedding=None)")
    layer, attr = declared[found[0]]
    lcfg = layer.config
    sub = ""
    if _kind(layer) == "TokenAndPositionEmbedding":
        sub = ".token_embedding"
        size, width = lcfg["vocabulary_size"], lcfg["embedding_dim"]
    elif _kind(layer) == "ReversibleEmbedding":
        size, width = lcfg["input_dim"], lcfg["output_dim"]
        if lcfg.get("logit_soft_cap") is not None:
            call.refuse("token_embedding", "an embedding with "
                        "logit_soft_cap is not supported as a MaskedLMHead "
                        "table")
    else:
        call.refuse("token_embedding", f"{layer.class_name} has no token "
                    "table")
    if vocab is not None and int(vocab) != int(size):
        call.refuse(f"vocabulary_size={vocab!r}", f"the token embedding "
                    f"has {size} rows")
    untied = f"{attr}{sub}.reverse_weight" in call.declared_state()
    table = f"self.{attr}{sub}.{'reverse_weight' if untied else 'weight'}"
    return table, int(width), int(size)


def _output_step(call, value) -> str:
    name = value.get("config") if isinstance(value, dict) and \
        value.get("class_name") == "function" else value
    if name == "softmax":
        return "F.softmax({}, dim=-1)"
    return activation_step(call, value)


@rule("keras_hub>MaskedLMHead", "keras_nlp>MaskedLMHead")
def masked_lm_head(call):
    """nn.Module: a `MaskedLMHead` class (gather, Dense, LayerNorm, logits)"""
    cfg = call.config
    if len(call.inputs) != 2:
        call.refuse("inputs", "the head takes hidden states and "
                    "mask_positions")
    x, positions = call.inputs
    if x.rank != 3 or positions.rank != 2:
        call.refuse("inputs", "hidden states (B, T, features) and "
                    "mask_positions (B, M) are required")
    if not positions.dtype.startswith(("int", "uint")):
        call.refuse("mask_positions", f"integer positions are required, "
                    f"not {positions.dtype}")
    x = call.want(0, identity(3))
    hidden = x.shape[-1]
    if hidden is None:
        call.refuse("inputs", "the feature size must be known")
    vocab = cfg.get("vocabulary_size")
    tied = _tied_table(call, vocab)
    eps = float(cfg.get("layer_norm_epsilon", 1e-5))
    act = activation_step(call, cfg.get("intermediate_activation", "relu"))
    out = _output_step(call, cfg.get("activation"))
    w = HubWeights(call, own=["output_bias"] if tied else
                   ["output_kernel", "output_bias"])
    base = "MaskedLMHead"
    code = _head_code(base, act, tied is not None)
    name = helper_name(call, base, code)
    if tied is not None:
        table, width, vocab = tied
        args = [str(hidden), str(width), str(vocab)]
        state = {"output_bias": stored(w.array("", 0, (vocab,)))}
        step = f"self.{call.attr}({x.expr}, {positions.expr}, {table})"
    else:
        if isinstance(vocab, bool) or not isinstance(vocab, int) \
                or vocab < 1:
            call.refuse(f"vocabulary_size={vocab!r}", "a positive size is "
                        "required without a token_embedding")
        width = hidden
        args = [str(hidden), str(vocab)]
        state = {"output_dense.weight": dense_weight(
            w.array("", 0, (hidden, vocab))),
            "output_dense.bias": stored(w.array("", 1, (vocab,)))}
        step = f"self.{call.attr}({x.expr}, {positions.expr})"
    state.update(_dense_state(w, "_intermediate_dense", "intermediate_dense",
                              hidden, width))
    state.update(_norm_state(w, "_intermediate_layer_norm",
                             "intermediate_layer_norm", width))
    if eps != 1e-5:
        args.append(f"eps={lit(eps)}")
    steps = [step]
    if out != "{}":
        steps.append(out.replace("{}", HOLE))
    return Emit([Out(steps, positions.shape + (vocab,), identity(3))],
                module=f"{name}({', '.join(args)})", state=state,
                helpers={name: code.replace(base, name, 1)})


# -- the tasks ------------------------------------------------------------
def masked_lm(cfg: dict, default_name: str, inputs: tuple, table: str,
              activation: str, sequence_key: str | None = None) -> dict:
    """A MaskedLMHead on the backbone's sequence output (``sequence_key``
    of its dict outputs, or its only output), tied to the backbone's layer
    ``table`` (``token_embedding``, or RoBERTa's ``embeddings``)."""
    entry = backbone(cfg)
    name = entry["config"]["name"]
    vocab = dim(entry["config"], "vocabulary_size")
    g = Functional(cfg, cfg.get("name") or default_name)
    refs = {n: g.input(n, (None,), "int32") for n in inputs}
    out = g.model(entry, refs)
    if sequence_key is not None:  # dict outputs, flattened sorted
        keys = sorted(["sequence_output", "pooled_output"])
        out = Ref(out.layer, out.node, keys.index(sequence_key))
    positions = g.input("mask_positions", (None,), "int32")
    logits = g.hub("MaskedLMHead", "mlm_head", {
        "vocabulary_size": vocab, TIED: f"{name}/{table}",
        "intermediate_activation": activation, "activation": "linear",
        "layer_norm_epsilon": 1e-05}, out, positions)
    return g.build(logits, dict(refs, mask_positions=positions),
                   names=["logits"])


_BERT_INPUTS = ("token_ids", "segment_ids", "padding_mask")
_ROBERTA_INPUTS = ("token_ids", "padding_mask")


def _task(name: str, *aliases: str):
    keys = [f"{pkg}>{n}" for n in (name, *aliases)
            for pkg in ("keras_hub", "keras_nlp")]
    return expander(*keys)


@_task("BertMaskedLM")
def bert_masked_lm(cfg: dict) -> dict:
    return masked_lm(cfg, "bert_masked_lm", _BERT_INPUTS, "token_embedding",
                     "gelu", "sequence_output")


@_task("RobertaMaskedLM")
def roberta_masked_lm(cfg: dict) -> dict:
    return masked_lm(cfg, "roberta_masked_lm", _ROBERTA_INPUTS, "embeddings",
                     "gelu")


@_task("XLMRobertaMaskedLM")
def xlm_roberta_masked_lm(cfg: dict) -> dict:
    return masked_lm(cfg, "xlm_roberta_masked_lm", _ROBERTA_INPUTS,
                     "embeddings", "gelu")


@_task("DistilBertMaskedLM")
def distil_bert_masked_lm(cfg: dict) -> dict:
    return masked_lm(cfg, "distil_bert_masked_lm", _ROBERTA_INPUTS,
                     "token_and_position_embedding", "gelu")


@_task("AlbertMaskedLM")
def albert_masked_lm(cfg: dict) -> dict:
    return masked_lm(cfg, "albert_masked_lm", _BERT_INPUTS,
                     "token_embedding", "keras_hub>gelu_approximate",
                     "sequence_output")


@_task("FNetMaskedLM")
def f_net_masked_lm(cfg: dict) -> dict:
    return masked_lm(cfg, "f_net_masked_lm", ("token_ids", "segment_ids"),
                     "token_embedding", "gelu", "sequence_output")
