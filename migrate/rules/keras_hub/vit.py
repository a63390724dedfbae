"""ViT: ViTBackbone and ViTImageClassifier, as keras-hub 0.32 builds them
(``keras_hub/src/models/vit/``).

The backbone is two layers: ``ViTPatchingAndEmbedding`` (a strided
convolution into patches, the class token in front, learned position
embeddings added) and ``ViTEncoder`` (pre-norm blocks of Keras
MultiHeadAttention and a GELU MLP, then a LayerNorm), each a module class
in ``model.py``; the encoder runs its blocks in a loop.  The port takes
images channels-first, ``(B, C, H, W)``.
"""
from __future__ import annotations

from ...layout import channels_first, identity
from ...read.expand import expander
from ..base import Emit, Out, Transformed
from ..common import as_f32, lit, ntuple
from ..registry import rule
from .bert import _activation
from .config import backbone, dim, layers, number, rate
from .functional import SLICE, Functional
from .transformer import ATTENTION
from .weights import HubWeights, dense_weight, heads_bias, heads_in, \
    heads_out, stored

PATCHING = '''\
class ViTPatchingAndEmbedding(nn.Module):
    """Images (B, C, H, W) -> patch embeddings (B, patches{plus}, hidden):
    a strided convolution cuts and projects the patches{cls}; learned
    position embeddings are added."""

    def __init__(self, num_channels, hidden_dim, patch_size, num_positions,
                 bias=True):
        super().__init__(){cls_init}
        self.patch_embedding = nn.Conv2d(num_channels, hidden_dim, patch_size,
                                         stride=patch_size, bias=bias)
        self.position_embedding = nn.Embedding(num_positions, hidden_dim)

    def forward(self, images):
        x = self.patch_embedding(images).flatten(2).transpose(1, 2){cls_fw}
        return x + self.position_embedding.weight
'''

ENCODER = '''\
class ViTEncoderBlock(nn.Module):
    """keras-hub ViT block: self-attention and a GELU MLP, each on the
    layer-normalised input, added to it (pre-norm)."""

    def __init__(self, hidden_dim, num_heads, mlp_dim, eps=1e-06,
                 dropout=0.0, attention_dropout=0.0):
        super().__init__()
        self.layer_norm_1 = nn.LayerNorm(hidden_dim, eps=eps)
        self.mha = Attention(hidden_dim, num_heads, dropout=attention_dropout)
        self.layer_norm_2 = nn.LayerNorm(hidden_dim, eps=eps)
        self.mlp = nn.Sequential(nn.Linear(hidden_dim, mlp_dim), nn.GELU(),
                                 nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, hidden_dim),
                                 nn.Dropout(dropout))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        x = x + self.dropout(self.mha(self.layer_norm_1(x)))
        return x + self.mlp(self.layer_norm_2(x))


class ViTEncoder(nn.Module):
    """The ViT blocks in turn, then a LayerNorm."""

    def __init__(self, num_layers, hidden_dim, num_heads, mlp_dim,
                 eps=1e-06, dropout=0.0, attention_dropout=0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.encoder_layers = nn.ModuleList(
            ViTEncoderBlock(hidden_dim, num_heads, mlp_dim, eps, dropout,
                            attention_dropout) for _ in range(num_layers))
        self.layer_norm = nn.LayerNorm(hidden_dim, eps=eps)

    def forward(self, x):
        x = self.dropout(x)
        for block in self.encoder_layers:
            x = block(x)
        return self.layer_norm(x)
'''

_HUB = "keras_hub.src.models.vit.vit_layers"


def _conv_weight(k) -> Transformed:
    return Transformed(lambda x: as_f32(x.transpose(3, 2, 0, 1)), [k],
                       "(kh, kw, in, out) -> (out, in, kh, kw)")


def _patch_layout(cfg, rank):
    if cfg.get("data_format") == "channels_first":
        return identity(rank)
    return channels_first(rank)


