"""Errors the converter raises on purpose.  Each carries one clear line."""
from __future__ import annotations


class ConversionError(Exception):
    """Bad or unsupported input: the message is one line meant for users.

    Messages quote names and values from the model file, so control
    characters in them (newlines, terminal escapes) are shown escaped:
    the message stays one line and cannot rewrite the terminal."""

    def __init__(self, message="", *args):
        super().__init__(one_line(str(message)), *args)


class UnsupportedLayers(ConversionError):
    """One or more layers have no rule, or a rule refuses their options.

    ``problems`` lists ``(layer_name, class_name, reason)`` for every one,
    so a user sees all of them at once, not only the first.
    """

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = problems
        counts: dict[str, int] = {}
        for _, cls, _ in problems:
            counts[cls] = counts.get(cls, 0) + 1
        summary = ", ".join(f"{cls} x{n}" for cls, n in counts.items())
        first = "; ".join(f"{name!r} ({cls}): {why}"
                          for name, cls, why in problems[:5])
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        super().__init__(
            f"{len(problems)} layer(s) cannot be converted [{summary}]: "
            f"{first}{more}. Register a custom rule for them: "
            f"`keras2torch rules new MODEL` writes a rule file to fill in "
            f"(see README, 'Custom rules').")


# Layer classes that carry Python code in the model file.  Their code is
# never decoded, let alone run (README, "Security"); only a custom rule can
# say what they compute.
CODE_LAYERS = {
    "Lambda": "a Lambda layer holds Python bytecode, which keras2torch never "
              "decodes or runs; write a custom rule for what it computes "
              "(`keras2torch rules new MODEL --layer NAME` writes one to "
              "fill in)",
}


def no_rule_reason(class_name: str) -> str:
    """Why a layer without a rule is refused (one line)."""
    return CODE_LAYERS.get(class_name, "no rule for this layer class "
                           "(`keras2torch rules new MODEL` writes one to "
                           "fill in)")


def one_line(text: str) -> str:
    """``text`` with control characters escaped (``"a\\nb"``)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1]
                   for ch in text)
