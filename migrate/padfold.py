"""Zero padding read only by a ``valid`` convolution or pooling goes into
that layer's ``padding=`` (torchvision's ``nn.Conv2d(3, 64, 7, stride=2,
padding=3)``), where torch pads the same way.

A statement ``v = F.pad(u, (a, a, b, b))`` (Keras's ``ZeroPadding2D``;
1D and 3D alike) whose value only the next statement reads, once, or a
``F.pad(u, ...)`` written inside that statement, folds when the pad is
symmetric in every padded axis, covers exactly the spatial axes, and the
reader is

* a convolution module declared without ``padding`` (torch pads with
  zeros, as Keras's ZeroPadding does);
* ``F.avg_pool*d(..)`` without ``padding``: ``count_include_pad`` is
  torch's default, so the zeros count, as they do in Keras;
* ``F.max_pool*d(..)`` without ``padding`` over an input known to be >= 0
  (``F.relu``/``F.relu6`` written as its outermost call): torch pads with
  -inf, Keras's zeros; each window holds a real value (torch requires
  ``padding <= kernel_size // 2``), whose max is then >= 0 either way.

Anything else (asymmetric, a pad torch refuses, an unknown reader) stays
``F.pad``.  The weights do not change.
"""
from __future__ import annotations

import ast
import re
from dataclasses import replace

from .translate import Program

_CONV = re.compile(r"^nn\.Conv([123])d$")
_POOL = re.compile(r"^F\.(max|avg)_pool([123])d$")
_RELU = ("F.relu", "F.relu6")


def fold_padding(program: Program) -> Program:
    """The program with each foldable zero pad in its reader's
    ``padding=``."""
    decls = {m.attr: m for m in program.modules}
    body = list(program.body)
    modules = {m.attr: m.code for m in program.modules}
    i = 0
    while i < len(body):
        out = _fold_inline(body[i], modules, decls, body, i)
        if out is not None:
            body[i] = out
            continue
        if i + 1 < len(body):
            merged = _fold_statement(body, i, modules)
            if merged is not None:
                body[i:i + 2] = [merged]
                continue
        i += 1
    if body == program.body:
        return program
    new_modules = [replace(m, code=modules[m.attr]) for m in program.modules]
    return replace(program, body=body, modules=new_modules)


def _split(line: str) -> tuple[str, str]:
    code, sep, comment = line.partition("  # ")
    if "#" in code or "'" in code or '"' in code:
        return line, ""  # strings: not ours to rewrite
    return code, (sep + comment if sep else "")


def _pad_of(node) -> tuple[ast.AST, list[int]] | None:
    """(input, pad amounts) of ``F.pad(u, (ints...))`` with the default
    constant zero fill."""
    if not (isinstance(node, ast.Call) and ast.unparse(node.func) == "F.pad"
            and len(node.args) == 2 and not node.keywords
            and isinstance(node.args[1], ast.Tuple)):
        return None
    amounts = []
    for e in node.args[1].elts:
        if not (isinstance(e, ast.Constant) and type(e.value) is int):
            return None
        amounts.append(e.value)
    return node.args[0], amounts


def _symmetric(amounts: list[int], nd: int):
    """torch's ``padding`` for F.pad amounts over exactly the nd spatial
    axes, each padded alike at both ends; else None."""
    if len(amounts) != 2 * nd or any(a < 0 for a in amounts):
        return None
    pairs = [amounts[k:k + 2] for k in range(0, len(amounts), 2)]
    if any(a != b for a, b in pairs):
        return None
    per_axis = [a for a, _ in reversed(pairs)]  # F.pad starts at the last
    if not any(per_axis):
        return None
    return per_axis[0] if len(set(per_axis)) == 1 else tuple(per_axis)


def _nonneg(node, defs: dict) -> bool:
    if isinstance(node, ast.Name) and node.id in defs:
        node = defs[node.id]
    return isinstance(node, ast.Call) and ast.unparse(node.func) in _RELU


