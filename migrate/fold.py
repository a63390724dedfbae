"""Repeated blocks become classes: the folded ``forward``.

The flat program is straight-line code, one statement per line.  This
module finds its repeated structure the way a reader does, from the code's
data flow and never from layer names: a *cut* is a place in ``forward``
where exactly one value (besides masks, which every block may read) is
alive, so the statements between two cuts are a single-entry, single-exit
region (a residual block, a transformer layer, one conv).  Regions made of
the same statements over the same kinds of modules, up to constructor
values, are instances of one block: one ``nn.Module`` class with the values
that vary as constructor arguments.  Runs of blocks become an
``nn.Sequential`` stage (``x = self.conv3(x)``) or, when they also read a
mask, an ``nn.ModuleList`` run by a loop; a run of one module called the
same way (``x = self.layer_0(x, mask)``, ...) becomes an ``nn.ModuleList``
without a class.  An encoder-decoder folds as well: embedding lookups
move down to their first use, and a value every layer of a run takes as a
further argument (a T5 stack's position bias, the encoder output) is read
as masks are -- when that folds more statements.

Folding never changes what is computed: every statement of a block is the
flat statement with its names replaced, in the flat order, so the folded
port gives the flat port's bits.  State-dict keys follow the module tree;
:attr:`Program.renames` maps each flat key to its folded key.
"""
from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass, field, replace

from .emit.names import Namespace, class_identifier, identifier
from .translate import ModuleDecl, Program

MAX_SPAN = 24  # regions per block at most
CLASS_COST = 9  # lines a class costs besides its body
MAX_BLOCK_STMTS = 120


_ORDER = ("pad", "drop", "residual")  # optional parts at one place
_FLAG = {"residual": "use_res_connect", "drop": "use_drop"}


# -- statements -------------------------------------------------------------
@dataclass
class Stmt:
    parts: list  # str | ("v", ssa id) | ("m", attr)
    writes: list[int]
    reads: list[int]  # ssa ids read, in order, repeated as read
    mods: list[str]  # module attrs used
    comment: str = ""
    tail: bool = False  # split from the statement before (_split_tails)
    paren: bool = False  # ... whose value then needs brackets
    guard: str | None = None  # a block's optional part: if self.<guard>


def _parse(body: list[str], inputs: list[str], attrs: set[str]):
    """Statements in SSA form, or None when a line is not a plain
    assignment this module can rewrite safely."""
    env: dict[str, int] = {}
    names: list[str] = []  # ssa id -> flat name
    for var in inputs:
        env[var] = len(names)
        names.append(var)
    stmts = []
    for line in body:
        code, comment = _split_comment(line)
        try:
            tree = ast.parse(code)
        except SyntaxError:
            return None
        if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assign):
            return None
        node = tree.body[0]
        if len(node.targets) != 1:
            return None
        target = node.targets[0]
        tnames = [target] if isinstance(target, ast.Name) else (
            list(target.elts) if isinstance(target, ast.Tuple) else None)
        if tnames is None or not all(isinstance(t, ast.Name)
                                     for t in tnames):
            return None
        bound = {n.id for sub in ast.walk(node.value)
                 if isinstance(sub, (ast.comprehension, ast.Lambda))
                 for n in ast.walk(sub) if isinstance(n, ast.Name)}
        if bound & (set(env) | {t.id for t in tnames}):
            return None
        offsets = _line_offsets(code)
        spans = []  # (start, end, part)
        reads = []
        mods = []
        for sub in ast.walk(node.value):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load) \
                    and sub.id in env:
                spans.append((_pos(offsets, sub.lineno, sub.col_offset),
                              _pos(offsets, sub.end_lineno,
                                   sub.end_col_offset), ("v", env[sub.id])))
            elif (isinstance(sub, ast.Attribute)
                  and isinstance(sub.value, ast.Name)
                  and sub.value.id == "self" and sub.attr in attrs):
                spans.append((_pos(offsets, sub.lineno, sub.col_offset),
                              _pos(offsets, sub.end_lineno,
                                   sub.end_col_offset), ("m", sub.attr)))
        spans.sort()
        for _, _, part in spans:
            if part[0] == "v":
                reads.append(part[1])
            elif part[1] not in mods:
                mods.append(part[1])
        writes = []
        for t in tnames:
            env[t.id] = len(names)
            writes.append(len(names))
            names.append(t.id)
            spans.append((_pos(offsets, t.lineno, t.col_offset),
                          _pos(offsets, t.end_lineno, t.end_col_offset),
                          ("v", env[t.id])))
        spans.sort()
        parts, at = [], 0
        for start, end, part in spans:
            if start < at:  # nested (self.x inside a Name?): give up
                return None
            parts.append(code[at:start])
            parts.append(part)
            at = end
        parts.append(code[at:])
        stmts.append(Stmt([p for p in parts if p != ""], writes, reads,
                          mods, comment))
    return stmts, names, env


def _split_tails(body: list[str]) -> tuple[list[str], list[int]]:
    """Lines with a trailing method call on a computed value (``x =
    F.relu(a + b).mean(dim=(2, 3))``) written as two (``x = F.relu(a +
    b)``, ``x = x.mean(dim=(2, 3))``), so that the end of a block and what
    follows it are separate statements; and the line each came from."""
    out, origin = [], []
    for n, line in enumerate(body):
        pieces = [line]
        while True:
            code, comment = _split_comment(pieces[0])
            tail = _tail(code)
            if tail is None:
                break
            pieces[0:1] = [tail[0], tail[1] + ("  " + comment if comment
                                               else "")]
        out += pieces
        origin += [n] * len(pieces)
    return out, origin


def _tail(code: str):
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    node = tree.body[0] if len(tree.body) == 1 else None
    if not isinstance(node, ast.Assign) or len(node.targets) != 1 or \
            not isinstance(node.targets[0], ast.Name) or "\n" in code:
        return None
    call = node.value
    var = node.targets[0].id
    if isinstance(call, ast.Subscript) and isinstance(
            call.value, (ast.Call, ast.BinOp)) and not any(
            isinstance(x, ast.Name) for x in ast.walk(call.slice)):
        # y = self.ln(x)[:, 0] -> y = self.ln(x); y = y[:, 0]
        inner = call.value
        head = f"{var} = {code[inner.col_offset:inner.end_col_offset]}"
        return head, f"{var} = {var}{code[inner.end_col_offset:]}"
    if isinstance(call, ast.BinOp) and isinstance(call.left, ast.Call) \
            and isinstance(call.right, ast.Name):
        # x = self.drop(x) + y -> x = self.drop(x); x = x + y
        head = f"{var} = {ast.get_source_segment(code, call.left)}"
        return head, f"{var} = {var}{code[call.left.end_col_offset:]}"
    if not (isinstance(call, ast.Call) and isinstance(call.func,
                                                      ast.Attribute)):
        return None
    func = call.func
    if isinstance(func.value, ast.Name) and func.value.id == "F" and \
            call.args and isinstance(call.args[0], (ast.Call, ast.BinOp)):
        # F.relu(self.bn(x)) -> x = self.bn(x); x = F.relu(x)
        inner = call.args[0]
        others = call.args[1:] + [k.value for k in call.keywords]
        if any(isinstance(x, ast.Name) for a in others for x in ast.walk(a)):
            return None
        head = f"{var} = {ast.get_source_segment(code, inner)}"
        start = code[:node.value.col_offset]
        return head, (code[:inner.col_offset].replace(start, f"{var} = ", 1)
                      + var + code[inner.end_col_offset:])
    inner = func.value
    if not isinstance(inner, (ast.Call, ast.BinOp)) or any(
            isinstance(x, ast.Name) for a in call.args + [
                k.value for k in call.keywords] for x in ast.walk(a)):
        return None
    if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute) \
            and isinstance(inner.func.value, ast.Name) \
            and inner.func.value.id == "self":
        return None  # a module's own call: one statement already
    head = f"{var} = {ast.get_source_segment(code, inner)}"
    rest = code[inner.end_col_offset:]
    if isinstance(inner, ast.BinOp):  # (a + b).mean(): drop the brackets
        head = f"{var} = {code[inner.col_offset:inner.end_col_offset]}"
        rest = code[inner.end_col_offset:].lstrip(")")
    return head, f"{var} = {var}{rest}"


# a number, or a tuple of numbers, in forward code: a value a block's
# instances may differ in (F.pad(x, (0, 1, 0, 1)), x.reshape(-1, 144, 1, 1))
_NUM = r"\d+(?:\.\d*)?(?:e-?\d+)?"
_LITERAL = re.compile(rf"(?<![\w.]){_NUM}(?![\w.])|\((?:\s*{_NUM}\s*,)+"
                      rf"\s*(?:{_NUM}\s*)?\)")


def _literals_ok(fragment: str) -> bool:
    return "'" not in fragment and '"' not in fragment


def _is_binop(line: str) -> bool:
    try:
        return isinstance(ast.parse(line).body[0].value, ast.BinOp)
    except (SyntaxError, IndexError, AttributeError):
        return False


