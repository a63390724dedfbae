"""Folding repeated blocks (migrate/fold.py): the folded port computes the
flat port's bits, its state-dict keys follow the module tree, runs of one
module called the same way become an nn.ModuleList loop, and folding is
found from the data flow, not from layer names."""
import re

import numpy as np
import pytest
import torch

import migrate
from migrate.fold import fold
from migrate.layout import identity
from migrate.translate import ModuleDecl, PortTensor, Program

from conftest import MODELS, model_files
from test_parity import CUSTOM_RULES, load_reference, port_inputs

CASES = sorted(d for d in MODELS.iterdir() if (d / "case.json").exists())


def _program(body, modules, returns, inputs=(("x", "float32"),),
             helpers=None, bool_vars=()):
    state = {}
    for attr, _ in modules:
        state[f"{attr}.weight"] = lambda: None
    return Program(
        model_name="m", class_name="M",
        inputs=[PortTensor(n, n, (None, 4, 8), identity(3), dt)
                for n, dt in inputs],
        outputs=[PortTensor(r, r, (None, 4, 8), identity(3), "float32")
                 for r in returns],
        modules=[ModuleDecl(a, c, a) for a, c in modules], body=list(body),
        returns=list(returns), state=state, helpers=helpers or {},
        layers=[], warnings=[], permutes=[], layout="torch",
        bool_vars=set(bool_vars))


def test_a_run_of_helper_calls_becomes_a_module_list_loop():
    """x = self.transformer_layer_0(x, padding_mask) ... (one helper module
    per layer, as the keras-hub rules emit them) -> one ModuleList and a
    loop; identical constructors are written once."""
    n = 12
    modules = [(f"transformer_layer_{i}",
                "TransformerDecoder(64, 4, 128, eps=1e-05)")
               for i in range(n)]
    body = ["padding_mask = x != 0", "x = self.embed(x)"]
    modules.insert(0, ("embed", "nn.Embedding(100, 64)"))
    for i in range(n):
        body.append(f"x = self.transformer_layer_{i}(x, padding_mask)")
    body.append("logits = self.head(x)")
    modules.append(("head", "nn.Linear(64, 100)"))
    p = _program(body, modules, ["logits"], inputs=[("x", "int32")],
                 bool_vars={"padding_mask"})
    q = fold(p, p.bool_vars)
    decls = {m.attr: m.code for m in q.modules}
    assert decls["transformer_layers"] == (
        "nn.ModuleList([TransformerDecoder(64, 4, 128, eps=1e-05) "
        "for _ in range(12)])")
    assert q.body == ["padding_mask = x != 0", "x = self.embed(x)",
                      "for layer in self.transformer_layers:\n"
                      "    x = layer(x, padding_mask)",
                      "logits = self.head(x)"]
    assert q.renames["transformer_layer_3.weight"] == \
        "transformer_layers.3.weight"
    assert set(q.state) == {q.renames.get(k, k) for k in p.state}


def test_an_encoder_decoder_folds_both_stacks():
    """The decoder's ids embedded early (Keras's order) and the encoder
    output read by every decoder layer: the lookup moves down to its first
    use, the encoder output and the reshaped mask are read as masks are,
    and both stacks loop."""
    modules = [("embed", "nn.Embedding(100, 8)")]
    body = ["h = self.embed(src)", "x = self.embed(tgt)",
            "m = src_mask[:, None]"]
    for i in range(3):
        modules.append((f"enc_{i}", "EncoderBlock(8)"))
        body.append(f"h = self.enc_{i}(h, m)")
    for i in range(3):
        modules.append((f"dec_{i}", "DecoderBlock(8)"))
        body.append(f"x = self.dec_{i}(x, h, m)")
    p = _program(body, modules, ["x"], inputs=[
        ("src", "int32"), ("src_mask", "int32"), ("tgt", "int32")])
    q = fold(p, p.bool_vars)
    assert q.body == ["m = src_mask[:, None]", "h = self.embed(src)",
                      "for layer in self.encs:\n    h = layer(h, m)",
                      "x = self.embed(tgt)",
                      "for layer in self.decs:\n    x = layer(x, h, m)"]
    loops = [m.code for m in q.modules if "ModuleList" in m.code]
    assert loops == ["nn.ModuleList([EncoderBlock(8) for _ in range(3)])",
                     "nn.ModuleList([DecoderBlock(8) for _ in range(3)])"]


