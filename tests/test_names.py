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
