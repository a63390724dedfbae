"""Fit generated statements into PEP 8's 79 columns.

A long statement is broken inside its widest top-level bracket pair, black
style: the opening bracket ends the first line, the contents go on the next
lines one indent deeper (one argument per line when they still do not fit),
and the closing bracket starts the last line.  When no bracket helps (none
in the statement, or the text before it is itself too long), the right-hand
side of an assignment or ``return`` goes in parentheses, as black does,
broken before its top-level operators if it still does not fit.
"""
from __future__ import annotations

import re

LIMIT = 79
_OPEN = {"(": ")", "[": "]", "{": "}"}


def wrap(line: str, indent: int, comment: str = "") -> list[str]:
    pad = " " * indent
    if len(pad + line + comment) <= LIMIT:
        return [pad + line + comment]
    if not comment and "  # " in line:  # a trailing comment written inline
        line, _, rest = line.partition("  # ")
        comment = "  # " + rest
        if len(pad + line + comment) <= LIMIT:
            return [pad + line + comment]
    out = []
    if comment:
        out.append(pad + "# " + comment.strip().lstrip("#").strip())
    out += _split(line, indent)
    return out


_TARGET = re.compile(r"(?:[A-Za-z_][\w.]*(?:, [A-Za-z_][\w.]*)* = |return )")
_OPERATORS = (" + ", " - ", " * ", " / ", " @ ", " & ", " | ", " if ",
              " else ")


def _split(line: str, indent: int) -> list[str]:
    pad = " " * indent
    if len(pad + line) <= LIMIT:
        return [pad + line]
    span = _widest(line)
    target = _TARGET.match(line)
    if target and (span is None or len(pad + line[:span[0] + 1]) > LIMIT):
        value = line[target.end():]
        if not (value.startswith("(") and _widest(value) == (
                0, len(value) - 1)):
            return ([pad + target.group(0) + "("] + _operands(value,
                                                              indent + 4)
                    + [pad + ")"])
    if span is None:
        return [pad + line]
    start, end = span
    head, inner, tail = line[:start + 1], line[start + 1:end], line[end:]
    out = [pad + head]
    inner_pad = " " * (indent + 4)
    if len(inner_pad + inner) <= LIMIT:
        out.append(inner_pad + inner)
    else:
        parts = _commas(inner)
        for i, part in enumerate(parts):
            text = part + ("," if i < len(parts) - 1 else "")
            out += _split(text, indent + 4)
    out += _split(tail, indent)
    return out


def _widest(line: str):
    """(open, close) indices of the widest top-level bracket pair."""
    best, depth, stack, quote = None, 0, [], None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote and line[i - 1] != "\\":
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in _OPEN:
            stack.append(i)
            depth += 1
        elif ch in _OPEN.values() and stack:
            start = stack.pop()
            depth -= 1
            if depth == 0 and (best is None or i - start > best[1] - best[0]):
                best = (start, i)
    return best


def _commas(text: str) -> list[str]:
    parts, depth, quote, cur = [], 0, None, ""
    for i, ch in enumerate(text):
        if quote:
            cur += ch
            if ch == quote and text[i - 1] != "\\":
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in _OPEN:
            depth += 1
        elif ch in _OPEN.values():
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def _operands(expr: str, indent: int) -> list[str]:
    """``expr`` inside parentheses: whole when it fits, else broken before
    each top-level binary operator (the operator starts its line)."""
    pad = " " * indent
    if len(pad + expr) <= LIMIT:
        return [pad + expr]
    pieces, depth, quote, cur, i = [], 0, None, "", 0
    while i < len(expr):
        ch = expr[i]
        if quote:
            quote = None if ch == quote and expr[i - 1] != "\\" else quote
        elif ch in "'\"":
            quote = ch
        elif ch in _OPEN:
            depth += 1
        elif ch in _OPEN.values():
            depth -= 1
        elif depth == 0:
            op = next((o for o in _OPERATORS if expr.startswith(o, i)), None)
            if op is not None and cur.strip():
                pieces.append(cur)
                cur, i = op.lstrip(), i + len(op)
                continue
        cur += ch
        i += 1
    pieces.append(cur)
    if len(pieces) == 1:
        return _split(expr, indent)
    out = []
    for piece in pieces:
        out += _split(piece.strip(), indent)
    return out