def test_differing_constructors_are_listed():
    body = [f"x_{i + 1} = self.block_{i}(x_{i}, x_{i})" for i in range(4)]
    modules = [(f"block_{i}", f"MultiHeadAttention(32, num_heads={i + 1}, "
                "key_dim=8)") for i in range(4)]
    p = _program(body, modules, ["x_4"], inputs=[("x_0", "float32")])
    q = fold(p)
    (decl,) = q.modules
    assert decl.attr == "blocks"
    assert decl.code.startswith("nn.ModuleList([MultiHeadAttention(32, "
                                "num_heads=1, key_dim=8), ")
    assert q.body == ["for layer in self.blocks:\n    x_0 = layer(x_0, "
                      "x_0)"]
    assert q.returns == ["x_0"] and q.outputs[0].var == "x_0"


def test_calls_with_other_arguments_are_not_one_run():
    """Only calls with the same other arguments share a loop."""
    body = ["m = x != 0", "n = x > 0",
            "x = self.a(x, m)", "x = self.b(x, n)"]
    p = _program(body, [("a", "Block(4)"), ("b", "Block(4)")], ["x"],
                 bool_vars={"m", "n"})
    assert fold(p).body == p.body


def test_nothing_repeats_nothing_changes():
    body = ["x = self.a(x)", "x = F.relu(self.b(x))"]
    p = _program(body, [("a", "nn.Linear(8, 8)"), ("b", "nn.Linear(8, 8)")],
                 ["x"])
    q = fold(p)
    assert q.body == p.body and q.modules == p.modules and not q.classes


def _convert(case_dir, model, weights, flat):
    return migrate.convert(model, weights, flat=flat,
                           rules=CUSTOM_RULES.get(case_dir.name))


@pytest.mark.parametrize("case_dir", [pytest.param(d, id=d.name)
                                      for d in CASES])
def test_folded_port_gives_the_flat_ports_bits(case_dir):
    """Every fixture: the same outputs bit for bit in eval, and every
    weight under its folded key."""
    _, model, weights = model_files(case_dir)[0]
    try:
        flat = _convert(case_dir, model, weights, True)
    except migrate.ConversionError as exc:  # needs rules test_parity lacks
        pytest.skip(f"does not convert on its own: {str(exc)[:80]}")
    folded = _convert(case_dir, model, weights, False)
    assert "--flat" not in folded.source
    renames = folded.program.renames
    fs, gs = flat.state_dict, folded.state_dict
    assert set(gs) == {renames.get(k, k) for k in fs}
    for k in fs:
        assert torch.equal(fs[k], gs[renames.get(k, k)]), k
    inputs, _ = load_reference(case_dir)
    a, b = flat.module(), folded.module()
    args = [torch.from_numpy(x).permute(*t.layout.perm) for x, t in
            zip(port_inputs(flat, inputs), flat.program.inputs)]
    with torch.no_grad():
        want, got = a(*args), b(*args)
    want = want if isinstance(want, tuple) else (want,)
    got = got if isinstance(got, tuple) else (got,)
    assert len(want) == len(got)
    for w, g in zip(want, got):
        assert torch.equal(w, g) or (
            torch.isnan(w).any() and np.array_equal(
                w.numpy(), g.numpy(), equal_nan=True))
    flat.close()
    folded.close()


def test_flat_header_names_the_option():
    case = MODELS / "k3_mlp"
    _, model, weights = model_files(case)[0]
    with migrate.convert(model, weights, flat=True) as conv:
        assert re.search(r"^# Regenerate: .* --flat$", conv.source, re.M)


def test_blocks_are_found_without_meaningful_names():
    """Residual blocks named l0, l1, ... fold as well: one class, found
    from the data flow; its submodules named by kind."""
    body, modules, k = [], [], 0
    for i in range(4):
        a, b, c = f"l{k}", f"l{k + 1}", f"l{k + 2}"
        k += 3
        body += [f"t{i} = self.{a}(x)", f"t{i} = F.relu(self.{b}(t{i}))",
                 f"t{i} = self.{c}(t{i})", f"x = F.relu(x + t{i})"]
        modules += [(a, "nn.Conv2d(8, 8, kernel_size=3, padding=1)"),
                    (b, "nn.BatchNorm2d(8, eps=0.001)"),
                    (c, "nn.Conv2d(8, 8, kernel_size=1)")]
    p = _program(body, modules, ["x"])
    q = fold(p)
    (cls,) = q.classes
    assert cls.startswith("class ResidualBlock(nn.Module):")
    assert "identity = x" in cls and "x + " not in cls.split("identity")[0]
    assert [m.code for m in q.modules] == [
        "nn.Sequential(*[ResidualBlock() for _ in range(4)])"]
    assert q.body == ["x = self.blocks(x)"]
    assert q.renames["l4.weight"] == "blocks.1.bn.weight"


