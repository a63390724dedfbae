"""Identifiers in generated code come from untrusted names."""
import keyword

from migrate.emit.names import Namespace, class_identifier, comment_text
from migrate.emit.names import identifier


def test_identifier_sanitises():
    assert identifier("conv-1/relu") == "conv_1_relu"
    assert identifier("1st") == "_1st"
    assert identifier("") == "layer"
    assert identifier("__import__('os')").isidentifier()
    assert identifier("naïve").isascii()


def test_namespace_avoids_keywords_builtins_module_attrs_and_collisions():
    ns = Namespace()
    names = [ns.name(i, t) for i, t in enumerate(
        ["class", "print", "forward", "training", "eval", "to", "a-b", "a_b",
         "a.b", "self", "F", "torch"])]
    assert len(set(names)) == len(names)
    for n in names:
        assert n.isidentifier() and not keyword.iskeyword(n)
    assert "forward" not in names and "training" not in names
    assert ns.name(6, "ignored") == names[6]  # same object, same name


def test_class_identifier():
    assert class_identifier("small_cnn") == "SmallCnn"
    assert class_identifier("3d-net") == "Model3dNet"
    assert class_identifier("") == "Model"
    assert class_identifier("Module").isidentifier()


def test_comment_text_cannot_break_out():
    text = comment_text('x"""\n__import__("os").system("id")\r\u2028')
    assert "\n" not in text and "\r" not in text and '"' not in text
    assert text.isascii()


def test_docstring_lists_outputs_by_the_names_forward_returns():
    # a layer with several outputs (GRU return_state, a CuDNN GRU) gives
    # one docstring line per returned variable, no duplicated names
    import ast

    import migrate
    from conftest import fixture_dir

    for case, name in (("k3_gru_options", "model.keras"),
                       ("k2_cudnn_rnn", "model.h5")):
        tree = ast.parse(migrate.convert(fixture_dir(case) / name).source)
        cls = [n for n in tree.body if isinstance(n, ast.ClassDef)][-1]
        doc = ast.get_docstring(cls).split("Outputs:")[1]
        listed = [line.split(":")[0].strip() for line in doc.splitlines()
                  if line.strip()]
        forward = next(n for n in cls.body if getattr(n, "name", "")
                       == "forward")
        ret = forward.body[-1].value
        returned = [e.id for e in getattr(ret, "elts", [ret])]
        assert listed == returned and len(set(listed)) == len(listed)


def test_a_layer_that_returns_its_input_adds_no_variable():
    # Activation("linear") and a Permute the layout absorbs: no
    # `same = x` lines; the parity of this fixture (test_parity) shows the
    # shared variable is not overwritten while either tensor is still used
    import re

    import migrate
    from conftest import fixture_dir

    for case, name in (("k3_same_value", "model.keras"),
                       ("k2_same_value", "model.h5")):
        source = migrate.convert(fixture_dir(case) / name).source
        forward = source.split("def forward")[1]
        assert not re.search(r"^\s+\w+ = \w+$", forward, re.M), forward
