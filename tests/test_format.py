from migrate.emit.format import LIMIT, wrap


def test_short_line_unchanged():
    assert wrap("x = self.conv(x)", 8) == ["        x = self.conv(x)"]


def test_long_line_wrapped_within_limit():
    line = ("x = torch.cat([branch_one, branch_two, branch_three, branch_four,"
            " branch_five, branch_six], dim=1)")
    lines = wrap(line, 8)
    assert len(lines) > 1
    assert all(len(ln) <= LIMIT for ln in lines)
    compile("\n".join(ln[8:] if ln.startswith(" " * 8) else ln
                      for ln in lines), "t", "exec")


def test_comment_moves_above_when_too_long():
    lines = wrap("self.a_rather_long_layer_name = nn.Linear(1000, 1000)", 8,
                 "  # Keras: 'a rather long layer name with spaces'")
    assert lines[0].strip().startswith("# Keras:")
    assert all(len(ln) <= LIMIT for ln in lines)


def test_long_line_without_a_useful_bracket_is_parenthesised():
    """kecam's long layer names: no bracket at all, or the text before the
    bracket is itself too long -- black's parentheses, operators first."""
    line = ("stack2_block1_deep_1_conv = stack2_block1_deep_1_conv"
            " * tf_math_reduce_mean_1")
    assert wrap(line, 8) == [
        "        stack2_block1_deep_1_conv = (",
        "            stack2_block1_deep_1_conv * tf_math_reduce_mean_1",
        "        )"]
    long = ("stage_1_block_0_dark_block_conv_1_output = "
            "stage_1_block_0_dark_block_conv_1_output_name"
            " + stage_1_block_0_dark_block_conv_2_output_name"
            " * stage_1_block_0_dark_block_conv_3")
    out = wrap(long, 8)
    assert all(len(x) <= 79 for x in out), out
    assert out[0].endswith("= (") and out[-1] == "        )"
    assert out[2].lstrip().startswith("+ ") and out[3].lstrip().startswith(
        "* ")
    head = ("stage_1_block_0_dark_block_conv_1 = "
            "self.stage_1_block_0_dark_block_conv_1_with_long_name(x, y)")
    out = wrap(head, 8)
    assert all(len(x) <= 79 for x in out), out
    compile("\n".join(x[8:] for x in out), "m", "exec")