@pytest.fixture(scope="module")
def inverted_residuals():
    case = MODELS / "k3_inverted_residuals"
    _, model, weights = model_files(case)[0]
    inputs, _ = load_reference(case)
    x = torch.from_numpy(inputs[0]).permute(0, 3, 1, 2).contiguous()
    flat = migrate.convert(model, weights, flat=True)
    folded = migrate.convert(model, weights)
    with torch.no_grad():
        want = flat.module()(x)
    return folded, x, want


def test_blocks_with_optional_parts_are_one_class(inverted_residuals):
    """Blocks with and without the residual add, the dropout before it
    and the stride-2 pad: one class, each part under its option (a module
    that may be absent is None), still the flat port's bits."""
    folded, x, want = inverted_residuals
    src = folded.source
    assert src.count("\nclass ") == 3  # SharedDropout, Block, the model
    assert "    if self.use_res_connect:\n            x = x + identity" \
        in src
    assert "        if self.drop is not None:\n            x = self.drop(x)" \
        in src
    assert "        if self.pad:\n            x = F.pad(x, (0, 1, 0, 1))" \
        in src
    assert "        self.drop = None\n        if p is not None:\n" in src
    assert "Block(8, 32, 2, 0, 12, pad=True, use_res_connect=False)" in src
    with torch.no_grad():
        assert torch.equal(folded.module()(x), want)


def test_optional_parts_survive_torch_export(inverted_residuals):
    folded, x, want = inverted_residuals
    ep = torch.export.export(folded.module(), (x,))
    torch.testing.assert_close(ep.module()(x), want, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_optional_parts_survive_torch_compile(inverted_residuals):
    folded, x, want = inverted_residuals
    with torch.no_grad():
        got = torch.compile(folded.module())(x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


# -- names (issue 14, section 3) ---------------------------------------------
def test_a_sequence_of_unknown_length_is_t_in_shapes():
    from migrate.emit.names import shape_text
    assert shape_text((None, None, 64)) == "(B, T, 64)"
    assert shape_text((None, None)) == "(B, T)"
    assert shape_text((None, 3, None, None)) == "(B, 3, ?, ?)"


def test_the_first_position_of_a_sequence_is_the_cls_token():
    """x[:, 0] of a (B, T, C) tensor, named only by its op (get_item),
    is BERT's cls_token; any other slice, or a layer the user named,
    keeps its name."""
    from types import SimpleNamespace as NS
    from migrate.rules.base import IN
    from migrate.translate import _role_name
    seq = NS(shape=(None, 8, 4), layout=identity(3))

    def role(name, step, shape=(None, 4), src=seq):
        node = NS(layer=NS(keras_name=name), inputs=["r"])
        return _role_name(node, NS(steps=[IN(0) + step], shape=shape),
                          {"r": src})
    assert role("get_item", "[:, 0]") == "cls_token"
    assert role("get_item_3", "[:, 0]") == "cls_token"
    assert role("first_token", "[:, 0]") is None
    assert role("get_item", "[:, -1]") is None
    assert role("get_item", "[:, 0]", src=NS(shape=(None, 8, 4, 4),
                                             layout=identity(4))) is None


def test_the_forward_names_the_main_path_x():
    """After a folded run the value keeps its input's name (x =
    self.blocks(x)), and so do the flat lines that continue it."""
    body, modules, k = [], [], 0
    for i in range(4):
        a, b, c = f"l{k}", f"l{k + 1}", f"l{k + 2}"
        k += 3
        body += [f"t{i} = self.{a}(x)", f"t{i} = F.relu(self.{b}(t{i}))",
                 f"t{i} = self.{c}(t{i})", f"x = F.relu(x + t{i})"]
        modules += [(a, "nn.Conv2d(8, 8, kernel_size=3, padding=1)"),
                    (b, "nn.BatchNorm2d(8, eps=0.001)"),
                    (c, "nn.Conv2d(8, 8, kernel_size=1)")]
    body[-1] = "head = F.relu(x + t3)"
    body += ["head = self.top(head)", "out = F.softmax(head, dim=1)"]
    modules.append(("top", "nn.Conv2d(8, 4, kernel_size=1)"))
    p = _program(body, modules, ["out"])
    q = fold(p)
    assert q.body == ["x = self.blocks(x)", "x = self.top(x)",
                      "out = F.softmax(x, dim=1)"], q.body
