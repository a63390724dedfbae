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