def _split_comment(line: str) -> tuple[str, str]:
    """A statement and its trailing ``  # ...`` comment (outside strings)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote and line[i - 1] != "\\":
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return line[:i].rstrip(), line[i:]
    return line, ""


def _line_offsets(code: str) -> list[int]:
    out, at = [0], 0
    for ln in code.split("\n"):
        at += len(ln) + 1
        out.append(at)
    return out


def _pos(offsets, lineno, col) -> int:
    return offsets[lineno - 1] + col


# -- constructor templates ---------------------------------------------------
@dataclass
class Template:
    text: list  # str | int (hole index)
    values: list  # the hole values, as source text
    holes: list  # (callee, position or keyword) for each hole

    @property
    def key(self) -> str:
        return "".join(p if isinstance(p, str) else "\x00" for p in self.text)


def _template(code: str) -> Template | None:
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError:
        return None
    holes = []  # (start, end, callee, slot)

    def leaf(node) -> bool:
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.UnaryOp) and isinstance(
                node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            return True
        return isinstance(node, (ast.Tuple, ast.List)) and all(
            leaf(e) for e in node.elts)

    def visit(node, callee, slot):
        if leaf(node):
            holes.append((node.col_offset, node.end_col_offset, callee, slot))
            return
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            visit(node.func, None, None)
            for i, a in enumerate(node.args):
                visit(a, name, i)
            for kw in node.keywords:
                visit(kw.value, name, kw.arg)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, None, None)

    visit(tree.body, None, None)
    holes.sort()
    text, values, slots, at = [], [], [], 0
    for start, end, callee, slot in holes:
        text.append(code[at:start])
        text.append(len(values))
        values.append(code[start:end])
        slots.append((callee, slot))
        at = end
    text.append(code[at:])
    return Template(text, values, slots)


def _signature(callee: str, helpers: dict[str, str]) -> list:
    """``[(name, default source or None)]`` of a module constructor: a
    torch.nn class, or a helper class written into model.py."""
    if callee.startswith("nn.") and callee[3:].isidentifier():
        import torch.nn
        cls = getattr(torch.nn, callee[3:], None)
        if cls is None:
            return []
        try:
            sig = inspect.signature(cls)
        except (TypeError, ValueError):
            return []
        return [(n, None if p.default is p.empty else repr(p.default))
                for n, p in sig.parameters.items()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    code = helpers.get(callee)
    if code is None:
        return []
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == callee:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) \
                        and item.name == "__init__":
                    args = item.args.args[1:]
                    defaults = [None] * (len(args) - len(
                        item.args.defaults)) + [ast.unparse(d) for d in
                                                item.args.defaults]
                    return [(a.arg, d) for a, d in zip(args, defaults)]
    return []


def _call_parts(code: str, helpers: dict):
    """(callee, positional sources, {keyword: source}, signature) of a
    constructor call, or None."""
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError:
        return None
    call = tree.body
    if not isinstance(call, ast.Call) or any(
            kw.arg is None for kw in call.keywords) or any(
            isinstance(a, ast.Starred) for a in call.args):
        return None
    callee = ast.get_source_segment(code, call.func)
    sig = _signature(callee, helpers)
    if not sig:
        return None
    args = [ast.get_source_segment(code, a) for a in call.args]
    kws = {kw.arg: ast.get_source_segment(code, kw.value)
           for kw in call.keywords}
    return callee, args, kws, sig


def _loose_key(code: str, helpers: dict) -> str | None:
    """The template key of ``code`` without the constant keywords that
    have defaults: ``nn.Conv2d(64, 64, 1)`` and ``nn.Conv2d(128, 128, 1,
    stride=2)`` are one shape, ``stride`` a value that differs."""
    parts = _call_parts(code, helpers)
    if parts is None:
        t = _template(code)
        return None if t is None else t.key
    callee, args, kws, sig = parts
    defaults = dict(sig)
    keep = {k: v for k, v in kws.items()
            if defaults.get(k) is None or _template(v) is None
            or _template(v).key != "\x00"}
    t = _template(_rebuild(callee, args, keep, sig))
    return None if t is None else t.key


def _rebuild(callee, args, kws, sig) -> str:
    order = [n for n, _ in sig]
    items = list(args) + [f"{k}={kws[k]}" for k in sorted(
        kws, key=lambda k: order.index(k) if k in order else len(order))]
    return f"{callee}({', '.join(items)})"


def _filled(codes: list[str], helpers: dict) -> list[str]:
    """The constructors of one slot over a block's instances, each with
    every keyword some instance gives (defaults written out)."""
    parts = [_call_parts(c, helpers) for c in codes]
    if any(p is None for p in parts):
        return codes
    names = set().union(*(p[2] for p in parts))
    if all(set(p[2]) == names for p in parts):
        return codes
    out = []
    for callee, args, kws, sig in parts:
        defaults = dict(sig)
        full = dict(kws)
        for n in names - set(kws):
            if defaults.get(n) is None:
                return codes
            full[n] = defaults[n]
        out.append(_rebuild(callee, args, full, sig))
    return out


def _param_name(callee: str | None, slot, helpers: dict[str, str]) -> str:
    if isinstance(slot, str):
        return slot
    if callee is None or slot is None:
        return "value"
    names = []
    if callee.startswith("nn.") and hasattr(__import__("torch").nn,
                                            callee[3:]):
        try:
            sig = inspect.signature(getattr(__import__("torch").nn,
                                            callee[3:]))
            names = [p for p in sig.parameters if p not in ("self",)]
        except (TypeError, ValueError):
            names = []
    elif callee in helpers:
        names = _helper_params(helpers[callee], callee)
    return names[slot] if slot < len(names) else f"arg{slot}"


def _helper_params(code: str, name: str) -> list[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) \
                        and item.name == "__init__":
                    return [a.arg for a in item.args.args[1:]]
    return []


# -- regions -----------------------------------------------------------------
@dataclass
class Region:
    start: int
    end: int
    c_in: int
    c_out: int
    key: tuple
    mods: list[str]  # module attrs, in order of first use
    globals_: list[int]  # other values read, in order of first read
    size: int  # statements + modules
    consts: list = field(default_factory=list)  # numbers in its forward
    groups: list = field(default_factory=list)  # optional parts it has
    opts: list = field(default_factory=list)  # (kind, position) of each


@dataclass
class Block:
    regions: list[Region]
    cls: str | None  # None: a bare module (no class)
    bare: bool = False


class Folder:
    def __init__(self, program: Program, bool_vars: set[str],
                 optional: bool = True):
        self.p = program
        self.optional = optional  # blocks may differ by optional parts
        self.strict: set = set()  # shapes whose parts did not line up
        self._fit_cache: dict = {}
        self.decls = {m.attr: m for m in program.modules}
        self.bool_vars = bool_vars
        self.paths: dict[str, str] = {}  # flat attr -> dotted path
        self._regions: dict[tuple, Region | None] = {}
        self._templates: dict[str, Template | None] = {}

    def run(self) -> Program:
        p = self.p
        body, origin = _split_tails(p.body)
        parsed = _parse(body, [t.var for t in p.inputs], set(self.decls))
        if parsed is None:
            return p
        self.stmts, self.names, env = parsed
        for k, st in enumerate(self.stmts):
            st.tail = k > 0 and origin[k] == origin[k - 1]
            st.paren = st.tail and _is_binop(body[k - 1])
        self.returns = [env.get(r) for r in p.returns]
        if None in self.returns:
            return p
        self._same_masks()
        self.context: set[int] = set()
        self._liveness()
        regions = self._choose()
        # An encoder-decoder's second stream is embedded early and its
        # first stream's output feeds every decoder layer: with lookups
        # moved down to their first use, and values every layer of a run
        # takes as a further argument read as masks are, its layers fold
        # too.  Taken only when it folds more statements.
        sunk, context = self._sunk(), self._contexts()
        if sunk is not None or context:
            flat = (self.stmts, regions)
            if sunk is not None:
                self.stmts = sunk
            self.context, self._regions = context, {}
            self._liveness()
            alt = self._choose()
            if _covered(alt) > _covered(regions):
                regions = alt
            else:
                (self.stmts, regions), self.context = flat, set()
                self._regions = {}
                self._liveness()
        return self._rewrite(regions)

    def _pure_lookup(self, s: Stmt) -> bool:
        """A statement that may run later without changing anything: no
        module, or only embedding lookups (no state, no randomness)."""
        return all(self.decls[m].code.startswith("nn.Embedding(")
                   for m in s.mods)

    def _sunk(self) -> list[Stmt] | None:
        """The statements with each pure lookup moved down to just before
        the first statement that reads it (SSA: always the same values);
        None when nothing moves."""
        stmts = list(self.stmts)
        moved = False
        for k in range(len(stmts) - 1, -1, -1):
            s = stmts[k]
            if s.tail or (k + 1 < len(stmts) and stmts[k + 1].tail) \
                    or not s.writes or not self._pure_lookup(s):
                continue
            readers = [j for j in range(k + 1, len(stmts))
                       if set(stmts[j].reads) & set(s.writes)]
            if not readers:
                continue
            at = readers[0]
            while stmts[at].tail:
                at -= 1
            if at > k + 1:
                stmts.insert(at - 1, stmts.pop(k))
                moved = True
        return stmts if moved else None

    def _contexts(self) -> set[int]:
        """Values two or more module calls take as a further argument
        (never as their first): a T5 stack's position bias, the encoder
        output every decoder layer attends to."""
        further: dict[int, int] = {}
        first: set[int] = set()
        for s in self.stmts:
            if not s.mods or not s.reads:
                continue
            first.add(s.reads[0])
            for v in set(s.reads[1:]) - {s.reads[0]}:
                further[v] = further.get(v, 0) + 1
        out = {v for v, n in further.items() if n >= 2 and v not in first}
        # and what no module computes from inputs and masks alone (a mask
        # reshaped: ``padding_mask[:, None]``)
        ints = {i for i, t in enumerate(self.p.inputs)
                if not t.dtype.startswith("float")}
        known = ints | {v for v in range(len(self.names))
                        if self.names[v] in self.bool_vars}
        for s in self.stmts:
            if not s.mods and s.reads and set(s.reads) <= known:
                known.update(s.writes)
                out.update(w for w in s.writes
                           if self.names[w] not in self.bool_vars)
        return out

    def _same_masks(self) -> None:
        """A mask line whose value is an earlier mask is that mask
        (``a | a`` is ``a``; ``x != 0`` is computed once); a mask line
        nothing reads goes."""
        alias: dict[int, int] = {}
        seen: dict[str, int] = {}
        kept = []
        for s in self.stmts:
            s.parts = [("v", alias.get(x[1], x[1]))
                       if isinstance(x, tuple) and x[0] == "v"
                       and x[1] not in s.writes else x for x in s.parts]
            s.reads = [alias.get(v, v) for v in s.reads]
            if len(s.writes) != 1 or s.mods or \
                    self.names[s.writes[0]] not in self.bool_vars:
                kept.append(s)
                continue
            w = s.writes[0]
            rhs = s.parts[2:] if s.parts[:2] == [("v", w), " = "] else None
            if rhs is None:
                kept.append(s)
                continue
            if (len(rhs) == 3 and rhs[1] in (" | ", " & ")
                    and rhs[0] == rhs[2] and isinstance(rhs[0], tuple)):
                alias[w] = rhs[0][1]
                continue
            key = repr(rhs)
            if key in seen:
                alias[w] = seen[key]
                continue
            seen[key] = w
            kept.append(s)
        self.returns = [alias.get(v, v) for v in self.returns]
        while True:  # masks nothing reads
            read = {v for s in kept for v in s.reads} | set(self.returns)
            drop = [s for s in kept if len(s.writes) == 1 and not s.mods
                    and self.names[s.writes[0]] in self.bool_vars
                    and s.writes[0] not in read]
            if not drop:
                break
            kept = [s for s in kept if s not in drop]
        self.stmts = kept

    # ---------------------------------------------------------------------
    def _liveness(self) -> None:
        n = len(self.stmts)
        self.defined = {}
        for i in range(len(self.p.inputs)):
            self.defined[i] = -1
        self.last = {}
        for k, s in enumerate(self.stmts):
            for w in s.writes:
                self.defined[w] = k
            for r in s.reads:
                self.last[r] = k
        for r in self.returns:
            self.last[r] = n
        self.mod_uses: dict[str, set[int]] = {}
        for k, s in enumerate(self.stmts):
            for m in s.mods:
                self.mod_uses.setdefault(m, set()).add(k)
        ints = {i for i, t in enumerate(self.p.inputs)
                if not t.dtype.startswith("float")}
        self.is_global = {v: self.names[v] in self.bool_vars or v in ints
                          or v in self.context for v in self.defined}
        # cuts: boundaries where one non-mask value is alive
        self.cuts: list[tuple[int, int]] = []  # (boundary, carried value)
        live_at = [set() for _ in range(n + 1)]
        for v, d in self.defined.items():
            end = self.last.get(v, d)
            for b in range(d + 1, min(end, n) + 1):
                live_at[b].add(v)
        self.live_at = live_at
        for b in range(n + 1):
            carried = [v for v in live_at[b] if not self.is_global[v]]
            if not carried and b:  # a stack's output, which later layers
                carried = [w for w in self.stmts[b - 1].writes  # all read
                           if w in self.context and w in live_at[b]]
            if len(carried) == 1:
                self.cuts.append((b, carried[0]))

    def _region(self, a: int, b: int, c_in: int, c_out: int):
        key = (a, b, c_in, c_out)
        if key not in self._regions:
            self._regions[key] = self._new_region(a, b, c_in, c_out)
        return self._regions[key]

    def _new_region(self, a: int, b: int, c_in: int, c_out: int):
        if b - a > MAX_BLOCK_STMTS:
            return None
        local = {}
        for k in range(a, b):
            for w in self.stmts[k].writes:
                local[w] = len(local)
        if c_out not in local:
            return None
        # nothing but c_out (and masks nobody else defines) leaves
        for v in local:
            if v != c_out and self.last.get(v, -1) >= b:
                return None
        for k in range(a, b):
            for m in self.stmts[k].mods:
                if any(u < a or u >= b for u in self.mod_uses[m]):
                    return None  # a shared layer
        stmts = self.stmts[a:b]
        groups = self._optional_groups(a, b, c_in, c_out) \
            if self.optional else []
        skip = {k - a for _, ks, _, _ in groups for k in ks}
        subst = {w: u for _, _, u, w in groups}
        kept = [s for i, s in enumerate(stmts) if i not in skip]
        canon = self._canon(kept, c_in, subst)
        if canon is None:
            return None
        key, _, globs = canon
        mods = list(dict.fromkeys(m for s in stmts for m in s.mods))
        opts = []
        for kind, ks, _, _ in groups:
            pos = sum(1 for i in range(ks[0] - a) if i not in skip)
            opts.append((kind, pos))
        consts = [v for st in stmts for part in st.parts
                  if isinstance(part, str) and _literals_ok(part)
                  for v in _LITERAL.findall(part)]
        return Region(a, b, c_in, c_out, key, mods, globs,
                      (b - a) + len(mods), consts, groups, opts)

    def _canon(self, stmts: list[Stmt], c_in: int, subst: dict):
        """(key, modules in order of first use, globals read) of a list of
        statements read as a block with input ``c_in``: its statements
        with values numbered by their definition and modules by their
        first use, constructors up to their values; ``subst`` gives a
        value that stands for another (an optional part left out)."""
        local = {}
        for s in stmts:
            for w in s.writes:
                local[w] = len(local)

        def see(v):
            while v in subst:
                v = subst[v]
            return v
        mods, globs, canon = [], [], []
        for s in stmts:
            out = []
            for part in s.parts:
                if isinstance(part, str):
                    out.append(_LITERAL.sub("\x00c", part)
                               if _literals_ok(part) else part)
                elif part[0] == "m":
                    if part[1] not in mods:
                        mods.append(part[1])
                    out.append(f"\x00m{mods.index(part[1])}")
                else:
                    v = see(part[1]) if part[1] not in s.writes else part[1]
                    if v == c_in:
                        out.append("\x00X")
                    elif v in local:
                        out.append(f"\x00v{local[v]}")
                    else:
                        if not self.is_global.get(v, False):
                            return None
                        if v not in globs:
                            globs.append(v)
                        out.append(f"\x00g{globs.index(v)}")
            canon.append("".join(out))
        slot_keys = []
        for m in mods:
            d = self.decls[m]
            if d.code not in self._templates:
                self._templates[d.code] = _loose_key(d.code, self.p.helpers)
            t = self._templates[d.code]
            if t is None:
                return None
            lines = tuple(ln.replace(f"self.{m}.", "self.\x00.").replace(
                f"self.{m} ", "self.\x00 ") for ln in d.init_lines)
            slot_keys.append((t, lines))
        key = (tuple(canon), tuple(slot_keys), len(globs),
               canon.index(canon[-1]) if canon else 0)
        return key, mods, globs

    def _optional_groups(self, a: int, b: int, c_in: int, c_out: int):
        """The parts of region [a, b) that a block may have or not, as
        ``(kind, statement indices, input, output)``: leaving one out
        means its output is its input.  A residual add at the end (``x =
        identity + x``, with a dropout just before it: EfficientNet's
        stochastic depth) and a ``F.pad`` that only the next statement
        reads (MobileNetV2's stride-2 blocks)."""
        groups = []
        s = self.stmts[b - 1]
        p = s.parts
        if (b - a >= 3 and s.writes == [c_out] and not s.mods
                and len(p) == 5 and p[1] == " = " and p[3] == " + "
                and c_in in s.reads and len(set(s.reads)) == 2):
            (u,) = [v for v in s.reads if v != c_in]
            prev = self.stmts[b - 2]
            if u != c_in and self.defined.get(u, -2) >= a:
                if (prev.writes == [u] and len(prev.mods) == 1
                        and "Dropout" in self.decls[prev.mods[0]].code.split(
                            "(")[0] and len(set(prev.reads)) == 1
                        and prev.reads[0] != c_in
                        and self.last.get(u) == b - 1):
                    groups.append(("drop", [b - 2], prev.reads[0], u))
                groups.append(("residual", [b - 1], u, c_out))
        for k in range(a, b - 1):
            s = self.stmts[k]
            text = "".join(x if isinstance(x, str) else "\x00"
                           for x in s.parts)
            if (not s.mods and len(s.writes) == 1 and len(s.reads) == 1
                    and text.startswith("\x00 = F.pad(\x00, ")
                    and s.reads[0] != c_in
                    and self.last.get(s.writes[0]) == k + 1
                    and self.stmts[k + 1].reads.count(s.writes[0]) == 1):
                groups.append(("pad", [k], s.reads[0], s.writes[0]))
        return groups

    def _choose(self) -> list[Region]:
        """Greedy: the region shape whose instances save most lines first,
        instances taken left to right without overlap."""
        cuts = self.cuts
        taken = [False] * len(self.stmts)
        chosen: list[Region] = []
        while True:
            groups: dict[tuple, list[Region]] = {}
            for i, (a, c_in) in enumerate(cuts):
                for j in range(i + 1, min(len(cuts), i + 1 + MAX_SPAN)):
                    b, c_out = cuts[j]
                    if b - a > MAX_BLOCK_STMTS or any(taken[a:b]):
                        break
                    r = self._region(a, b, c_in, c_out)
                    if r is not None:
                        groups.setdefault(self._gkey(r), []).append(r)
            best, best_save, retry = None, 0, False
            for key, rs in groups.items():
                inst, at = [], -1
                for r in sorted(rs, key=lambda r: r.start):
                    if r.start >= at:
                        inst.append(r)
                        at = r.end
                if self._bare(inst[0]):  # a module on its own: only runs
                    inst = [r for i, r in enumerate(inst)
                            if i and inst[i - 1].end == r.start
                            or i + 1 < len(inst)
                            and inst[i + 1].start == r.end]
                if len(inst) < 2 or not self._bare(inst[0]) and len(
                        inst[0].mods) < 2:  # a class holds two modules
                    continue
                if not self._fits(inst):  # the parts do not line up
                    self.strict.add(key)
                    retry = True
                    continue
                save = self._saving(inst)
                if self._bare(inst[0]):  # torch layers: runs of four
                    code = self.decls[inst[0].mods[0]].code
                    if code.startswith("nn.") and len(inst) < 4:
                        continue
                    # a helper module per layer (keras-hub): the loop
                    # reads best, before any pairing of layers
                    save = 3 * len(inst) - 4
                elif all(self._whole(r) for r in inst):
                    save += 6 * len(inst)  # each is a whole Keras block
                # a block does not start halfway through a flat line (the
                # relu of x = F.relu(shortcut + x) ends the block before)
                save -= sum(self.stmts[r.start].tail for r in inst)
                if save > best_save:
                    best, best_save = inst, save
            if best is None:
                if retry:
                    continue
                break
            for r in best:
                for k in range(r.start, r.end):
                    taken[k] = True
            chosen.extend(best)
        return sorted(chosen, key=lambda r: r.start)

    def _gkey(self, r: Region):
        """The shape a region is grouped by: up to its optional parts,
        unless those did not line up for that shape."""
        return r.key if r.key not in self.strict else (r.key, tuple(r.opts))

    def _fits(self, inst: list[Region]) -> bool:
        if len({tuple(r.opts) for r in inst}) < 2:
            return True
        ids = tuple(id(r) for r in inst)
        if ids not in self._fit_cache:
            try:
                self._superset(inst)
                self._fit_cache[ids] = True
            except _NoFit:
                self._fit_cache[ids] = False
        return self._fit_cache[ids]

    def _saving(self, inst: list[Region]) -> int:
        r = inst[0]
        flat = sum(x.size for x in inst)
        if self._bare(r):
            return flat - (len(inst) + 3)
        opts = {o for x in inst for o in x.opts}
        return flat - (max(x.size for x in inst) + CLASS_COST
                       + 2 * len(inst) + 3 * len(opts))

    def _bare(self, r: Region) -> bool:
        """One statement ``v = self.m(x, ...)`` with the region's input as
        its first argument: the module itself is the block."""
        if r.end - r.start != 1 or len(r.mods) != 1:
            return False
        p = self.stmts[r.start].parts
        return (len(p) >= 6 and p[0] == ("v", r.c_out) and p[1] == " = "
                and p[2] == ("m", r.mods[0]) and p[3] == "("
                and p[4] == ("v", r.c_in) and isinstance(p[-1], str)
                and _closes_at_end(self.stmts[r.start]))

    # ---------------------------------------------------------------------
    def _superset(self, rs: list[Region]) -> "Superset":
        """One block's statements with every optional part some instance
        has (taken from the first instance that has it, its values
        renumbered), and how each instance maps onto them; checked: each
        instance is the superset without the parts it lacks."""
        base = rs[0]
        union = sorted({o for r in rs for o in r.opts},
                       key=lambda o: (o[1], _ORDER.index(o[0])))
        common = set.intersection(*(set(r.opts) for r in rs))
        flags = Namespace({"x", "identity", "self"})
        guard = {o: flags.name(("opt", o), _FLAG.get(o[0], o[0]))
                 for o in union if o not in common}
        # parts that come and go together are one option (EfficientNet's
        # stochastic-depth dropout and its residual add)
        pattern = {o: tuple(o in r.opts for r in rs) for o in guard}
        for o in guard:
            same = [p for p in guard if pattern[p] == pattern[o]]
            guard[o] = guard[same[-1]]

        def reduced(r):
            skip = {k for _, ks, _, _ in r.groups for k in ks}
            return [k for k in range(r.start, r.end) if k not in skip]

        def group(r, o):
            return r.groups[r.opts.index(o)]
        base_red = reduced(base)
        out: list[Stmt] = []
        redirect: dict[int, int] = {}  # base value -> inserted output
        inserted = []  # (donor, donor output, new output)
        c_out = base.c_out
        for pos in range(len(base_red) + 1):
            for o in union:
                if o[1] != pos:
                    continue
                if o in base.opts:
                    for k in group(base, o)[1]:
                        s = self.stmts[k]
                        parts = [("v", redirect.get(x[1], x[1]))
                                 if isinstance(x, tuple) and x[0] == "v"
                                 and x[1] not in s.writes else x
                                 for x in s.parts]
                        out.append(replace(
                            s, parts=parts, guard=guard.get(o),
                            reads=[redirect.get(v, v) for v in s.reads]))
                    continue
                donor = next(r for r in rs if o in r.opts)
                _, ks, u, w = group(donor, o)
                vmap = self._value_map(donor, base)
                fresh = {}
                for k in ks:
                    s = self.stmts[k]
                    for v in s.writes:
                        fresh[v] = len(self.names)
                        self.names.append(self.names[v])

                    def at(v):
                        if v in fresh:
                            return fresh[v]
                        v = vmap.get(v, v)
                        return redirect.get(v, v) if v != base.c_in else v
                    parts = [("v", at(x[1]))
                             if isinstance(x, tuple) and x[0] == "v" else x
                             for x in s.parts]
                    reads = [at(v) for v in s.reads]
                    out.append(Stmt(parts, [fresh[v] for v in s.writes],
                                    reads, list(s.mods), s.comment,
                                    guard=guard[o]))
                inserted.append((donor, w, fresh[w]))
                ub = vmap.get(u, u)
                redirect[ub] = fresh[w]
                if donor.c_out == w:
                    c_out = fresh[w]
            if pos == len(base_red):
                break
            s = self.stmts[base_red[pos]]
            parts = list(s.parts)
            for donor, w, new in inserted:
                ds = self.stmts[reduced(donor)[pos]]
                for i, x in enumerate(ds.parts):
                    if x == ("v", w) and i < len(parts):
                        parts[i] = ("v", new)
            reads = [x[1] for x in parts if isinstance(x, tuple)
                     and x[0] == "v" and x[1] not in s.writes]
            out.append(replace(s, parts=parts, reads=reads))
        sup = Superset(out, base.c_in, c_out, guard)
        for r in rs:
            if not sup.fit(self, r):
                raise _NoFit
        return sup

    def _value_map(self, donor: Region, base: Region) -> dict:
        """Donor values -> the base's: their inputs, globals and the
        writes of their common statements, in order."""
        vmap = {donor.c_in: base.c_in}
        vmap.update(zip(donor.globals_, base.globals_))

        def red(r):
            skip = {k for _, ks, _, _ in r.groups for k in ks}
            return [k for k in range(r.start, r.end) if k not in skip]
        for kd, kb in zip(red(donor), red(base)):
            vmap.update(zip(self.stmts[kd].writes, self.stmts[kb].writes))
        for _, _, u, w in donor.groups:  # a part the base lacks
            if w not in vmap:
                vmap[w] = vmap.get(u, u)
        return vmap

    def _rewrite(self, regions: list[Region]) -> Program:
        p = self.p
        helpers = p.helpers
        attrs = Namespace(set(self.decls) | {t.var for t in p.inputs})
        # classes: one per region key
        by_key: dict[tuple, list[Region]] = {}
        for r in regions:
            by_key.setdefault(self._gkey(r), []).append(r)
        classes = {}  # key -> ClassSpec
        class_names = Namespace(set(helpers) | {p.class_name})
        for key, rs in by_key.items():
            if self._bare(rs[0]):
                classes[key] = None
                continue
            classes[key] = self._class(rs, class_names, helpers)
        specs = [c for c in classes.values() if c is not None]
        for spec in specs:  # one base name for two shapes: say the role
            if sum(c.base == spec.base for c in specs) > 1 and \
                    spec.projection():
                spec.base = "Projection" + spec.base
        for key, spec in classes.items():
            if spec is not None:
                spec.finish(class_names.name(("class", key), spec.base))
        # runs of adjacent regions -> stages
        runs: list[list[Region]] = []
        for r in regions:
            if runs and runs[-1][-1].end == r.start and self._compatible(
                    runs[-1][-1], r) and self._same_stage(runs[-1][-1], r):
                runs[-1].append(r)
            else:
                runs.append([r])
        # new modules and body
        renames: dict[str, str] = {}
        new_mods: dict[str, ModuleDecl] = {}  # first flat attr -> decl
        replaced: dict[int, tuple] = {}  # stmt index -> run
        gone_mods: set[str] = set()
        for run in runs:
            name = attrs.name(("run", run[0].start), _run_name(
                [_common_prefix(r.mods) for r in run], len(run),
                classes[self._gkey(run[0])] is None))
            ctor = []
            for i, r in enumerate(run):
                spec = classes[self._gkey(r)]
                path = f"{name}.{i}" if len(run) > 1 else name
                if spec is None:
                    m = r.mods[0]
                    ctor.append(self.decls[m].code)
                    self._move_state(m, path, renames)
                else:
                    ctor.append(spec.instance(r))
                    for m in r.mods:
                        self._move_state(m, f"{path}.{spec.slot_of[m]}",
                                         renames)
                gone_mods.update(r.mods)
            if len(run) == 1:
                code = ctor[0]
            else:
                container = ("nn.ModuleList" if self._needs_loop(run)
                             else "nn.Sequential")
                if len(set(ctor)) == 1 and container == "nn.ModuleList":
                    code = f"{container}([{ctor[0]} for _ in " \
                           f"range({len(run)})])"
                elif len(set(ctor)) == 1:
                    code = f"{container}(*[{ctor[0]} for _ in " \
                           f"range({len(run)})])"
                elif container == "nn.ModuleList":
                    code = f"{container}([{', '.join(ctor)}])"
                else:
                    code = f"{container}({', '.join(ctor)})"
            new_mods[run[0].mods[0]] = ModuleDecl(name, code, name, [])
            replaced[run[0].start] = (run, name)
            for r in run:
                for k in range(r.start, r.end):
                    replaced.setdefault(k, None)
        modules = []
        for m in p.modules:
            if m.attr in new_mods:
                modules.append(new_mods[m.attr])
            elif m.attr not in gone_mods:
                modules.append(m)
        body = []
        for k, s in enumerate(self.stmts):
            if k in replaced:
                if replaced[k] is None:
                    continue
                run, name = replaced[k]
                body.extend(self._call(run, name))
                continue
            body.append(s)
        new_body = self._render_top(body)
        state = {renames.get(k, k): v for k, v in p.state.items()}
        layers = []
        for rec in p.layers:
            tn = rec.torch_name
            if tn in gone_mods:
                tn = self.paths.get(tn, tn)
            layers.append(replace(rec, torch_name=tn))
        outputs = [replace(t, var=v) if t.var == old else t
                   for t, old, v in zip(p.outputs, p.returns,
                                        self.new_returns)]
        out = replace(p, modules=modules, body=new_body, state=state,
                      layers=layers, returns=self.new_returns,
                      outputs=outputs)
        out.classes = [classes[k].source for k in by_key
                       if classes[k] is not None]
        out.renames = renames
        return out

    def _move_state(self, attr: str, path: str, renames: dict) -> None:
        self.paths[attr] = path
        for key in self.p.state:
            if key == attr:
                renames[key] = path
            elif key.startswith(attr + "."):
                renames[key] = path + key[len(attr):]

    def _compatible(self, a: Region, b: Region) -> bool:
        """Blocks that can share a container: the same call signature."""
        return (len(a.globals_) == len(b.globals_)
                and (a.globals_ == b.globals_)
                and (self._bare(a) == self._bare(b)))

    def _same_stage(self, a: Region, b: Region) -> bool:
        pa, pb = self._prefix(a).split("_"), self._prefix(b).split("_")
        if not pa[0] or not pb[0]:
            return True
        if len(pa) == 1 and len(pb) == 1:  # layer1, layer2: the index
            return _stage(pa[0]) == _stage(pb[0])
        return pa[0] == pb[0]  # conv2_block1, conv2_block2: the stage

    def _needs_loop(self, run: list[Region]) -> bool:
        return bool(run[0].globals_) or self._bare(run[0]) and \
            self._bare_args(run[0]) != ""

    def _bare_args(self, r: Region) -> str:
        s = self.stmts[r.start]
        return "".join(_canon_part(x, r) for x in s.parts[5:])

    def _whole(self, r: Region) -> bool:
        """The region holds every module of one Keras block: the common
        name up to its last numbered part (``block_1_expand`` ->
        ``block_1``) names no module outside it."""
        toks = self._prefix(r).split("_")
        while toks and not re.search(r"\d", toks[-1]):
            toks.pop()
        if not toks:
            return False
        block = "_".join(toks)
        inside = set(r.mods)
        return not any((d.keras_name == block
                        or d.keras_name.startswith(block + "_"))
                       for a, d in self.decls.items() if a not in inside)

    def _prefix(self, r: Region) -> str:
        names = [self.decls[m].keras_name for m in r.mods]
        return _common_prefix(names)

    def _call(self, run: list[Region], name: str) -> list:
        """The statements that replace a run: a call, or a loop."""
        first, last = run[0], run[-1]
        x, y = ("v", first.c_in), ("v", last.c_out)
        globs = [("v", g) for g in first.globals_]
        if len(run) == 1 or not self._needs_loop(run):
            if self._bare(first) and len(run) == 1:
                s = self.stmts[first.start]
                parts = [y] + s.parts[1:2] + [("m", name)] + s.parts[3:]
                call = Stmt(parts, [last.c_out], [first.c_in], [name])
            else:
                args = [x] + sum(([", ", g] for g in globs), [])
                call = Stmt([y, " = ", ("m", name), "("] + args + [")"],
                            [last.c_out], [first.c_in], [name])
            call.run_end = last.end
            return [call]
        # a loop; the value keeps one name through it
        if self._bare(first):
            s = self.stmts[first.start]
            tail = s.parts[4:]
        else:
            tail = [x] + sum(([", ", g] for g in globs), []) + [")"]
        loop = Stmt(["for layer in ", ("m", name), ":"], [], [], [name])
        inner = Stmt([x, " = layer("] + tail, [first.c_in], [first.c_in],
                     [])
        inner.indent = True
        alias = Stmt([y], [last.c_out], [first.c_in], [])
        alias.alias_of = first.c_in
        return [loop, inner, alias]

    def _render_top(self, body: list) -> list[str]:
        """The model's forward lines; a loop's output keeps its input's
        name (aliases are resolved)."""
        alias = {}
        for s in body:
            if getattr(s, "alias_of", None) is not None and not (
                    s.writes[0] in self.returns and len(self.returns) > 1):
                alias[s.writes[0]] = alias.get(s.alias_of, s.alias_of)
        disp = self._main_names(body, alias)

        def name(v):
            v = alias.get(v, v)
            return disp.get(v, self.names[v])
        lines = []
        pending_loop = None
        body = _rejoin(body, keep=self.returns)
        for s in body:
            if getattr(s, "alias_of", None) is not None:
                if s.writes[0] in self.returns and len(self.returns) > 1:
                    # one of several outputs keeps its name (pooled_output,
                    # sequence_output): the docstring tells them apart
                    y = self.names[s.writes[0]]
                    x = name(s.alias_of)
                    if y != x:
                        lines.append(f"{y} = {x}")
                continue
            text = _render(s.parts, name, lambda m: f"self.{m}")
            if getattr(s, "indent", False):
                lines[-1] = pending_loop + "\n" + " " * 4 + text
                pending_loop = None
                continue
            if text.startswith("for "):
                pending_loop = text
                lines.append(text)
                continue
            lines.append(text + ("  " + s.comment if s.comment else ""))
        self.new_returns = [name(v) for v in self.returns]
        return lines

    def _main_names(self, body: list, alias: dict) -> dict:
        """Names for what the model's forward holds now: a run's output
        takes its input's name when the input is not read again (``x =
        self.conv3(x)``, not ``conv4_block1_1_conv = self.conv3(x)``), and
        a value the flat port wrote to the variable it read keeps that
        variable's name.  Outputs keep theirs; none when a name would hold
        two live values."""
        disp: dict[int, str] = {}

        def name(v):
            v = alias.get(v, v)
            return disp.get(v, self.names[v])
        for s in body:
            if getattr(s, "alias_of", None) is not None or \
                    len(s.writes) != 1 or s.writes[0] in self.returns:
                continue
            w = s.writes[0]
            end = getattr(s, "run_end", None)
            if end is not None:
                if self.last.get(s.reads[0], -1) < end:
                    disp[w] = name(s.reads[0])
                continue
            for v in s.reads:
                if v != w and self.names[v] == self.names[w]:
                    disp[w] = name(v)
                    break
        current = {self.names[i]: i for i in range(len(self.p.inputs))}
        for s in body:
            if getattr(s, "alias_of", None) is not None:
                continue
            for x in s.parts:
                if isinstance(x, tuple) and x[0] == "v" and \
                        x[1] not in s.writes:
                    v = alias.get(x[1], x[1])
                    if current.get(name(v)) != v:
                        return {}
            for w in s.writes:
                current[name(w)] = alias.get(w, w)
        return disp

    # ---------------------------------------------------------------------
    def _class(self, rs: list[Region], names: Namespace, helpers):
        return ClassSpec(self, rs, names, helpers)


def _rejoin(body: list, anywhere: bool = False, width: int = 71,
            keep=()) -> list:
    """Join a statement into the next one that reads its value once (as
    a call argument or a method's receiver): statements split by
    :func:`_split_tails` in the model's forward, and with ``anywhere``
    (a block's forward) any stateless statement after another, as the
    translator composes them, when the line fits ``width``."""
    out = []
    reads: dict[int, int] = {}
    for s in body:
        for v in s.reads:
            reads[v] = reads.get(v, 0) + 1
    for v in keep:
        reads[v] = reads.get(v, 0) + 1
    for s in body:
        prev = out[-1] if out else None
        joined = None
        if (isinstance(prev, Stmt) and isinstance(s, Stmt)
                and len(prev.writes) == 1 and len(s.writes) == 1
                and not getattr(prev, "indent", False)
                and not getattr(s, "indent", False)
                and getattr(prev, "guard", None) == getattr(s, "guard", None)
                and s.reads.count(prev.writes[0]) == 1
                and reads.get(prev.writes[0], 0) == 1
                and (getattr(s, "tail", False) or anywhere and not s.mods)):
            joined = _substitute(prev, s)
        if joined is not None and anywhere:
            text = _render(joined.parts, lambda v: "x" * 8, lambda m: "m")
            if len(text) > width:
                joined = None
        if joined is not None:
            out[-1] = joined
        else:
            out.append(s)
    return out


def _substitute(prev: Stmt, s: Stmt):
    """``s`` with ``prev``'s value written where it reads it, or None."""
    w = prev.writes[0]
    rhs = list(prev.parts[1:])
    if not rhs or not (isinstance(rhs[0], str) and rhs[0].startswith(" = ")):
        return None
    rhs[0] = rhs[0][3:]
    rhs = [x for x in rhs if x != ""]
    at = [i for i, x in enumerate(s.parts) if x == ("v", w)]
    if len(at) != 1 or at[0] < 1:
        return None
    i = at[0]
    before = s.parts[i - 1] if isinstance(s.parts[i - 1], str) else ""
    after = s.parts[i + 1] if i + 1 < len(s.parts) and isinstance(
        s.parts[i + 1], str) else ""
    if after.startswith((".", "[")):
        code = _render(rhs, lambda v: "v", lambda m: "self.m")
        try:
            simple = isinstance(ast.parse(code, mode="eval").body,
                                (ast.Call, ast.Name, ast.Attribute,
                                 ast.Subscript))
        except SyntaxError:
            return None
        if not simple:
            rhs = ["("] + rhs + [")"]
    elif not (before.endswith(("(", ", "))
              and after.startswith((")", ","))):
        return None
    parts = s.parts[:i] + rhs + s.parts[i + 1:]
    merged = []
    for x in parts:  # adjacent strings as one part
        if isinstance(x, str) and merged and isinstance(merged[-1], str):
            merged[-1] += x
        else:
            merged.append(x)
    reads = [v for v in prev.reads] + [v for v in s.reads if v != w]
    out = Stmt(merged, s.writes, reads, prev.mods + [
        m for m in s.mods if m not in prev.mods], s.comment or prev.comment,
        guard=s.guard)
    return out


def _closes_at_end(s: Stmt) -> bool:
    text = "".join(p if isinstance(p, str) else "x" for p in s.parts)
    code = text.split(" = ", 1)[1]
    depth = 0
    for i, ch in enumerate(code):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i == len(code) - 1
    return False


def _canon_part(x, r: Region) -> str:
    if isinstance(x, str):
        return x
    if x[0] == "v":
        return "X" if x[1] == r.c_in else f"v{x[1]}"
    return "m"


def _render(parts, var, mod) -> str:
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif part[0] == "v":
            out.append(var(part[1]))
        else:
            out.append(mod(part[1]))
    return "".join(out)


def _stage(token: str) -> str:
    """``block4b`` -> ``block4`` (stage 4, block b); ``layer3`` ->
    ``layer``."""
    m = re.fullmatch(r"([A-Za-z_]*\d+)[a-z]", token)
    return m.group(1) if m else _stem(token)


def _stem(token: str) -> str:
    return token.rstrip("0123456789")


def _common_prefix(names: list[str]) -> str:
    if not names:
        return ""
    toks = [n.split("_") for n in names]
    out = []
    for group in zip(*toks):
        if len(set(group)) != 1:
            break
        out.append(group[0])
    if len(out) == min(len(t) for t in toks) and len(names) > 1:
        out = out[:-1] if len(out) > 1 else out
    return "_".join(out)


def _run_name(prefixes: list[str], n: int, bare: bool) -> str:
    """``conv2_block1 .. conv2_block3`` -> ``conv2``; ``layer_0 ..
    layer_11`` -> ``layers``; nothing in common -> ``blocks``."""
    if n == 1:
        return prefixes[0] or ("layer" if bare else "block")
    if not all(prefixes):
        return "layers" if bare else "blocks"
    stages = {_stage(p) for p in prefixes}
    if len(stages) == 1 and all(re.fullmatch(r"[A-Za-z_]*\d+[a-z]", p)
                                for p in prefixes):
        return stages.pop()  # block4b, block4c -> block4
    toks = [p.split("_") for p in prefixes]
    out = []
    for group in zip(*toks):
        if len(set(group)) == 1:
            out.append(group[0])
            continue
        stems = {_stem(g) for g in group}
        if len(stems) == 1 and next(iter(stems)):
            if not out:
                out.append(next(iter(stems)) + "s")
            else:
                out[-1] += "s" if not out[-1].endswith("s") and len(
                    out) and not out[-1][-1:].isdigit() else ""
        elif out and not out[-1][-1:].isdigit():
            out[-1] += "s" if not out[-1].endswith("s") else ""
        break
    else:
        if out and not out[-1][-1:].isdigit():
            out[-1] += "s"
    name = "_".join(out)
    return name or ("layers" if bare else "blocks")


_KIND = [(re.compile(r"^nn\.Conv(Transpose)?\dd$"), "conv"),
         (re.compile(r"^nn\.BatchNorm\dd$"), "bn"),
         (re.compile(r"^nn\.Linear$"), "fc"),
         (re.compile(r"^nn\.LayerNorm$"), "norm"),
         (re.compile(r"^nn\.Dropout\dd?$"), "dropout"),
         (re.compile(r"^MultiHeadAttention$"), "attn")]


def _kind(code: str) -> str:
    callee = code.split("(", 1)[0]
    for pattern, name in _KIND:
        if pattern.match(callee):
            return name
    return identifier(callee.rsplit(".", 1)[-1].lower(), "layer")


class _NoFit(Exception):
    """An instance is not the superset without its missing parts."""


@dataclass
class Superset:
    stmts: list  # Stmt, optional parts with their guard
    c_in: int
    c_out: int
    guard: dict  # (kind, position) -> flag name
    mods: list = field(default_factory=list)  # attrs, in order of use
    inst_mods: list = field(default_factory=list)  # per instance: attr|None
    inst_consts: list = field(default_factory=list)  # per instance, stmt
    inst_flags: list = field(default_factory=list)  # per instance: flags

    def fit(self, folder: "Folder", r: Region) -> bool:
        """Check ``r`` is this without the parts it lacks, and record how
        its modules and numbers map onto these."""
        have = {self.guard[o] for o in r.opts if o in self.guard}
        if not self.mods:
            for s in self.stmts:
                for m in s.mods:
                    if m not in self.mods:
                        self.mods.append(m)
        subst, kept = {}, []
        for s in self.stmts:
            if s.guard is not None and s.guard not in have:
                rd = set(s.reads)
                if len(rd) == 2 and self.c_in in rd:  # x = identity + x
                    rd.discard(self.c_in)
                if len(s.writes) != 1 or len(rd) != 1:
                    return False
                subst[s.writes[0]] = rd.pop()
                continue
            kept.append(s)
        mine = folder._canon(kept, self.c_in, subst)
        full = folder._canon(folder.stmts[r.start:r.end], r.c_in, {})
        if mine is None or full is None or mine[0] != full[0]:
            return False
        out = self.c_out
        while out in subst:
            out = subst[out]
        writes = [w for s in kept for w in s.writes]
        theirs = [w for s in folder.stmts[r.start:r.end] for w in s.writes]
        if out not in writes or writes.index(out) != theirs.index(r.c_out):
            return False
        by = dict(zip(mine[1], full[1]))
        self.inst_mods.append([by.get(m) for m in self.mods])
        consts, it = [], iter(folder.stmts[r.start:r.end])
        for s in self.stmts:
            if s.guard is not None and s.guard not in have:
                consts.append(None)
                continue
            st = next(it)
            consts.append([v for part in st.parts if isinstance(part, str)
                           and _literals_ok(part)
                           for v in _LITERAL.findall(part)])
        self.inst_consts.append(consts)
        self.inst_flags.append(have)
        return True


def _lookup(by_values: dict, values: tuple):
    """The argument that already holds ``values`` (None where an instance
    lacks the part: only the same gaps share an argument)."""
    return by_values.get(values)


class ClassSpec:
    """One block class: its source and how each instance is built."""

    def __init__(self, folder: Folder, rs: list[Region], names: Namespace,
                 helpers: dict):
        self.folder = f = folder
        self.regions = rs
        self.sup = sup = f._superset(rs)
        mods = sup.mods
        inst = sup.inst_mods  # per instance, per slot: its attr or None
        group_of = {m: s.guard for s in sup.stmts for m in s.mods}
        # submodule names: the Keras names past the block's common prefix
        # when every instance agrees, else the module kind
        slots = Namespace({"x", "identity", "shortcut"}
                          | set(sup.guard.values()))
        self.slot_of: dict[str, str] = {}
        per_slot = []
        for k in range(len(mods)):
            rests = set()
            for i, r in enumerate(rs):
                if inst[i][k] is None:
                    continue
                pre = f._prefix(r)
                kn = f.decls[inst[i][k]].keras_name
                rest = kn[len(pre):].strip("_") if pre and kn.startswith(
                    pre) else ""
                rests.add(rest)
            rest = rests.pop() if len(rests) == 1 else ""
            m = re.fullmatch(r"(\d+)_([A-Za-z]\w*)", rest)
            if m:
                rest = f"{m.group(2)}{m.group(1)}"
            base = rest or _kind(f.decls[mods[k]].code)
            per_slot.append(slots.name(("slot", k), base, "layer"))
        for i in range(len(rs)):
            for k in range(len(mods)):
                if inst[i][k] is not None:
                    self.slot_of[inst[i][k]] = per_slot[k]
        for k, m in enumerate(mods):
            self.slot_of[m] = per_slot[k]
        self.slots = per_slot
        self.slot_guard = [group_of.get(m) for m in mods]
        # constructor values: those that vary become arguments
        params = []  # (name, [value per instance])
        self.code = []  # per slot: text with {param} holes
        pnames = Namespace(set(per_slot) | {"self", "x"}
                           | set(sup.guard.values()))
        by_values: dict[tuple, str] = {}
        for k in range(len(mods)):
            have = [i for i in range(len(rs)) if inst[i][k] is not None]
            filled = _filled([f.decls[inst[i][k]].code for i in have],
                             helpers)
            temps = {i: _template(c) for i, c in zip(have, filled)}
            t0 = temps[have[0]]
            text = []
            for part in t0.text:
                if isinstance(part, str):
                    text.append(part)
                    continue
                values = tuple(temps[i].values[part] if i in temps
                               else None for i in range(len(rs)))
                known = {v for v in values if v is not None}
                if len(known) == 1:
                    text.append(known.pop())
                    continue
                name = _lookup(by_values, values)
                if name is None:
                    callee, slot = t0.holes[part]
                    base = _param_name(callee, slot, helpers)
                    if pnames.name(("p", base), base) != base or \
                            base in {pn for pn, _ in params}:
                        base = pnames.name(("p", k, part),
                                           f"{per_slot[k]}_{base}")
                    name = base
                    by_values[values] = name
                    params.append((name, values))
                text.append(name)
            self.code.append("".join(text))
        # numbers in forward that differ: arguments kept as attributes
        self.forward_values = []  # per statement, per number: its text
        self.attrs = []  # params forward reads as self.<name>
        for j in range(len(sup.stmts)):
            row = [c[j] for c in sup.inst_consts]
            first = next(c for c in row if c is not None)
            texts = []
            for n, v0 in enumerate(first):
                values = tuple(c[n] if c is not None else None
                               for c in row)
                known = {v for v in values if v is not None}
                if len(known) == 1:
                    texts.append(v0)
                    continue
                name = _lookup(by_values, values)
                if name is None:
                    name = pnames.name(("c", j, n), "value")
                    by_values[values] = name
                    params.append((name, values))
                if name not in self.attrs:
                    self.attrs.append(name)
                texts.append(f"self.{name}")
            self.forward_values.append(texts)
        # optional parts: a flag each, False where most instances lack it
        self.flags = []  # (name, default)
        self.cond = {}  # flag -> the test forward writes
        self.init_cond = {}  # flag -> (test in __init__, module or None)
        for name in dict.fromkeys(sup.guard.values()):
            on = [name in h for h in sup.inst_flags]
            self.cond[name] = f"self.{name}"
            used = {t for s, texts in zip(sup.stmts, self.forward_values)
                    if s.guard == name for t in texts
                    if t.startswith("self.")}
            pv = dict(params)
            if len(used) == 1 and not any(
                    s.mods for s in sup.stmts if s.guard == name):
                p = used.pop()[5:]
                if [v is not None for v in pv[p]] == on:
                    # a number only instances with the part have: the
                    # number is the flag (F.pad(x, self.pad))
                    params = [(name if n == p else n, v) for n, v in params]
                    self.attrs = [name if n == p else n for n in self.attrs]
                    self.forward_values = [
                        [f"self.{name}" if t == f"self.{p}" else t
                         for t in texts] for texts in self.forward_values]
                    self.cond[name] = f"self.{name} is not None"
                    continue
            ks = [k for k, g in enumerate(self.slot_guard) if g == name]
            hole = [n for n, v in params if [x is not None for x in v] == on
                    and ks and any(re.search(rf"\b{n}\b", self.code[k])
                                   for k in ks)]
            if hole:  # its module's value says whether it is there
                self.cond[name] = f"self.{per_slot[ks[0]]} is not None"
                self.init_cond[name] = (f"{hole[0]} is not None",
                                        per_slot[ks[0]])
                continue
            self.flags.append((name, sum(on) * 2 > len(rs)))
        self.params = params
        self.index = {id(r): i for i, r in enumerate(rs)}
        self.base = self._class_name()
        self.name = None
        self.source = None

    def finish(self, name: str) -> None:
        self.name = name
        self.source = self._source()

    def projection(self) -> bool:
        """True when a module runs off the main path (a shortcut conv)."""
        main, _ = self._main_path()
        return any(s.mods and not (set(s.writes) & main)
                   for s in self.sup.stmts)

    def _main_path(self):
        """The values on the longest path (in statements) from the
        block's input to its output, and the path in order."""
        sup = self.sup
        depth = {sup.c_in: 0}
        prev = {}
        for s in sup.stmts:
            best = max(((depth[v], v) for v in s.reads if v in depth),
                       default=None)
            if best is None:
                continue
            for w in s.writes:
                depth[w] = best[0] + 1
                prev[w] = best[1]
        path = [sup.c_out]
        while path[-1] in prev:
            path.append(prev[path[-1]])
        path.reverse()
        if path[0] != sup.c_in:
            path = [sup.c_in, sup.c_out]
        return set(path), path

    def _class_name(self) -> str:
        f, rs = self.folder, self.regions
        prefixes = [f._prefix(r) for r in rs]
        toks = [p.split("_") for p in prefixes if p]
        words = []
        if toks and len(toks) == len(rs):
            group = {_stem(t[-1]) for t in toks}
            if len(group) == 1 and next(iter(group)):
                words.append(next(iter(group)))
        if not words:
            words = [self._role()]
        return class_identifier("_".join(words))

    def _role(self) -> str:
        sup = self.sup
        last = sup.stmts[-1]
        if sup.c_in in last.reads and "torch.cat" in "".join(
                p for p in last.parts if isinstance(p, str)):
            return "dense_layer"
        if any(sup.c_in in s.reads for s in sup.stmts[1:]):
            return "residual_block"
        return "block"

    def instance(self, r: Region) -> str:
        i = self.index[id(r)]
        holes = {n for n, values in self.params if None in values}
        args = [values[i] for n, values in self.params if n not in holes]
        args += [f"{n}={values[i]}" for n, values in self.params
                 if n in holes and values[i] is not None]
        have = self.sup.inst_flags[i]
        args += [f"{n}={n in have}" for n, default in self.flags
                 if (n in have) != default]
        return f"{self.name}({', '.join(args)})"

    def _source(self) -> str:
        f = self.folder
        holes = {n for n, values in self.params if None in values}
        args = ["self"] + [n for n, _ in self.params if n not in holes]
        args += [f"{n}=None" for n, _ in self.params if n in holes]
        args += [f"{n}={d}" for n, d in self.flags]
        lines = [f"class {self.name}(nn.Module):"]
        lines.append(f"    def __init__({', '.join(args)}):")
        lines.append("        super().__init__()")
        for n, _ in self.flags:
            lines.append(f"        self.{n} = {n}")
        guard = None
        for k, m in enumerate(self.sup.mods):
            g = self.slot_guard[k]
            pad = "        " + ("    " if g else "")
            if g and g != guard:
                test, none = self.init_cond.get(g, (g, None))
                if none:
                    lines.append(f"        self.{none} = None")
                lines.append(f"        if {test}:")
            guard = g
            lines.append(f"{pad}self.{self.slots[k]} = {self.code[k]}")
            for extra in f.decls[m].init_lines:
                lines.append(pad + re.sub(
                    rf"\bself\.{re.escape(m)}\b", f"self.{self.slots[k]}",
                    extra))
        for name in self.attrs:
            lines.append(f"        self.{name} = {name}")
        body, gnames = self._forward()
        lines.append("")
        lines.append("    def forward(" + ", ".join(["self", "x"] + gnames)
                     + "):")
        lines += ["        " + ln for ln in body]
        return "\n".join(lines)

    def _forward(self):
        """The block's statements with its own names: ``x`` along the
        longest path from input to output, ``identity`` for the input
        where a branch also reads it, producer names elsewhere; an
        optional part under ``if self.<flag>:``."""
        f, sup = self.folder, self.sup
        c_in, c_out = sup.c_in, sup.c_out
        stmts = self._with_values(sup.stmts)
        gnames = []
        names = {}
        ns = Namespace({"x", "identity", "self"})
        for g in self.regions[0].globals_:
            names[g] = ns.name(("g", g), f.names[g], "mask")
            gnames.append(names[g])
        main, _ = self._main_path()
        deff = {}
        last = {}
        for k, s in enumerate(stmts):
            for w in s.writes:
                deff[w] = k
            for v in s.reads:
                last[v] = k
        deff[c_in] = -1
        ordered = sorted(main, key=lambda v: deff.get(v, 0))
        lines = []
        for i, v in enumerate(ordered):
            nxt = ordered[i + 1] if i + 1 < len(ordered) else None
            if nxt is None or last.get(v, -1) <= deff[nxt]:
                names[v] = "x"
            else:
                names[v] = None  # named below
        if names.get(c_in) is None:
            names[c_in] = "identity"
            lines.append("identity = x")
        for k, s in enumerate(stmts):
            for w in s.writes:
                if w in names and names[w] is not None:
                    continue
                hint = None
                for part in s.parts:
                    if isinstance(part, tuple) and part[0] == "m":
                        hint = self.slot_of[part[1]]
                        break
                joins = [t for t in stmts[k + 1:] if w in t.reads]
                if joins and any(x in main for x in joins[0].writes) and \
                        w not in main:
                    hint = "shortcut"
                names[w] = ns.name(("v", w), hint or f.names[w], "t")
        second = ordered[1] if len(ordered) > 1 else None
        order = _rejoin(self._shortcut_last(stmts, main, names), True,
                        keep=[c_out])
        self._check_guards(order, names)
        guard = None
        for s in order:
            # x still holds the input until the next main value is written
            early = second in s.writes and names[c_in] != "x"
            text = _render(s.parts, lambda v: "x" if early and v == c_in
                           else names[v],
                           lambda m: f"self.{self.slot_of[m]}")
            if s.guard and s.guard != guard:
                lines.append(f"if {self.cond[s.guard]}:")
            guard = s.guard
            lines.append(("    " if s.guard else "") + text)
        lines.append(f"return {names[c_out]}")
        return lines, gnames

    def _check_guards(self, order: list[Stmt], names: dict) -> None:
        """Skipping an optional part leaves its input where its output
        would be: each part is one run of lines whose input and output
        have the same name."""
        c_in = self.sup.c_in
        seen = set()
        for i, s in enumerate(order):
            if s.guard is None or (i and order[i - 1].guard == s.guard):
                continue
            if s.guard in seen:
                raise _NoFit
            seen.add(s.guard)
            run = [s]
            for t in order[i + 1:]:
                if t.guard != s.guard:
                    break
                run.append(t)
            inside = {w for t in run for w in t.writes}
            ins = {v for t in run for v in t.reads if v not in inside}
            if len(ins) == 2 and c_in in ins:
                ins.discard(c_in)
            if len(ins) != 1 or len(run[-1].writes) != 1 or \
                    names[ins.pop()] != names[run[-1].writes[0]]:
                raise _NoFit

    def _with_values(self, stmts: list[Stmt]) -> list[Stmt]:
        """Copies of the statements with each number as the block writes
        it (the instances' common value, or ``self.<argument>``)."""
        out = []
        for st, texts in zip(stmts, self.forward_values):
            values = iter(texts)
            parts = [_LITERAL.sub(lambda m: next(values), x)
                     if isinstance(x, str) and _literals_ok(x) else x
                     for x in st.parts]
            out.append(replace(st, parts=parts))
        return out

    def _shortcut_last(self, stmts: list[Stmt], main: set, names) -> list:
        """The block's statements with each off-main-path statement moved
        down to just before its first reader, so the main branch reads
        first and the shortcut comes where it joins.  Only statements that
        draw no random numbers move (train mode keeps Keras's order), and
        only when what they read keeps its name until then."""
        f = self.folder
        order = list(stmts)
        for s in reversed(stmts):
            if set(s.writes) & main or not s.writes:
                continue
            text = _render(s.parts, lambda v: names[v], lambda m: m)
            codes = " ".join(f.decls[m].code for m in s.mods)
            if re.search(r"(?i)dropout|noise|rand|bernoulli", text + codes):
                continue
            if any(names.get(v) == "x" for v in s.reads):
                continue
            at = order.index(s)
            users = [i for i in range(at + 1, len(order))
                     if set(order[i].reads) & set(s.writes)]
            if not users or users[0] == at + 1:
                continue
            order.insert(users[0], s)
            del order[at]
        return order


def _covered(regions) -> int:
    """Statements inside repeated blocks."""
    return sum(r.end - r.start for r in regions)


def fold(program: Program, bool_vars: set[str] | None = None) -> Program:
    """The program with its repeated blocks folded into classes (the flat
    program itself when nothing repeats, or when a folded forward would
    read a name it does not define: folding never guesses)."""
    try:
        out = Folder(program, bool_vars or set()).run()
    except _NoFit:  # a block with optional parts did not check out
        out = Folder(program, bool_vars or set(), optional=False).run()
    if out is program:
        return out
    known = set(dir(__builtins__) if not isinstance(__builtins__, dict)
                else __builtins__) | {"F", "torch", "nn", "self"}
    known |= set(program.helpers) | {
        n for code in program.helpers.values()
        for n in re.findall(r"^(?:def|class) (\w+)", code, re.M)}
    sources = list(out.classes)
    body = "\n".join(out.body + ["return " + ", ".join(out.returns)])
    args = ", ".join(["self"] + [t.var for t in out.inputs])
    sources.append(f"def forward({args}):\n" + "\n".join(
        "    " + ln for ln in body.split("\n")))
    for code in sources:
        if not _names_defined(code, known):
            return program
    return out


def _names_defined(code: str, known: set) -> bool:
    """Every function in ``code`` reads only its arguments, names it
    assigned before, and ``known`` names."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        defined = {a.arg for a in fn.args.args} | known
        if not _block_defined(fn.body, defined):
            return False
    return True


def _block_defined(stmts, defined: set) -> bool:
    for st in stmts:
        if isinstance(st, ast.For):
            if not _loads(st.iter, defined):
                return False
            inner = defined | {n.id for n in ast.walk(st.target)
                               if isinstance(n, ast.Name)}
            if not _block_defined(st.body, inner):
                return False
            defined |= inner
            continue
        value = getattr(st, "value", None)
        if value is not None and not _loads(value, defined):
            return False
        for t in getattr(st, "targets", []):
            defined |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    return True


def _loads(node, defined: set) -> bool:
    bound = {n.id for sub in ast.walk(node)
             if isinstance(sub, (ast.comprehension, ast.Lambda))
             for n in ast.walk(sub) if isinstance(n, ast.Name)}
    bound |= {a.arg for sub in ast.walk(node) if isinstance(sub, ast.Lambda)
              for a in sub.args.args}
    return all(n.id in defined or n.id in bound for n in ast.walk(node)
               if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load))