def _pool_padding(call: ast.Call, nd: int, kind: str, padding,
                  src_node, defs) -> str | None:
    """The pooling call with ``padding=``, or None when it cannot pad so."""
    if any(k.arg in ("padding", "ceil_mode") for k in call.keywords) or \
            len(call.args) > 3 or len(call.args) < 2:
        return None
    try:
        kernel = ast.literal_eval(call.args[1])
    except ValueError:
        return None
    ks = [kernel] * nd if isinstance(kernel, int) else list(kernel)
    ps = [padding] * nd if isinstance(padding, int) else list(padding)
    if len(ks) != nd or any(p > k // 2 for p, k in zip(ps, ks)):
        return None  # torch refuses a pad over half the window
    if kind == "max" and not _nonneg(src_node, defs):
        return None
    if kind == "avg" and any(k.arg == "count_include_pad"
                             for k in call.keywords):
        return None
    return f"padding={padding}"


def _rewrite_reader(code: str, tree, pad_node, src: str, modules: dict,
                    defs: dict, whole_var: str | None, uses: dict):
    """``code`` with the pad (the node ``pad_node``, or the variable
    ``whole_var`` standing for it) read by its consumer replaced by
    ``src`` and the amount moved into the consumer; or None."""
    amounts = pad_node[1]
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        arg = node.args[0]
        if whole_var is not None:
            if not (isinstance(arg, ast.Name) and arg.id == whole_var):
                continue
        elif arg is not pad_node[2]:
            continue
        func = ast.unparse(node.func)
        m = _POOL.match(func)
        if func.startswith("self.") and func[5:] in modules:
            attr = func[5:]
            decl = modules[attr]
            if "\n" in decl or uses.get(attr, 0) != 1:
                return None  # a shared layer pads for every caller
            try:
                ctor = ast.parse(decl, mode="eval").body
            except SyntaxError:
                return None
            cm = _CONV.match(ast.unparse(ctor.func)) if isinstance(
                ctor, ast.Call) else None
            if cm is None or any(k.arg in ("padding", "padding_mode")
                                 for k in ctor.keywords) or \
                    len(ctor.args) > 3 or len(node.args) != 1:
                return None
            padding = _symmetric(amounts, int(cm.group(1)))
            if padding is None:
                return None
            new_decl = _add_keyword(decl, ctor, f"padding={padding}")
            text = _replace_span(code, arg, src)
            return text, {attr: new_decl}
        if m is not None:
            padding = _symmetric(amounts, int(m.group(2)))
            if padding is None:
                return None
            kw = _pool_padding(node, int(m.group(2)), m.group(1), padding,
                               pad_node[0], defs)
            if kw is None:
                return None
            end = node.end_col_offset - 1  # the closing bracket
            text = code[:end] + f", {kw}" + code[end:]
            text = _replace_span(text, arg, src)
            return text, {}
        return None
    return None


def _replace_span(code: str, node, text: str) -> str:
    return code[:node.col_offset] + text + code[node.end_col_offset:]


def _add_keyword(decl: str, ctor: ast.Call, kw: str) -> str:
    """``kw`` after the ``stride``/``kernel_size`` arguments (torch's
    order), before ``dilation``, ``groups`` and ``bias``."""
    later = [k for k in ctor.keywords
             if k.arg in ("dilation", "groups", "bias", "device", "dtype")]
    if later:
        at = later[0].value.col_offset - len(later[0].arg) - 1
        return decl[:at] + f"{kw}, " + decl[at:]
    end = ctor.end_col_offset - 1
    return decl[:end] + f", {kw}" + decl[end:]


def _parse_line(line: str):
    code, comment = _split(line)
    if "\n" in code:
        return None
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assign):
        return None
    return code, comment, tree.body[0]


def _fold_inline(line: str, modules: dict, decls, body, i):
    """``y = reader(F.pad(u, p), ...)`` in one statement."""
    parsed = _parse_line(line)
    if parsed is None:
        return None
    code, comment, node = parsed
    defs = _defs(body[:i])
    for sub in ast.walk(node.value):
        if isinstance(sub, ast.Call) and sub.args:
            pad = _pad_of(sub.args[0])
            if pad is None:
                continue
            src = ast.get_source_segment(code, pad[0])
            out = _rewrite_reader(code, node.value, (pad[0], pad[1],
                                                     sub.args[0]),
                                  src, modules, defs, None, _uses(body))
            if out is not None:
                text, new = out
                modules.update(new)
                return text + comment
    return None


def _fold_statement(body: list[str], i: int, modules: dict):
    """``v = F.pad(u, p)`` then a statement that alone reads v, once."""
    first, second = _parse_line(body[i]), _parse_line(body[i + 1])
    if first is None or second is None:
        return None
    code1, _, node1 = first
    code2, comment2, node2 = second
    if len(node1.targets) != 1 or not isinstance(node1.targets[0],
                                                 ast.Name):
        return None
    var = node1.targets[0].id
    pad = _pad_of(node1.value)
    if pad is None:
        return None
    reads = [n for n in ast.walk(node2.value)
             if isinstance(n, ast.Name) and n.id == var]
    if len(reads) != 1 or _read_later(body[i + 2:], var, node2):
        return None
    src = ast.get_source_segment(code1, pad[0])
    defs = _defs(body[:i])
    out = _rewrite_reader(code2, node2.value, pad, src, modules, defs, var,
                          _uses(body))
    if out is None:
        return None
    text, new = out
    modules.update(new)
    return text + comment2


def _read_later(rest: list[str], var: str, reader) -> bool:
    """Whether ``var`` (as the pad left it) is read after ``reader``."""
    targets = {n.id for t in reader.targets for n in ast.walk(t)
               if isinstance(n, ast.Name)}
    if var in targets:
        return False
    for line in rest:
        try:
            tree = ast.parse(_split(line)[0])
        except SyntaxError:
            return True
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id == var and \
                    isinstance(node.ctx, ast.Load):
                return True
        stmt = tree.body[0] if tree.body else None
        if isinstance(stmt, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == var
                for t in stmt.targets):
            return False
    return False


def _defs(lines: list[str]) -> dict:
    """Each variable's latest defining expression."""
    out = {}
    for line in lines:
        parsed = _parse_line(line)
        if parsed is None:
            continue
        node = parsed[2]
        if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = node.value
    return out


def _uses(body: list[str]) -> dict:
    """How many calls of each ``self.<attr>`` the forward makes."""
    out: dict[str, int] = {}
    for line in body:
        for attr in re.findall(r"\bself\.(\w+)\(", line):
            out[attr] = out.get(attr, 0) + 1
    return out
