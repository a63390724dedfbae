"""keras-hub layers of the encoder family: TokenAndPositionEmbedding,
SinePositionEncoding and FNetEncoder, each a small module class written
once into ``model.py``.

TokenAndPositionEmbedding is a token embedding plus the first ``T`` rows
of a learned position table; its Keras mask (``mask_zero``) is the token
embedding's.  With ``tie_weights=False`` its token embedding keeps the
separate reverse table (unused by the layer's own call, but a variable of
the file, so a parameter of the port).

SinePositionEncoding computes the fixed sinusoidal encoding of
``keras_hub/src/layers/modeling/sine_position_encoding.py``: feature ``i``
has timescale ``(1 / max_wavelength) ** (2 * (i // 2) / D)``, sine at even
features and cosine at odd ones, broadcast to the input's shape.

FNetEncoder mixes tokens with the real part of a 2D Fourier transform over
the sequence and feature axes (``torch.fft.fft2``), then a feedforward
network, each added to its input and layer-normalised (post-norm).
"""
from __future__ import annotations

from ...layout import identity
from ..base import IN, Emit, Out
from ..common import lit
from ..registry import rule
from .embeddings import REVERSIBLE_EMBEDDING
from .transformer import (_dense_state, _fold, _norm_state, activation_step,
                          helper_name)
from .weights import HubWeights, input_ids, stored, transposed

TOKEN_AND_POSITION = '''\
class TokenAndPositionEmbedding(nn.Module):
    """Token embedding plus a learned position embedding (keras-hub
    TokenAndPositionEmbedding): ``token_ids`` (B, T) -> (B, T, dim)."""

    def __init__(self, vocabulary_size, sequence_length, embedding_dim):
        super().__init__()
        self.token_embedding = {embedding}(vocabulary_size, embedding_dim)
        self.position_embedding = nn.Embedding(sequence_length,
                                               embedding_dim)

    def forward(self, token_ids):
        x = self.token_embedding(token_ids)
        return x + self.position_embedding.weight[:x.shape[-2]]
'''


def _token_and_position_code(tied: bool) -> str:
    embedding = "nn.Embedding" if tied else "ReversibleEmbedding"
    code = TOKEN_AND_POSITION.format(embedding=embedding)
    return "\n".join(_fold(code.splitlines())) + "\n"


@rule("keras_hub>TokenAndPositionEmbedding",
      "keras_nlp>TokenAndPositionEmbedding")
def token_and_position_embedding(call):
    """nn.Module: token + position `nn.Embedding`s, the first T positions"""
    cfg = call.config
    vocab = int(cfg["vocabulary_size"])
    length = int(cfg["sequence_length"])
    width = int(cfg["embedding_dim"])
    tied = bool(cfg.get("tie_weights", True))
    if call.node.kwargs.get("start_index", 0) not in (0, None) or \
            call.node.kwargs.get("positions") is not None:
        call.refuse("start_index/positions", "only the default positions "
                    "(0..T-1) are supported")
    x = call.inputs[0]
    if x.rank != 2:
        call.refuse("inputs", "token ids of shape (B, T) are required")
    w = HubWeights(call)
    table = w.array("token_embedding", 0, (vocab, width))
    positions = w.array("position_embedding", 0, (length, width))
    state = {"token_embedding.weight": stored(table),
             "position_embedding.weight": stored(positions)}
    helpers = {}
    if not tied:
        back = w.array("token_embedding", 1, (width, vocab))
        state["token_embedding.reverse_weight"] = transposed(back)
        helpers["ReversibleEmbedding"] = REVERSIBLE_EMBEDDING
    base = "TokenAndPositionEmbedding"
    code = _token_and_position_code(tied)
    name = helper_name(call, base, code)
    helpers[name] = code.replace(base, name, 1)
    ids = input_ids(call, x)
    return Emit(
        [Out([f"self.{call.attr}({ids})"], x.shape + (width,), identity(3),
             mask=f"{IN(0)} != 0" if cfg.get("mask_zero") else None)],
        module=f"{name}({vocab}, {length}, {width})", state=state,
        helpers=helpers)


SINE_POSITION_ENCODING = '''\
class SinePositionEncoding(nn.Module):
    """Fixed sinusoidal position encoding (keras-hub SinePositionEncoding):
    sine at even features, cosine at odd ones, with wavelengths from 2*pi
    to ``max_wavelength``; broadcast to the shape of ``x`` (B, T, D)."""

    def __init__(self, max_wavelength=10000.0):
        super().__init__()
        self.max_wavelength = max_wavelength

    def forward(self, x):
        T, D = x.shape[-2], x.shape[-1]
        positions = torch.arange(T, device=x.device).to(x.dtype)
        i = torch.arange(D, device=x.device)
        min_freq = torch.tensor(1 / self.max_wavelength, dtype=x.dtype)
        timescales = min_freq ** ((2 * (i // 2)).to(x.dtype) / D)
        angles = positions[:, None] * timescales  # (T, D)
        encoding = torch.where(i % 2 == 0, angles.sin(), angles.cos())
        return encoding.expand_as(x)
'''


