"""keras-hub embeddings: ReversibleEmbedding, PositionEmbedding,
TokenAndPositionEmbedding.

ReversibleEmbedding (``keras.layers`` since Keras 3.12, ``keras_hub.layers``
before) is an ``nn.Embedding``; called with ``reverse=True`` (a language
model's head) it maps hidden states back to token logits with the same
table, written ``F.linear(x, self.token_embedding.weight)`` so the weights
stay tied as in Keras; ``tie_weights=False`` keeps the separate
``reverse_embeddings`` table as a parameter of the module, and
``logit_soft_cap`` (Gemma 2) becomes ``torch.tanh(logits / cap) * cap``.

PositionEmbedding is a learned table of ``sequence_length`` positions: the
first ``T`` rows, broadcast to its input's shape.
"""
from __future__ import annotations

from ...layout import channels_first, identity
from ..base import HOLE, IN, Emit, Out
from ..common import lit
from ..registry import rule
from .weights import HubWeights, input_ids, stored, transposed

REVERSIBLE_EMBEDDING = '''\
class ReversibleEmbedding(nn.Embedding):
    """A token embedding with a separate table for the way back from hidden
    states to token logits (Keras ReversibleEmbedding, tie_weights=False):
    ``F.linear(h, self.reverse_weight)`` gives the logits."""

    def __init__(self, num_embeddings, embedding_dim):
        super().__init__(num_embeddings, embedding_dim)
        self.reverse_weight = nn.Parameter(
            torch.empty(num_embeddings, embedding_dim))
'''


def _reversible_variables(cfg):
    return ["embeddings"] + ([] if cfg.get("tie_weights", True) in (
        True, None) else ["reverse_embeddings"])


@rule("ReversibleEmbedding", "keras_hub>ReversibleEmbedding",
      variables=_reversible_variables)
def reversible_embedding(call):
    """nn.Embedding; `reverse=True`: `F.linear(x, weight)`, tied logits"""
    cfg = call.config
    n, dim = int(cfg["input_dim"]), int(cfg["output_dim"])
    w = HubWeights(call, own=["embeddings", "reverse_embeddings"])
    tied = cfg.get("tie_weights", True)
    if tied is None:  # a config that does not say (keras-hub's Llama
        tied = "vars/1" not in w.arrays  # drops tie_word_embeddings)
    tied = bool(tied)
    if cfg.get("reverse_dtype") not in (None, "float32"):
        call.refuse(f"reverse_dtype={cfg['reverse_dtype']!r}",
                    "only float32 logits are supported")
    table = w.array("", 0, (n, dim))
    state = {"weight": stored(table)}
    helpers = {}
    if tied:
        module = f"nn.Embedding({n}, {dim})"
    else:
        module = f"ReversibleEmbedding({n}, {dim})"
        helpers["ReversibleEmbedding"] = REVERSIBLE_EMBEDDING
        back = w.array("", 1, (dim, n))
        state["reverse_weight"] = transposed(back)
    x = call.inputs[0]
    if call.node.kwargs.get("reverse", False) is True or (
            len(call.node.args) > 1 and call.node.args[1] is True):
        x = call.want(0, identity(x.rank))
        if x.shape[-1] not in (None, dim):
            call.refuse("inputs", f"reverse=True on features of size "
                        f"{x.shape[-1]}, the table has {dim}")
        table_code = (f"self.{call.attr}.weight" if tied
                      else f"self.{call.attr}.reverse_weight")
        code = f"F.linear({x.expr}, {table_code})"
        steps = [code]
        cap = cfg.get("logit_soft_cap")
        if cap is not None:
            cap = lit(float(cap))
            steps.append(f"torch.tanh({HOLE} / {cap}) * {cap}")
        return Emit([Out(steps, x.shape[:-1] + (n,), x.layout)],
                    module=module, state=state, helpers=helpers)
    ids = input_ids(call, x)
    out_layout = identity(x.rank + 1)
    return Emit(
        [Out([f"self.{call.attr}({ids})"], x.shape + (dim,), out_layout,
             mask=f"{IN(0)} != 0" if cfg.get("mask_zero") else None)],
        module=module, state=state, helpers=helpers)


@rule("keras_hub>PositionEmbedding", "PositionEmbedding",
      variables=lambda cfg: ["embeddings"])
def position_embedding(call):
    """nn.Embedding of positions: its first T rows, broadcast"""
    cfg = call.config
    length = int(cfg["sequence_length"])
    x = call.inputs[0]
    if x.rank < 3:
        call.refuse("inputs", "PositionEmbedding needs (B, T, features)")
    if call.node.kwargs.get("start_index", 0) not in (0, None) or \
            call.node.kwargs.get("positions") is not None:
        call.refuse("start_index/positions", "only the default positions "
                    "(0..T-1) are supported")
    if x.rank == 3 and x.layout == channels_first(3):
        # (B, features, T), after a Conv1D (Whisper): the table transposed
        dim = x.shape[-1]
        rows = f"self.{call.attr}.weight[:{x.expr}.shape[-1]].T"
    else:
        x = call.want(0, identity(x.rank))
        dim = x.shape[-1]
        rows = f"self.{call.attr}.weight[:{x.expr}.shape[-2]]"
    w = HubWeights(call, own=["embeddings"])
    table = w.array("", 0, (length, dim))
    code = f"{rows}.expand_as({x.expr})"
    return Emit([Out([code], x.shape, x.layout)],
                module=f"nn.Embedding({length}, {dim})",
                state={"weight": stored(table)})