@rule("keras_hub>ViTPatchingAndEmbedding", prefers=_patch_layout)
def vit_patching(call):
    """nn.Module: a `ViTPatchingAndEmbedding` class (Conv2d patches)"""
    cfg = call.config
    if call.inputs[0].rank != 4:
        call.refuse("inputs", "images (B, H, W, C) are required")
    fmt = cfg.get("data_format") or "channels_last"
    x = call.want(0, _patch_layout(cfg, 4))
    hidden = dim(cfg, "hidden_dim")
    size = ntuple(cfg["image_size"], 2, "image_size")
    patch = ntuple(cfg["patch_size"], 2, "patch_size")
    channels = dim(cfg, "num_channels", 3)
    token = bool(cfg.get("use_class_token", True))
    bias = bool(cfg.get("use_patch_bias", True))
    spatial = x.shape[1:3] if fmt == "channels_last" else x.shape[2:4]
    if tuple(spatial) != size:
        call.refuse("inputs", f"images of size {tuple(spatial)}, the "
                    f"layer was built for {size}")
    patches = (size[0] // patch[0]) * (size[1] // patch[1])
    positions = patches + (1 if token else 0)
    w = HubWeights(call, own=["class_token"])
    state = {"patch_embedding.weight": _conv_weight(w.array(
        "patch_embedding", 0, (*patch, channels, hidden)))}
    if bias:
        state["patch_embedding.bias"] = stored(w.array("patch_embedding", 1,
                                                       (hidden,)))
    state["position_embedding.weight"] = stored(w.array(
        "position_embedding", 0, (positions, hidden)))
    if token:
        state["class_token"] = stored(w.array("", 0, (1, 1, hidden)))
    code = PATCHING.replace("{plus}", " + 1" if token else "").replace(
        "{cls}", ",\n    the class token goes in front" if token
        else "").replace(
        "{cls_init}", "\n        self.class_token = nn.Parameter("
        "torch.zeros(1, 1, hidden_dim))" if token else "").replace(
        "{cls_fw}", "\n        token = self.class_token.expand(x.shape[0], "
        "-1, -1)\n        x = torch.cat([token, x], dim=1)" if token else "")
    args = [str(channels), str(hidden), lit(patch if patch[0] != patch[1]
                                            else patch[0]), str(positions)]
    if not bias:
        args.append("bias=False")
    return Emit([Out([f"self.{call.attr}({x.expr})"],
                     (x.shape[0], positions, hidden), identity(3))],
                module=f"ViTPatchingAndEmbedding({', '.join(args)})",
                state=state, helpers={"ViTPatchingAndEmbedding": code})


@rule("keras_hub>ViTEncoder")
def vit_encoder(call):
    """nn.Module: a `ViTEncoder` class looping `ViTEncoderBlock`s (SDPA)"""
    cfg = call.config
    x = call.want(0, identity(3))
    n = layers(cfg)
    hidden, heads = dim(cfg, "hidden_dim"), dim(cfg, "num_heads")
    mlp = dim(cfg, "mlp_dim")
    if x.shape[-1] != hidden:
        call.refuse("inputs", f"features {x.shape[-1]}, hidden_dim {hidden}")
    if not (cfg.get("use_mha_bias", True) and cfg.get("use_mlp_bias", True)):
        call.refuse("use_mha_bias/use_mlp_bias=False", "not supported yet")
    eps = number(cfg, "layer_norm_epsilon", 1e-6)
    dropout, att = rate(cfg, "dropout_rate"), rate(cfg, "attention_dropout")
    head_dim = hidden // heads
    w = HubWeights(call)
    state = {}
    for i in range(n):
        block = "encoder_layers/vi_t_encoder_block" + (f"_{i}" if i else "")
        at = f"encoder_layers.{i}"
        for part, names in (("query", "query_dense"), ("key", "key_dense"),
                            ("value", "value_dense")):
            sub = f"{block}/mha/{names}"
            state[f"{at}.mha.{part}.weight"] = heads_in(
                w.array(sub, 0, (hidden, heads, head_dim)))
            state[f"{at}.mha.{part}.bias"] = heads_bias(
                w.array(sub, 1, (heads, head_dim)))
        sub = f"{block}/mha/output_dense"
        state[f"{at}.mha.attention_output.weight"] = heads_out(
            w.array(sub, 0, (heads, head_dim, hidden)))
        state[f"{at}.mha.attention_output.bias"] = stored(
            w.array(sub, 1, (hidden,)))
        for norm in ("layer_norm_1", "layer_norm_2"):
            for j, p in enumerate(("weight", "bias")):
                state[f"{at}.{norm}.{p}"] = stored(
                    w.array(f"{block}/{norm}", j, (hidden,)))
        for dense, idx, shape in (("dense_1", 0, (hidden, mlp)),
                                  ("dense_2", 3, (mlp, hidden))):
            sub = f"{block}/mlp/{dense}"
            state[f"{at}.mlp.{idx}.weight"] = dense_weight(
                w.array(sub, 0, shape))
            state[f"{at}.mlp.{idx}.bias"] = stored(
                w.array(sub, 1, shape[1:]))
    for j, p in enumerate(("weight", "bias")):
        state[f"layer_norm.{p}"] = stored(w.array("layer_norm", j,
                                                  (hidden,)))
    args = [str(n), str(hidden), str(heads), str(mlp)]
    if eps != 1e-6:
        args.append(f"eps={lit(eps)}")
    if dropout:
        args.append(f"dropout={lit(dropout)}")
    if att:
        args.append(f"attention_dropout={lit(att)}")
    return Emit([Out([f"self.{call.attr}({x.expr})"], x.shape, identity(3))],
                module=f"ViTEncoder({', '.join(args)})", state=state,
                helpers={"Attention": ATTENTION, "ViTEncoder": ENCODER})


@expander("keras_hub>ViTBackbone")
def vit_backbone(cfg: dict) -> dict:
    shape = cfg.get("image_shape")
    if not isinstance(shape, list) or len(shape) != 3:
        raise ValueError(f"image_shape = {shape!r} is not (H, W, C)")
    fmt = cfg.get("data_format") or "channels_last"
    h, w_, c = (shape if fmt == "channels_last"
                else [shape[1], shape[2], shape[0]])
    for v in (h, w_, c):
        dim({"d": v}, "d")
    patch = cfg.get("patch_size")
    patch = [patch, patch] if isinstance(patch, int) else patch
    g = Functional(cfg, "vi_t_backbone")
    images = g.input("images", tuple(shape), "float32")
    common = {k: cfg[k] for k in ("hidden_dim",) if k in cfg}
    x = g.layer("ViTPatchingAndEmbedding", "vit_patching_and_embedding", {
        **common, "image_size": [h, w_], "patch_size": patch,
        "num_channels": c, "use_class_token": cfg.get("use_class_token",
                                                      True),
        "use_patch_bias": cfg.get("use_patch_bias", True),
        "data_format": fmt}, images, module=_HUB,
        registered="keras_hub>ViTPatchingAndEmbedding")
    keys = ("num_layers", "num_heads", "hidden_dim", "mlp_dim",
            "dropout_rate", "attention_dropout", "layer_norm_epsilon",
            "use_mha_bias", "use_mlp_bias")
    x = g.layer("ViTEncoder", "vit_encoder",
                {k: cfg[k] for k in keys if k in cfg}, x, module=_HUB,
                registered="keras_hub>ViTEncoder")
    return g.build(x, images)


@expander("keras_hub>ViTImageClassifier")
def vit_image_classifier(cfg: dict) -> dict:
    entry = backbone(cfg)
    g = Functional(cfg, cfg.get("name") or "vi_t_image_classifier")
    shape = entry["config"].get("image_shape")
    if not isinstance(shape, list) or len(shape) != 3:
        raise ValueError(f"image_shape = {shape!r} is not (H, W, C)")
    images = g.input("images", tuple(shape), "float32")
    x = g.model(entry, images)
    pooling = cfg.get("pooling", "token")
    if pooling == "token":
        x = g.op("GetItem", x, [SLICE, 0])
    elif pooling == "gap":  # every token, the class token included
        x = g.op("Mean", x, options={"axis": [1], "keepdims": False})
    else:
        raise ValueError(f"pooling = {pooling!r}: only 'token' and 'gap' "
                         "are supported")
    if cfg.get("intermediate_dim") is not None:
        x = g.layer("Dense", "pre_logits", {
            "units": dim(cfg, "intermediate_dim"), "activation": "tanh"}, x)
    x = g.layer("Dropout", "output_dropout", {"rate": rate(cfg)}, x)
    x = g.layer("Dense", "predictions", {
        "units": dim(cfg, "num_classes"), "activation": _activation(cfg)}, x)
    return g.build(x, images)