@rule("keras_hub>SinePositionEncoding", "keras_nlp>SinePositionEncoding")
def sine_position_encoding(call):
    """nn.Module: the sinusoidal encoding computed from T and D"""
    cfg = call.config
    wavelength = cfg.get("max_wavelength", 10000)
    if isinstance(wavelength, bool) or not isinstance(
            wavelength, (int, float)) or not wavelength > 0:
        call.refuse(f"max_wavelength={wavelength!r}", "a positive number "
                    "is required")
    if call.node.kwargs.get("start_index", 0) not in (0, None) or \
            call.node.kwargs.get("positions") is not None:
        call.refuse("start_index/positions", "only the default positions "
                    "(0..T-1) are supported")
    x = call.inputs[0]
    if x.rank != 3:
        call.refuse("inputs", "SinePositionEncoding needs (B, T, features)")
    if not x.dtype.startswith("float"):
        call.refuse("inputs", f"a float input is required, not {x.dtype}")
    x = call.want(0, identity(3))
    arg = "" if float(wavelength) == 10000.0 else lit(float(wavelength))
    return Emit([Out([f"self.{call.attr}({x.expr})"], x.shape, x.layout,
                     dtype=x.dtype)],
                module=f"SinePositionEncoding({arg})",
                helpers={"SinePositionEncoding": SINE_POSITION_ENCODING})


def _fnet_code(name: str, act: str) -> str:
    h = "self.intermediate_dense(x)"
    h = act.replace("{}", h)
    lines = [
        f"class {name}(nn.Module):",
        '    """keras-hub FNetEncoder: the real part of a 2D Fourier '
        'transform',
        "    over the sequence and feature axes mixes the tokens, then a",
        "    feedforward network; each is added to its input and layer-",
        '    normalised (post-norm)."""',
        "",
        "    def __init__(self, hidden_dim, intermediate_dim, eps=1e-05, "
        "dropout=0.0):",
        "        super().__init__()",
        "        self.mixing_layer_norm = nn.LayerNorm(hidden_dim, eps=eps)",
        "        self.intermediate_dense = nn.Linear(hidden_dim, "
        "intermediate_dim)",
        "        self.output_dense = nn.Linear(intermediate_dim, hidden_dim)",
        "        self.output_dropout = nn.Dropout(dropout)",
        "        self.output_layer_norm = nn.LayerNorm(hidden_dim, eps=eps)",
        "",
        "    def forward(self, x):",
        "        x = self.mixing_layer_norm(x + torch.fft.fft2(x).real)",
        f"        h = {h}",
        "        h = self.output_dropout(self.output_dense(h))",
        "        return self.output_layer_norm(x + h)",
    ]
    return "\n".join(_fold(lines)) + "\n"


@rule("keras_hub>FNetEncoder", "keras_nlp>FNetEncoder")
def f_net_encoder(call):
    """nn.Module: an `FNetEncoder` block class, mixing by `torch.fft.fft2`"""
    cfg = call.config
    x = call.inputs[0]
    if x.rank != 3:
        call.refuse("inputs", "a (B, T, features) sequence is required")
    x = call.want(0, identity(3))
    hidden = x.shape[-1]
    if hidden is None:
        call.refuse("inputs", "the feature size must be known")
    inter = int(cfg["intermediate_dim"])
    eps = float(cfg.get("layer_norm_epsilon", 1e-5))
    dropout = float(cfg.get("dropout") or 0.0)
    act = activation_step(call, cfg.get("activation", "relu"))
    base = "FNetEncoder"
    code = _fnet_code(base, act)
    name = helper_name(call, base, code)
    w = HubWeights(call)
    state = {}
    state.update(_norm_state(w, "_mixing_layer_norm", "mixing_layer_norm",
                             hidden))
    state.update(_dense_state(w, "_intermediate_dense", "intermediate_dense",
                              hidden, inter))
    state.update(_dense_state(w, "_output_dense", "output_dense", inter,
                              hidden))
    state.update(_norm_state(w, "_output_layer_norm", "output_layer_norm",
                             hidden))
    args = [str(hidden), str(inter)]
    if eps != 1e-5:
        args.append(f"eps={lit(eps)}")
    if dropout:
        args.append(f"dropout={lit(dropout)}")
    return Emit([Out([f"self.{call.attr}({x.expr})"], x.shape, x.layout)],
                module=f"{name}({', '.join(args)})", state=state,
                helpers={name: code.replace(base, name, 1)})
