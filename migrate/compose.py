"""Composing forward code: placeholders filled with names, expressions
put into templates with the parentheses they need."""
from __future__ import annotations

from .errors import ConversionError
from .rules.base import IN, MASK, TMP


def fill(step: str, values: list[str], masks=(), tmps=()) -> str:
    for i, v in enumerate(values):
        step = subst(step, IN(i), v)
    for i, m in enumerate(masks):
        if m is not None:
            step = step.replace(MASK(i), m)
    for k, t in enumerate(tmps):
        step = step.replace(TMP(k), t)
    if "\x03" in step:
        raise ConversionError("internal error: a rule used the mask of an "
                              "input that has none")
    return step


def subst(template: str, token: str, expr: str) -> str:
    """Put ``expr`` where ``token`` is, parenthesised unless it is atomic
    or stands alone as an argument (``f(x + y)`` but ``(x + y).flatten(1)``).
    """
    if token not in template:
        return template
    if _atomic(expr):
        return template.replace(token, expr)
    parts = template.split(token)
    out = parts[0]
    for i, rest in enumerate(parts[1:]):
        before = out.rstrip()[-1:]
        after = rest.lstrip()[:1]
        bare = before in ("", "(", "[", ",") and after in ("", ")", "]", ",")
        out += (expr if bare else f"({expr})") + rest
    return out


_OPERATORS = set(" +-*/%@<>=!&|^~")


def _atomic(expr: str) -> bool:
    """True when ``expr`` has no operator outside brackets and strings."""
    depth, quote = 0, None
    for i, ch in enumerate(expr):
        if quote:
            if ch == quote and expr[i - 1] != "\\":
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and ch in _OPERATORS:
            return False
    return True
