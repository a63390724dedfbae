"""Helpers for rules that users write (``--rules`` files, rule packs)."""
from __future__ import annotations

from .common import as_f32, shape_args

__all__ = ["parameters"]


def parameters(**weights) -> tuple[str, dict]:
    """A module holding each stored weight as a parameter, as Keras stores
    it, and its state-dict entries::

        module, state = parameters(gate=gate, scale=scale)
        return Emit([Out(chain(f"{x.expr} * self.{call.attr}.gate"), ...)],
                    module=module, state=state)

    ``weights`` are the :class:`~migrate.weights.LazyArray` values of
    ``call.weights([...])`` by the attribute name forward code uses
    (``self.<attr>.gate``); values are read only when the state dict is."""
    for name in weights:
        if not (name.isidentifier() and name.isascii()):
            raise ValueError(f"parameter name {name!r} is not an identifier")
    items = ", ".join(f"{name!r}: nn.Parameter(torch.empty("
                      f"{shape_args(w.shape)}))" for name, w in
                      weights.items())
    state = {name: (lambda w=w: as_f32(w.read()))
             for name, w in weights.items()}
    return f"nn.ParameterDict({{{items}}})", state
