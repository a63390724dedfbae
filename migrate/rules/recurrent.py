"""Recurrent layers: LSTM, GRU, SimpleRNN, Bidirectional, ConvLSTM1D/2D/3D,
and the sequence helpers TimeDistributed, RepeatVector and Masking.

An RNN whose cell torch has (LSTM with tanh/sigmoid, GRU with
``reset_after=True``, SimpleRNN with tanh or relu) becomes a batch-first
``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (Keras 3's own torch backend maps
weights the same way: ``kernel.T``, ``recurrent_kernel.T``, the bias on the
input side; GRU gates reordered from Keras's z, r, h to torch's r, z, n).
Any other cell is a subclass of the torch module written into ``model.py``
(``KerasLSTM``, ``KerasGRU``, ``KerasSimpleRNN``; ``ConvLSTM``) with the
same weights and call convention, so the forward code reads the same
either way: ``self.lstm(x)[0]``.

Anything beyond a plain call (a Keras mask, initial or returned states)
goes through ``run_rnn``, a helper written into ``model.py`` that takes
Keras's own arguments.  With a mask it steps through time: at a masked step
the state is kept and the previous output repeated (zeros with
``zero_output_for_mask``, which Bidirectional forces when returning
sequences) -- exact for padding anywhere, not only at the end.

Which mask a layer sees follows Keras: an explicit ``mask=`` argument
(Keras 3 writes the one it computed into the config), else the mask of the
input sequence -- except that Keras 3 passes no mask at all to a layer
called with ``initial_state`` tensors (it only fills ``mask`` for a call
with one tensor argument), while Keras 2 does.

``dropout`` and ``recurrent_dropout`` act in ``train()`` mode as in Keras
training (masks drawn once per call and kept over the steps; see
``_dropout_per``): the module is then a ``KerasLSTM`` (``KerasGRU``,
``KerasSimpleRNN``), an ``nn.LSTM`` subclass that runs as ``nn.LSTM`` in
``eval()`` and steps through time with the masks only where it must
(recurrent dropout, one mask per gate, other activations).

``stateful=True`` and ``time_major=True`` are refused, and so is ConvLSTM
dropout on a masked input.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..compose import subst
from ..graph import Layer, Node
from ..layout import Layout, identity
from ..weights import LayerWeights, WeightEntry, clean_weight_name
from .activations import activation as activation_step
from .base import (HOLE, IN, MASK, TMP, Call, Emit, Out, Tensor, Transformed,
                   chain)
from .common import as_f32, lit, ntuple, short
from .padding import conv_out, same_pads, torch_pad_arg
from .registry import lookup, rule

RUN_RNN = '''\
def run_rnn(rnn, x, mask=None, initial_state=None, return_sequences=False,
            return_state=False, go_backwards=False,
            zero_output_for_mask=False, unroll=False):
    """Run ``rnn`` over x (B, T, ...) as a Keras recurrent layer with these
    arguments does.  ``rnn`` is a batch-first nn.LSTM, nn.GRU or nn.RNN (or
    a module called like them).  Where ``mask`` (B, T) is False the step is
    skipped: the state is kept and the previous output repeated (zeros with
    ``zero_output_for_mask``).  ``go_backwards`` runs from the last step to
    the first and keeps the outputs in that order.  States are (B, units)
    tensors, as in Keras.  ``unroll`` follows Keras's unrolled loop, which
    zeroes masked outputs after the loop, with the mask in input order
    even when going backwards.

    A mask that pads the end of each row (the usual case) runs ``rnn`` once
    (run_padded_rnn); any other mask, and torch.export, step through time
    (run_masked_steps)."""
    state = None
    if initial_state is not None:  # torch wants (1, B, units)
        state = tuple(s[None] for s in initial_state)
        state = state if len(state) > 1 else state[0]
    if mask is None:
        outputs, state = rnn(x.flip(1) if go_backwards else x, state)
        output = outputs[:, -1]
    elif (not unroll and not torch.compiler.is_exporting()
          and (not return_state or type(rnn) is nn.LSTM
               or isinstance(rnn, (nn.GRU, nn.RNN)))
          and is_end_padded(mask)):
        outputs, output, state = run_padded_rnn(
            rnn, x, mask.sum(1), state, go_backwards, zero_output_for_mask,
            return_state)
    else:
        outputs, output, state = run_masked_steps(
            rnn, x, mask, state, go_backwards, zero_output_for_mask, unroll)
    result = outputs if return_sequences else output
    if not return_state:
        return result
    states = state if isinstance(state, tuple) else (state,)
    return (result, *(s[0] for s in states))


def is_end_padded(mask):
    """Each row of ``mask`` (B, T) is True up to its length, then False
    (a tensor with no values, on the meta device, takes the step loop)."""
    if mask.is_meta:
        return False
    return bool((mask[:, 1:] <= mask[:, :-1]).all())


def run_padded_rnn(rnn, x, lengths, state, go_backwards,
                   zero_output_for_mask, return_state):
    """run_rnn's (outputs, last output, state) for rows valid for their
    first ``lengths`` (B,) steps, with one call of ``rnn``: the outputs at
    the valid steps do not depend on the padding after them.  Backwards,
    each row's valid steps are first reversed in place.  The final state is
    the output at the last valid step, except an nn.LSTM's (h, c), which a
    packed sequence gives; the state is None unless ``return_state``."""
    batch, steps = x.shape[:2]
    rows = torch.arange(batch, device=x.device)[:, None]
    t = torch.arange(steps, device=x.device)
    if go_backwards:  # row b: x[b, L-1], ..., x[b, 0], then its padding
        x = x[rows, (lengths[:, None] - 1 - t) % steps]
    if return_state and isinstance(rnn, nn.LSTM):
        packed = nn.utils.rnn.pack_padded_sequence(
            x, lengths.clamp(min=1).cpu(), batch_first=True,
            enforce_sorted=False)
        outputs, final = rnn(packed, state)
        outputs = nn.utils.rnn.pad_packed_sequence(
            outputs, batch_first=True, total_length=steps)[0]
        last = final[0][0]
    else:
        outputs = rnn(x, state)[0]
        last = outputs[rows[:, 0], (lengths - 1).clamp(min=0)]
        final = last[None]
    some = (lengths > 0).view(-1, *[1] * (last.dim() - 1))
    last = torch.where(some, last, 0.0)  # a row with no valid step
    valid = (t < lengths[:, None]).view(batch, steps,
                                        *[1] * (outputs.dim() - 2))
    if go_backwards:  # Keras's order: the padding first, as zeros
        outputs = outputs[rows, (t - steps + lengths[:, None]) % steps]
        outputs = torch.where(valid.flip(1), outputs, 0.0)
        output = last
    else:
        fill = 0.0 if zero_output_for_mask else last[:, None]
        outputs = torch.where(valid, outputs, fill)
        output = outputs[:, -1]
    if not return_state:
        return outputs, output, None
    if state is None:
        state = (torch.zeros_like(final[0]),) * 2 \\
            if isinstance(final, tuple) else torch.zeros_like(final)
    if isinstance(final, tuple):
        state = tuple(torch.where(some, f, s) for f, s in zip(final, state))
    else:
        state = torch.where(some, final, state)
    return outputs, output, state


def run_masked_steps(rnn, x, mask, state, go_backwards,
                     zero_output_for_mask, unroll):
    """run_rnn's (outputs, last output, state) for any mask: one call of
    ``rnn`` per time step, keeping the state where the mask is False."""
    given = mask
    if go_backwards:
        x, mask = x.flip(1), mask.flip(1)
    draw = getattr(rnn, "dropout_masks", None)  # same at every step
    extra = () if draw is None else (draw(x),)
    outputs, output = [], None
    for t in range(x.shape[1]):
        step, new = rnn(x[:, t:t + 1], state, *extra)
        keep = mask[:, t].view(-1, *[1] * (step.dim() - 2))
        if torch.is_tensor(new):
            old = torch.zeros_like(new) if state is None else state
            state = torch.where(keep, new, old)
        else:
            old = state or tuple(torch.zeros_like(s) for s in new)
            state = tuple(torch.where(keep, n, s) for n, s in zip(new, old))
        if output is None or (zero_output_for_mask and not unroll):
            output = torch.zeros_like(step[:, 0])
        output = torch.where(keep, step[:, 0], output)
        outputs.append(output)
    outputs = torch.stack(outputs, 1)
    if zero_output_for_mask and unroll:
        output = torch.where(keep, output, 0.0)
        keep = given.view(*given.shape, *[1] * (outputs.dim() - 2))
        outputs = torch.where(keep, outputs, 0.0)
    return outputs, output, state
'''

RNN_DROPOUT = '''\
def rnn_dropout_masks(rnn, x):
    \"\"\"Keras's dropout masks for one call of ``rnn`` on x (B, T, features):
    (input masks, state masks), each a list of one (B, size) mask per gate,
    drawn once and kept over the time steps -- the same mask for every gate
    unless ``rnn.dropout_per == "gate"`` -- or None where nothing is dropped
    (eval(), a rate of 0, or tf.keras's fused kernel, whose input dropout is
    drawn for every step in forward).\"\"\"
    gates = rnn.weight_ih_l0.shape[0] // rnn.hidden_size

    def draw(rate, size):
        if not (rnn.training and 0.0 < rate < 1.0):
            return None
        ones = x.new_ones(x.shape[0], size)
        if rnn.dropout_per == "gate":
            return [F.dropout(ones, rate) for _ in range(gates)]
        return [F.dropout(ones, rate)] * gates

    input_rate = 0.0 if rnn.dropout_per == "step" else rnn.input_dropout
    return (draw(input_rate, x.shape[-1]),
            draw(rnn.recurrent_dropout, rnn.hidden_size))


def gate_linear(x, weight, bias=None, masks=None):
    \"\"\"F.linear(x, weight, bias) where the rows of each gate see x times
    that gate's dropout mask (``masks``: one per gate, or None).\"\"\"
    if masks is None:
        return F.linear(x, weight, bias)
    if all(m is masks[0] for m in masks):  # one mask for every gate
        return F.linear(x * masks[0], weight, bias)
    blocks = weight.chunk(len(masks))
    out = torch.cat([F.linear(x * m, w) for m, w in zip(masks, blocks)], -1)
    return out if bias is None else out + bias
'''

KERAS_LSTM = '''\
class KerasLSTM(nn.LSTM):
    \"\"\"A batch-first nn.LSTM that also computes what a Keras LSTM computes
    beyond it: other activations, and Keras's dropout while training (see
    rnn_dropout_masks).  Otherwise it runs as nn.LSTM.  Gates in Keras (and
    torch) order: input, forget, cell, output.\"\"\"

    def __init__(self, input_size, hidden_size, bias=True,
                 activation=torch.tanh, recurrent_activation=torch.sigmoid,
                 dropout=0.0, recurrent_dropout=0.0, dropout_per="sequence"):
        super().__init__(input_size, hidden_size, bias=bias,
                         batch_first=True)
        self.activation = activation
        self.recurrent_activation = recurrent_activation
        self.input_dropout = dropout  # nn.LSTM's dropout is between layers
        self.recurrent_dropout = recurrent_dropout
        self.dropout_per = dropout_per

    def dropout_masks(self, x):
        return rnn_dropout_masks(self, x)

    def forward(self, x, state=None, dropout_masks=None):
        if self.training and self.dropout_per == "step":
            x = F.dropout(x, self.input_dropout)
        masks_x, masks_h = dropout_masks or self.dropout_masks(x)
        native = (self.activation is torch.tanh
                  and self.recurrent_activation is torch.sigmoid)
        one_mask = masks_x is None or self.dropout_per != "gate"
        if native and masks_h is None and one_mask:
            if masks_x is not None:  # one input mask for all steps
                x = x * masks_x[0][:, None]
            return super().forward(x, state)
        if state is None:
            state = (x.new_zeros(1, x.shape[0], self.hidden_size),) * 2
        h, c = state[0][0], state[1][0]
        bias_ih = self.bias_ih_l0 if self.bias else None
        bias_hh = self.bias_hh_l0 if self.bias else None
        outputs = []
        for x_t in x.unbind(1):
            z = (gate_linear(x_t, self.weight_ih_l0, bias_ih, masks_x)
                 + gate_linear(h, self.weight_hh_l0, bias_hh, masks_h))
            i, f, g, o = z.chunk(4, dim=-1)
            c = (self.recurrent_activation(f) * c
                 + self.recurrent_activation(i) * self.activation(g))
            h = self.recurrent_activation(o) * self.activation(c)
            outputs.append(h)
        return torch.stack(outputs, 1), (h[None], c[None])
'''

KERAS_GRU = '''\
class KerasGRU(nn.GRU):
    \"\"\"A batch-first nn.GRU that also computes what a Keras GRU computes
    beyond it: reset_after=False (the reset gate applied to the state
    before its matrix product, as in the original GRU; one bias, on the
    input side), other activations, and Keras's dropout while training
    (see rnn_dropout_masks).  Otherwise it runs as nn.GRU.  Gates in torch
    order: reset (r), update (z), new (n).\"\"\"

    def __init__(self, input_size, hidden_size, bias=True, reset_after=True,
                 activation=torch.tanh, recurrent_activation=torch.sigmoid,
                 dropout=0.0, recurrent_dropout=0.0, dropout_per="sequence"):
        super().__init__(input_size, hidden_size, bias=bias and reset_after,
                         batch_first=True)
        if bias and not reset_after:
            self.bias_ih_l0 = nn.Parameter(torch.empty(3 * hidden_size))
        self.reset_after = reset_after
        self.activation = activation
        self.recurrent_activation = recurrent_activation
        self.input_dropout = dropout  # nn.GRU's dropout is between layers
        self.recurrent_dropout = recurrent_dropout
        self.dropout_per = dropout_per

    def dropout_masks(self, x):
        return rnn_dropout_masks(self, x)

    def forward(self, x, h=None, dropout_masks=None):
        if self.training and self.dropout_per == "step":
            x = F.dropout(x, self.input_dropout)
        masks_x, masks_h = dropout_masks or self.dropout_masks(x)
        native = (self.reset_after and self.activation is torch.tanh
                  and self.recurrent_activation is torch.sigmoid)
        one_mask = masks_x is None or self.dropout_per != "gate"
        if native and masks_h is None and one_mask:
            if masks_x is not None:  # one input mask for all steps
                x = x * masks_x[0][:, None]
            return super().forward(x, h)
        h = x.new_zeros(x.shape[0], self.hidden_size) if h is None else h[0]
        bias_ih = getattr(self, "bias_ih_l0", None)
        bias_hh = getattr(self, "bias_hh_l0", None)
        w_rz, w_n = self.weight_hh_l0.split(2 * self.hidden_size)
        outputs = []
        for x_t in x.unbind(1):
            x_r, x_z, x_n = gate_linear(x_t, self.weight_ih_l0, bias_ih,
                                        masks_x).chunk(3, dim=-1)
            if self.reset_after:
                h_r, h_z, h_n = gate_linear(h, self.weight_hh_l0, bias_hh,
                                            masks_h).chunk(3, dim=-1)
            else:
                h_r, h_z = gate_linear(h, w_rz, None,
                                       masks_h and masks_h[:2]).chunk(2, -1)
            r = self.recurrent_activation(x_r + h_r)
            z = self.recurrent_activation(x_z + h_z)
            if self.reset_after:
                n = self.activation(x_n + r * h_n)
            else:
                n = self.activation(x_n + gate_linear(
                    r * h, w_n, None, masks_h and masks_h[2:]))
            h = z * h + (1 - z) * n
            outputs.append(h)
        return torch.stack(outputs, 1), h[None]
'''

KERAS_SIMPLE_RNN = '''\
class KerasSimpleRNN(nn.RNN):
    \"\"\"A batch-first nn.RNN that also computes what a Keras SimpleRNN
    computes beyond it: another ``activation`` (used instead of
    ``nonlinearity``), and Keras's dropout while training (see
    rnn_dropout_masks).  Otherwise it runs as nn.RNN.\"\"\"

    def __init__(self, input_size, hidden_size, bias=True,
                 nonlinearity="tanh", activation=None, dropout=0.0,
                 recurrent_dropout=0.0):
        super().__init__(input_size, hidden_size, nonlinearity=nonlinearity,
                         bias=bias, batch_first=True)
        self.activation = activation
        self.input_dropout = dropout  # nn.RNN's dropout is between layers
        self.recurrent_dropout = recurrent_dropout
        self.dropout_per = "sequence"

    def dropout_masks(self, x):
        return rnn_dropout_masks(self, x)

    def forward(self, x, h=None, dropout_masks=None):
        masks_x, masks_h = dropout_masks or self.dropout_masks(x)
        if self.activation is None and masks_h is None:
            if masks_x is not None:  # one input mask for all steps
                x = x * masks_x[0][:, None]
            return super().forward(x, h)
        activation = self.activation or getattr(torch, self.nonlinearity)
        h = x.new_zeros(x.shape[0], self.hidden_size) if h is None else h[0]
        bias_ih = self.bias_ih_l0 if self.bias else None
        bias_hh = self.bias_hh_l0 if self.bias else None
        outputs = []
        for x_t in x.unbind(1):
            z = (gate_linear(x_t, self.weight_ih_l0, bias_ih, masks_x)
                 + gate_linear(h, self.weight_hh_l0, bias_hh, masks_h))
            h = activation(z)
            outputs.append(h)
        return torch.stack(outputs, 1), h[None]
'''

CONV_LSTM = '''\
class ConvLSTM(nn.Module):
    """A Keras ConvLSTM layer: an LSTM whose products are convolutions.
    Called like a batch-first nn.LSTM on (B, T, C, *spatial) sequences.
    ``input_conv`` maps x_t to the gates (input, forget, cell, output) with
    the layer's kernel, strides and dilation; ``state_conv`` maps h with
    the recurrent kernel, stride 1.  ``input_pad`` / ``state_pad`` are
    F.pad arguments for TensorFlow's "same" padding, None for none.
    ``dropout`` / ``recurrent_dropout`` act while training as in Keras: one
    mask per gate and element of x_t / h, drawn at the first step and kept
    over the steps."""

    def __init__(self, input_conv, state_conv, input_pad=None,
                 state_pad=None, activation=torch.tanh,
                 recurrent_activation=torch.sigmoid, dropout=0.0,
                 recurrent_dropout=0.0):
        super().__init__()
        self.input_conv = input_conv
        self.state_conv = state_conv
        self.input_pad = input_pad
        self.state_pad = state_pad
        self.activation = activation
        self.recurrent_activation = recurrent_activation
        self.input_dropout = dropout
        self.recurrent_dropout = recurrent_dropout

    def gate_masks(self, x, rate):
        """Four dropout masks shaped like x (one per gate), or None."""
        if not (self.training and 0.0 < rate < 1.0):
            return None
        return [F.dropout(torch.ones_like(x), rate) for _ in range(4)]

    def forward(self, x, state=None):
        masks_x = masks_h = None
        outputs = []
        for x_t in x.unbind(1):
            if self.input_pad is not None:
                x_t = F.pad(x_t, self.input_pad)
            if masks_x is None:
                masks_x = self.gate_masks(x_t, self.input_dropout)
            z = gate_conv(self.input_conv, x_t, masks_x)
            if state is None:
                zeros = z.new_zeros(z[:, :z.shape[1] // 4].shape)[None]
                state = (zeros, zeros)
            h, c = state[0][0], state[1][0]
            if self.state_pad is not None:
                h = F.pad(h, self.state_pad)
            if masks_h is None:
                masks_h = self.gate_masks(h, self.recurrent_dropout)
            z = z + gate_conv(self.state_conv, h, masks_h)
            i, f, g, o = z.chunk(4, dim=1)
            c = (self.recurrent_activation(f) * c
                 + self.recurrent_activation(i) * self.activation(g))
            h = self.recurrent_activation(o) * self.activation(c)
            state = (h[None], c[None])
            outputs.append(h)
        return torch.stack(outputs, 1), state
'''

GATE_CONV = '''\
def gate_conv(conv, x, masks=None):
    """conv(x), where the output channels of each gate see x times that
    gate's dropout mask (``masks``: one per gate, or None)."""
    if masks is None:
        return conv(x)
    conv_nd = getattr(F, f"conv{x.dim() - 2}d")
    weights = conv.weight.chunk(len(masks))
    biases = [None] * len(masks) if conv.bias is None \\
        else conv.bias.chunk(len(masks))
    return torch.cat([conv_nd(x * m, w, b, conv.stride, conv.padding,
                              conv.dilation)
                      for m, w, b in zip(masks, weights, biases)], dim=1)
'''

RNN_CLASSES = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "rnn"}
_TORCH = {"lstm": "nn.LSTM", "gru": "nn.GRU", "rnn": "nn.RNN"}
_CUSTOM = {"lstm": ("KerasLSTM", KERAS_LSTM), "gru": ("KerasGRU", KERAS_GRU),
           "rnn": ("KerasSimpleRNN", KERAS_SIMPLE_RNN)}
_GATES = {"lstm": 4, "gru": 3, "rnn": 1}
_SIMPLE_CALL = re.compile(r"^([A-Za-z_][\w.]*)\(\{\}\)$")


# -- one recurrent layer's options --------------------------------------------
@dataclass
class RnnSpec:
    kind: str  # "lstm" | "gru" | "rnn"
    units: int
    activation: object
    recurrent_activation: object
    use_bias: bool
    reset_after: bool
    go_backwards: bool
    return_sequences: bool
    return_state: bool
    zero_output_for_mask: bool
    unroll: bool = False
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    dropout_per: str = "sequence"  # see RNN_DROPOUT and _dropout_per

    @property
    def native(self) -> bool:
        """nn.LSTM / nn.GRU / nn.RNN compute this cell."""
        if self.kind == "rnn":
            return self.activation in ("tanh", "relu")
        return (self.activation == "tanh"
                and self.recurrent_activation == "sigmoid"
                and (self.kind == "lstm" or self.reset_after))

    @property
    def dropped(self) -> bool:
        """Keras drops something while training."""
        return self.dropout > 0.0 or self.recurrent_dropout > 0.0

    @property
    def plain(self) -> bool:
        """A plain nn.LSTM / nn.GRU / nn.RNN runs this layer."""
        return self.native and not self.dropped

    @property
    def num_states(self) -> int:
        return 2 if self.kind == "lstm" else 1


def rnn_spec(call: Call, class_name: str, cfg: dict,
             where: str = "", generic: bool = False) -> RnnSpec:
    """Read and check the options of an LSTM/GRU/SimpleRNN config
    (``generic``: of a cell run by Keras's generic ``RNN`` layer)."""
    kind = RNN_CLASSES.get(class_name)
    if kind is None:
        call.refuse(f"{where}layer={class_name}",
                    f"supported recurrent layers: {sorted(RNN_CLASSES)}")
    if cfg.get("stateful"):
        call.refuse(f"{where}stateful=True",
                    "state kept across batches is not converted; rebuild "
                    "the layer with stateful=False (same weights) and pass "
                    "the state explicitly as initial_state")
    if cfg.get("time_major"):
        call.refuse(f"{where}time_major=True", "not supported")
    rates = {}
    for key in ("dropout", "recurrent_dropout"):
        rate = min(1.0, max(0.0, float(cfg.get(key) or 0.0)))
        if rate >= 1.0 and kind == "rnn":
            call.refuse(f"{where}{key}={cfg[key]}", "a SimpleRNN dropping "
                        "everything is not converted")
        rates[key] = rate if rate < 1.0 else 0.0  # Keras: 0 < rate < 1
    default_rec = "sigmoid"
    spec = RnnSpec(
        kind=kind, units=int(cfg["units"]),
        activation=cfg.get("activation", "tanh"),
        recurrent_activation=(cfg.get("recurrent_activation", default_rec)
                              if kind != "rnn" else None),
        use_bias=bool(cfg.get("use_bias", True)),
        # Keras 2.1.3 added reset_after (default False) and every Keras
        # since writes it; a config without it predates it.
        reset_after=bool(cfg.get("reset_after", False)),
        go_backwards=bool(cfg.get("go_backwards", False)),
        return_sequences=bool(cfg.get("return_sequences", False)),
        return_state=bool(cfg.get("return_state", False)),
        zero_output_for_mask=bool(cfg.get("zero_output_for_mask", False)),
        unroll=bool(cfg.get("unroll", False)), **rates)
    spec.dropout_per = _dropout_per(spec, cfg, call.keras_major, generic)
    return spec


def _dropout_per(spec: RnnSpec, cfg: dict, keras_major: int,
                 generic: bool = False) -> str:
    """How Keras draws the dropout masks of an LSTM/GRU/SimpleRNN call.

    The cells draw one mask per call for the input and one for the state,
    kept over the time steps ("sequence"); an LSTM or GRU with
    ``implementation=1`` -- which ``recurrent_dropout`` forces -- draws one
    per gate ("gate").  tf.keras (Keras 2) runs an LSTM/GRU its fused
    kernel can compute (tanh, sigmoid, bias, not unrolled, no recurrent
    dropout; GRU reset_after) with ``inputs * dropout_mask`` on the whole
    sequence: a new input mask at every step ("step").  Its generic
    ``RNN(cell)`` layer never takes that kernel."""
    if spec.kind == "rnn":
        return "sequence"
    fused = (keras_major < 3 and not generic and spec.native
             and spec.use_bias
             and not spec.unroll and spec.recurrent_dropout == 0.0)
    if fused:
        return "step"
    if spec.recurrent_dropout > 0.0 or cfg.get("implementation") == 1:
        return "gate"
    return "sequence"


def _function(call: Call, name, helpers: dict) -> str:
    """A Python callable for a Keras activation, for a cell module's
    constructor: ``torch.tanh``, ``F.relu``, or a function written into
    model.py (``keras_hard_sigmoid`` for Keras 2's hard_sigmoid)."""
    stub = Tensor((None, 1), identity(2))
    step = activation_step(name, stub, call.keras_major, helpers)
    if step is None:
        return "nn.Identity()"
    m = _SIMPLE_CALL.match(step)
    if m:
        return m.group(1)
    fn = f"keras_{name}"
    body = step.replace("{}", "x")
    helpers[fn] = (f'def {fn}(x):\n    """The Keras {call.keras_major} '
                   f'activation "{name}"."""\n    return {body}\n')
    return fn


def rnn_module(call: Call, spec: RnnSpec, input_size: int,
               helpers: dict) -> str:
    """The constructor of the module that runs ``spec`` (see module doc)."""
    if spec.plain:
        args = [str(input_size), str(spec.units)]
        if spec.kind == "rnn" and spec.activation == "relu":
            args.append('nonlinearity="relu"')
        if not spec.use_bias:
            args.append("bias=False")
        args.append("batch_first=True")
        return f"{_TORCH[spec.kind]}({', '.join(args)})"
    name, code = _CUSTOM[spec.kind]
    helpers[name] = code
    helpers["rnn_dropout_masks"] = RNN_DROPOUT
    args = [str(input_size), str(spec.units)]
    if not spec.use_bias:
        args.append("bias=False")
    if spec.kind == "gru" and not spec.reset_after:
        args.append("reset_after=False")
    if spec.kind == "rnn" and spec.native:
        if spec.activation == "relu":
            args.append('nonlinearity="relu"')
    elif spec.activation != "tanh":
        args.append(f"activation={_function(call, spec.activation, helpers)}")
    if spec.kind != "rnn" and spec.recurrent_activation != "sigmoid":
        fn = _function(call, spec.recurrent_activation, helpers)
        args.append(f"recurrent_activation={fn}")
    if spec.dropout:
        args.append(f"dropout={lit(spec.dropout)}")
    if spec.recurrent_dropout:
        args.append(f"recurrent_dropout={lit(spec.recurrent_dropout)}")
    if spec.dropped and spec.dropout_per != "sequence":
        args.append(f'dropout_per="{spec.dropout_per}"')
    return f"{name}({', '.join(args)})"


def rnn_state(spec: RnnSpec, weights: LayerWeights, prefix: str = "",
              suffix: str = "") -> dict:
    """State-dict producers for the module of ``spec``: keys relative to
    the layer's attribute (``prefix`` for a sub-module, ``suffix`` such as
    ``_reverse`` for the second direction of a bidirectional module)."""
    names = ["kernel", "recurrent_kernel"] + (["bias"] if spec.use_bias
                                              else [])
    w = weights.bind(names)
    units, gates = spec.units, _GATES[spec.kind]
    reorder = spec.kind == "gru"

    def gates_of(arr):
        """Keras z, r, h -> torch r, z, n (first axis, in gate blocks)."""
        if not reorder:
            return arr
        z, r, h = np.split(arr, 3, axis=0)
        return np.concatenate([r, z, h], axis=0)

    regate = "; gate blocks z, r, h -> r, z, n" if reorder else ""

    def kernel(name):
        return Transformed(lambda k: as_f32(gates_of(k.T)), [w[name]],
                           "transposed (in, gates*units) -> (gates*units, "
                           "in)" + regate)

    def bias(row):
        b = w["bias"]
        if len(b.shape) == 2:  # GRU reset_after: (input bias, recurrent bias)
            return Transformed(lambda b: as_f32(gates_of(b[row])), [b],
                               f"row {row} of ({'input' if row == 0 else 'recurrent'}"
                               f", recurrent) biases" + regate)
        if row == 1:  # Keras has one bias: torch's second one stays zero
            return Transformed(lambda: np.zeros(b.shape, np.float32), [],
                               "zeros, not trained: Keras has one bias",
                               frozen=True)
        return Transformed(lambda b: as_f32(gates_of(b)), [b],
                           regate[2:] if reorder else "as stored")

    if w["kernel"].shape[-1] != gates * units:
        raise ValueError(f"kernel shape {w['kernel'].shape} does not fit "
                         f"{units} units")
    out = {f"weight_ih_l0{suffix}": kernel("kernel"),
           f"weight_hh_l0{suffix}": kernel("recurrent_kernel")}
    if spec.use_bias:
        out[f"bias_ih_l0{suffix}"] = bias(0)
        if spec.kind != "gru" or spec.reset_after:  # else: no state bias
            out[f"bias_hh_l0{suffix}"] = bias(1)
    return {prefix + k: v for k, v in out.items()}


# -- what a recurrent call receives -------------------------------------------
@dataclass
class RnnCall:
    x: Tensor
    states: list[Tensor]  # initial states, Keras layout
    mask: str | None  # code of the mask Keras passes to the layer


def _flat(value) -> list:
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flat(v)]
    return [] if value is None else [value]


def rnn_inputs(call: Call) -> RnnCall:
    """The sequence, initial states and mask of a recurrent layer's call.

    Keras 3 writes ``layer(x, initial_state=[h, c])``; Keras 2 writes the
    states as more inputs (``[x, h, c]``).  States nested per cell (an RNN
    over stacked cells: ``[[h1, c1], h2]``) are read flat, in cell order."""
    node = call.node
    refs = node.inputs
    first = node.args[0] if node.args else None
    init = node.kwargs.get("initial_state")
    if init is None and isinstance(first, list) and len(first) > 1:
        init = first[1:]
    states = [call.inputs[refs.index(r)] for r in _flat(init)]
    explicit = call.kwarg("mask")
    if isinstance(explicit, list):
        explicit = explicit[0]
    if explicit is not None:
        mask = explicit.expr
    elif call.keras_major >= 3 and states:
        mask = None  # Keras 3 fills `mask` only for a one-tensor call
    else:
        mask = call.mask(0)
    return RnnCall(call.inputs[0], states, mask)


def _sequence(call: Call) -> Tensor:
    x = call.inputs[0]
    if x.rank != 3:
        call.refuse(f"input rank {x.rank}", "a recurrent layer takes "
                    "(batch, time, features) sequences")
    if not x.layout.is_identity:
        x = call.want(0, identity(3))
    return x


def run_code(module: str, x: str, spec: RnnSpec, mask: str | None,
             states: list[str], zero_output: bool = False) -> str:
    """Forward code running ``module`` over ``x`` as the Keras layer
    ``spec``: a plain call when nothing Keras-specific is needed, else
    ``run_rnn`` with the Keras arguments."""
    if mask is None and not states and not spec.return_state:
        seq = f"{x}.flip(1)" if spec.go_backwards else x
        code = f"{module}({seq})[0]"
        return code if spec.return_sequences else f"{code}[:, -1]"
    args = [module, x]
    if mask is not None:
        args.append(f"mask={mask}")
    if states:
        args.append(f"initial_state=({', '.join(states)},)"
                    if len(states) == 1 else
                    f"initial_state=({', '.join(states)})")
    zeros = bool(zero_output and mask)
    for flag, on in (("return_sequences", spec.return_sequences),
                     ("return_state", spec.return_state),
                     ("go_backwards", spec.go_backwards),
                     ("zero_output_for_mask", zeros),
                     ("unroll", zeros and spec.unroll)):
        if on:
            args.append(f"{flag}=True")
    return f"run_rnn({', '.join(args)})"


def _state_shapes(spec: RnnSpec) -> list[tuple]:
    return [(None, spec.units)] * spec.num_states


# -- LSTM, GRU, SimpleRNN -----------------------------------------------------
def _rnn_variables(cfg):
    return ["cell/kernel", "cell/recurrent_kernel"] + (
        ["cell/bias"] if cfg.get("use_bias", True) else [])


@rule("LSTM", "GRU", "SimpleRNN", variables=_rnn_variables, masks="consume")
def recurrent(call):
    spec = rnn_spec(call, call.layer.class_name, call.config,
                    generic=getattr(call, "generic_rnn", False))
    x = _sequence(call)
    inp = rnn_inputs(call)
    helpers = {}
    module = rnn_module(call, spec, x.shape[2], helpers)
    if len(inp.states) not in (0, spec.num_states):
        call.refuse("initial_state", f"{len(inp.states)} tensors for a "
                    f"layer with {spec.num_states} state(s)")
    states = [_state_input(call, s) for s in inp.states]
    code = run_code(f"self.{call.attr}", x.expr, spec, inp.mask, states,
                    spec.zero_output_for_mask)
    if code.startswith("run_rnn("):
        helpers["run_rnn"] = RUN_RNN
    out_shape = ((None, x.shape[1], spec.units) if spec.return_sequences
                 else (None, spec.units))
    outs = [Out(chain(code), out_shape, identity(len(out_shape)),
                masked=spec.return_sequences)]
    emit = Emit(outs, module=module, helpers=helpers,
                state=rnn_state(spec, call.layer.weights))
    if spec.return_state:
        emit.outputs += [Out([], shape, identity(2), masked=False)
                         for shape in _state_shapes(spec)]
        emit.multi = [code]
    return emit


def _state_input(call: Call, t: Tensor) -> str:
    if not t.layout.is_identity:
        t = call.want(call.index(t), identity(t.rank))
    return t.expr


# -- Bidirectional ------------------------------------------------------------
def _split_weights(call: Call, weights: LayerWeights, groups: dict) -> dict:
    """Split a wrapper's weights by sub-object: ``groups`` maps a part name
    to a predicate on the first path component of a stored key.  The rest
    of each key is kept, so the parts bind like ordinary layers."""
    out = {name: [] for name in groups}
    for e in weights.entries:
        head, _, rest = clean_weight_name(e.key).partition("/")
        for name, test in groups.items():
            if rest and test(head):
                out[name].append(WeightEntry(rest, e.array))
                break
        else:
            call.refuse("weights", f"cannot tell which part of "
                        f"{call.layer.class_name} the stored weight "
                        f"{e.key!r} belongs to")
    return {name: LayerWeights(entries, f"{weights.layer}/{name}")
            for name, entries in out.items()}


def _bidirectional_weights(call: Call) -> tuple[LayerWeights, LayerWeights]:
    """(forward, backward) weights: Keras 3 stores ``forward_layer/...``
    and ``backward_layer/...``; named files use the sub-layers' names
    (``forward_lstm/lstm_cell/kernel``, ``backward_lstm/...``), forward
    first."""
    entries = call.layer.weights.entries
    heads = []
    for e in entries:
        head = clean_weight_name(e.key).split("/", 1)[0]
        if head not in heads:
            heads.append(head)
    if set(heads) <= {"forward_layer", "backward_layer"}:
        fwd = "forward_layer"
    else:
        forward_like = [h for h in heads if h.startswith("forward_")]
        fwd = forward_like[0] if len(forward_like) == 1 else heads[0]
    parts = _split_weights(call, call.layer.weights, {
        "forward": lambda h: h == fwd, "backward": lambda h: h != fwd})
    return parts["forward"], parts["backward"]


def _bidirectional_variables(cfg):
    inner = (cfg.get("layer") or {}).get("config") or {}
    names = _rnn_variables(inner)
    return ([f"backward_layer/{n}" for n in names]
            + [f"forward_layer/{n}" for n in names])


_MERGE = {"concat": "torch.cat([{f}, {b}], dim=-1)", "sum": "{f} + {b}",
          "mul": "{f} * {b}", "ave": "({f} + {b}) / 2"}


@rule("Bidirectional", variables=_bidirectional_variables, masks="consume")
def bidirectional(call):
    """Two RNNs, one reading the sequence backwards, merged.  Without a mask
    or states, and with the same cell both ways, one bidirectional torch
    module; otherwise the two directions in an ``nn.ModuleDict``."""
    layer_cfg = call.get("layer") or {}
    back_cfg = call.get("backward_layer")
    if back_cfg is None:  # Keras 2 writes it only when given
        back_cfg = dict(layer_cfg, config=dict(layer_cfg.get("config", {}),
                                               go_backwards=True))
    fspec = rnn_spec(call, layer_cfg.get("class_name"),
                     layer_cfg.get("config") or {}, "layer ")
    bspec = rnn_spec(call, back_cfg.get("class_name"),
                     back_cfg.get("config") or {}, "backward_layer ")
    merge = call.config.get("merge_mode", "concat")  # None is a mode
    if merge not in (None, *_MERGE):
        call.refuse(f"merge_mode={merge!r}", "expected concat, sum, mul, "
                    "ave or None")
    if fspec.go_backwards == bspec.go_backwards:
        call.refuse("go_backwards", "the two directions must differ")
    seqs, state_out = fspec.return_sequences, fspec.return_state
    x = _sequence(call)
    inp = rnn_inputs(call)
    n_states = fspec.num_states + bspec.num_states
    if inp.states and len(inp.states) != n_states:
        call.refuse("initial_state", f"{len(inp.states)} tensors for "
                    f"{n_states} states")
    states = [_state_input(call, s) for s in inp.states]
    fw, bw = _bidirectional_weights(call)
    helpers = {}
    size = x.shape[2]
    fused = (inp.mask is None and not states and not state_out
             and fspec.plain and bspec.plain
             and not fspec.go_backwards
             and fspec.kind == bspec.kind and fspec.units == bspec.units
             and fspec.use_bias == bspec.use_bias
             and fspec.activation == bspec.activation)
    units = fspec.units
    if fused:
        module = rnn_module(call, fspec, size, helpers).replace(
            "batch_first=True", "batch_first=True, bidirectional=True")
        state = dict(rnn_state(fspec, fw))
        state.update(rnn_state(bspec, bw, suffix="_reverse"))
        run = f"self.{call.attr}({x.expr})[0]"
        if seqs and merge == "concat":
            return Emit([Out(chain(run), (None, x.shape[1], 2 * units),
                             identity(3), masked=True)],
                        module=module, state=state)
        pre = [(["fwd", "bwd"], f"{run}.chunk(2, dim=-1)")]
        f, b = TMP(0), TMP(1)
        if not seqs:  # the backward direction ends at the first step
            f, b = f"{f}[:, -1]", f"{b}[:, 0]"
        return _merged(merge, f, b, x, units, seqs, module, state, helpers,
                       pre, [])
    module = (f"nn.ModuleDict({{\"forward_layer\": "
              f"{rnn_module(call, fspec, size, helpers)}, \"backward_layer\": "
              f"{rnn_module(call, bspec, size, helpers)}}})")
    state = dict(rnn_state(fspec, fw, prefix="forward_layer."))
    state.update(rnn_state(bspec, bw, prefix="backward_layer."))
    half = fspec.num_states
    runs = []
    for name, spec, st in (("forward_layer", fspec, states[:half]),
                           ("backward_layer", bspec, states[half:])):
        # Bidirectional makes both directions output zeros at masked steps
        # when they return sequences.
        code = run_code(f"self.{call.attr}[\"{name}\"]", x.expr, spec,
                        inp.mask, st, zero_output=seqs)
        runs.append(code)
    if any(c.startswith("run_rnn(") for c in runs):
        helpers["run_rnn"] = RUN_RNN
    if state_out:
        pre = [(["fwd"] + [f"fwd_{s}" for s in "hc"[:fspec.num_states]],
                runs[0]),
               (["bwd"] + [f"bwd_{s}" for s in "hc"[:bspec.num_states]],
                runs[1])]
        k = 1 + fspec.num_states
        state_tmps = [TMP(i) for i in range(1, k)] + [
            TMP(i) for i in range(k + 1, k + 1 + bspec.num_states)]
        f, b = TMP(0), TMP(k)
    else:
        pre = [(["fwd"], runs[0]), (["bwd"], runs[1])]
        state_tmps = []
        f, b = TMP(0), TMP(1)
    if seqs:  # Keras puts the backward outputs back in forward time
        b = f"{b}.flip(1)"
    emit = _merged(merge, f, b, x, units, seqs, module, state, helpers, pre,
                   [])
    for tmp, spec in zip(state_tmps, [fspec] * fspec.num_states
                         + [bspec] * bspec.num_states):
        emit.outputs.append(Out([tmp], (None, spec.units), identity(2),
                                masked=False))
    return emit


def _merged(merge, f, b, x, units, seqs, module, state, helpers, pre, extra):
    steps = x.shape[1]
    if merge is None:
        shape = (None, steps, units) if seqs else (None, units)
        outs = [Out([v], shape, identity(len(shape)), masked=seqs)
                for v in (f, b)]
    else:
        width = 2 * units if merge == "concat" else units
        shape = (None, steps, width) if seqs else (None, width)
        code = _MERGE[merge].format(f=f, b=b)
        outs = [Out([code], shape, identity(len(shape)), masked=seqs)]
    return Emit(outs + extra, module=module, state=state, helpers=helpers,
                pre=pre)


# -- TimeDistributed ----------------------------------------------------------
def _inner_layer(call_or_cfg, name: str, weights: LayerWeights) -> Layer:
    inner = call_or_cfg
    return Layer(name=name, class_name=inner.get("class_name"),
                 config=inner.get("config") or {},
                 module=inner.get("module"),
                 registered_name=inner.get("registered_name"),
                 weights=weights)


def _td_prefers(cfg, rank):
    inner = cfg.get("layer") or {}
    layer = _inner_layer(inner, "inner", LayerWeights())
    r = lookup(layer)
    if r is None or r.prefers is None or rank < 3:
        return None
    want = r.prefers(layer.config, rank - 1)
    if want is None:
        return None
    return Layout((0, 1) + tuple(p + 1 for p in want.perm[1:]))


def _td_variables(cfg):
    inner = cfg.get("layer") or {}
    layer = _inner_layer(inner, "inner", LayerWeights())
    r = lookup(layer)
    if r is None or r.variables is None:
        return []
    return [f"layer/{n}" for n in r.variables(layer.config)]


# Layers whose rule handles any rank by acting on the last axis alone: the
# time axis needs no folding into the batch.
_PER_STEP = ("Dense", "Activation", "Dropout")


@rule("TimeDistributed", variables=_td_variables, prefers=_td_prefers,
      masks="consume")
def time_distributed(call):
    """The inner layer's rule on the sequence folded into the batch
    (``x.flatten(0, 1)``), unfolded after (``.unflatten(0, (-1, T))``).

    Masks as Keras: the inner layer gets each step's mask (folded too), so
    ``TimeDistributed(LSTM)`` over masked (B, T, S, F) words skips each
    sentence's padding.  The output mask is the input's in Keras 3; in
    Keras 2 it is the inner layer's output mask, else the input mask
    reduced to (B, T) (a step is kept if any of its positions is)."""
    inner = _inner_layer(call.get("layer") or {}, call.layer.name,
                         call.layer.weights)
    r = lookup(inner, call._conv.options.rules)
    if r is None:
        call.refuse(f"layer={inner.class_name}", "no rule for the wrapped "
                    "layer class")
    x = call.inputs[0]
    if x.rank < 3:
        call.refuse(f"input rank {x.rank}", "TimeDistributed needs "
                    "(batch, time, ...) inputs")
    if x.masked and x.rank == 3 and r.masks == "consume":
        call.refuse(f"layer={inner.class_name} on a masked input", "Keras "
                    "gives the wrapped layer a (batch,) mask per step, which "
                    "it cannot apply to its (batch, features) input")
    if inner.class_name in _PER_STEP:  # acts on the last axis anyway
        node = Node(call.node.id, inner, [call.node.inputs[0]], {})
        emit = r.convert(Call(node, [x], call.attr, call.keras_major,
                              call._conv))
        for out in emit.outputs:
            out.masked = x.masked  # the same mask, in either Keras
        return emit
    if x.layout.flat is not None or x.layout.perm[:2] != (0, 1):
        x = call.want(0, Layout((0, 1) + tuple(
            p for p in (x.layout.perm if x.layout.flat is None
                        else range(x.rank)) if p > 1)))
    steps = x.shape[1]
    folded = Tensor((None,) + x.shape[2:],
                    Layout((0,) + tuple(p - 1 for p in x.layout.perm[2:])),
                    x.dtype, f"{x.expr}.flatten(0, 1)", x.masked,
                    f"{x.mask}.flatten(0, 1)" if x.mask else None)
    node = Node(call.node.id, inner, [call.node.inputs[0]], {})
    inner_call = Call(node, [folded], call.attr, call.keras_major,
                      call._conv)
    emit = r.convert(inner_call)
    if len(emit.outputs) != 1 or emit.multi is not None:
        call.refuse(f"layer={inner.class_name}", "only layers with one "
                    "output can be wrapped")
    out = emit.outputs[0]
    layout = out.layout
    steps_code = list(out.steps)
    if layout.flat is not None:
        from ..layout import convert
        code, _ = convert(HOLE, out.shape, layout, identity(len(out.shape)))
        steps_code.append(code)
        layout = identity(len(out.shape))
    expr = steps_code[0]
    for step in steps_code[1:]:
        expr = subst(step, HOLE, expr)
    size = lit(steps) if steps is not None else f"{IN(0)}.shape[1]"
    expr = subst(f"{HOLE}.unflatten(0, (-1, {size}))", HOLE, expr)
    shape = (x.shape[0], steps) + tuple(out.shape[1:])
    emit.outputs = [Out([expr], shape, Layout(
        (0, 1) + tuple(p + 1 for p in layout.perm[1:])), out.dtype,
        **_td_output_mask(call, x, r, out))]
    return emit


def _td_output_mask(call: Call, x: Tensor, inner_rule, out: Out) -> dict:
    """``masked``/``mask`` of TimeDistributed's output (see its doc)."""
    if call.keras_major >= 3:
        return {"masked": x.masked}
    if out.mask is not None:  # made by the inner layer, position-wise
        return {"mask": out.mask}
    inner_masked = (out.masked if out.masked is not None
                    else x.masked and inner_rule.masks == "propagate")
    if inner_masked or not x.masked:
        return {"masked": inner_masked}
    if x.rank == 3:
        return {"masked": True}
    return {"mask": f"{MASK(0)}.flatten(2).any(dim=-1)"}


# -- RepeatVector, Masking ----------------------------------------------------
@rule("RepeatVector")
def repeat_vector(call):
    x = call.inputs[0]
    if x.layout.flat is not None:
        x = call.want(0, identity(2))
    n = int(call.get("n"))
    return Emit([Out(chain(f"{x.expr}.unsqueeze(1).expand(-1, {n}, -1)"),
                     (x.shape[0], n, x.shape[1]), identity(3), x.dtype)])


@rule("Masking")
def masking(call):
    """Steps whose features all equal ``mask_value`` become zeros and are
    masked for the layers after."""
    x = call.inputs[0]
    if not x.layout.is_identity:
        x = call.want(0, identity(x.rank))
    value = lit(float(call.get("mask_value", 0.0)))
    keep = f"({x.expr} != {value}).any(dim=-1"
    return Emit([Out(chain(f"{x.expr} * {keep}, keepdim=True)"), x.shape,
                     x.layout, x.dtype, mask=f"({IN(0)} != {value})"
                     ".any(dim=-1)")])


# -- ConvLSTM1D/2D/3D ---------------------------------------------------------
def _conv_lstm_variables(cfg):
    return _rnn_variables(cfg)


def _conv_lstm_layout(cfg, rank):
    if cfg.get("data_format") == "channels_first":
        return identity(rank)
    return Layout((0, 1, rank - 1) + tuple(range(2, rank - 1)))


@rule("ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D",
      variables=_conv_lstm_variables, prefers=_conv_lstm_layout,
      masks="consume")
def conv_lstm(call):
    nd = int(call.layer.class_name[-2])
    cfg = call.config
    spec = rnn_spec(call, "LSTM", dict(cfg, units=cfg.get("filters")))
    fmt = call.get("data_format", "channels_last") or "channels_last"
    x = call.inputs[0]
    if x.rank != nd + 3:
        call.refuse(f"input rank {x.rank}", f"expected {nd + 3}")
    x = call.want(0, _conv_lstm_layout(cfg, x.rank))
    inp = rnn_inputs(call)
    channels = x.shape[2] if fmt == "channels_first" else x.shape[-1]
    sizes = list(x.shape[3:] if fmt == "channels_first" else x.shape[2:-1])
    kernel = ntuple(call.get("kernel_size"), nd, "kernel_size")
    strides = ntuple(call.get("strides", 1), nd, "strides")
    dilation = ntuple(call.get("dilation_rate", 1), nd, "dilation_rate")
    padding = str(call.get("padding", "valid")).lower()
    if padding not in ("valid", "same"):
        call.refuse(f"padding={padding!r}", "expected valid or same")
    filters = spec.units
    conv = f"nn.Conv{nd}d"
    in_args = [str(channels), str(4 * filters), short(kernel)]
    if strides != (1,) * nd:
        in_args.append(f"stride={short(strides)}")
    if dilation != (1,) * nd:
        in_args.append(f"dilation={short(dilation)}")
    input_pad = None
    if padding == "same":
        pads = [same_pads(n, k, s, d)
                for n, k, s, d in zip(sizes, kernel, strides, dilation)]
        if any(p is None for p in pads):
            call.refuse("padding='same'", "strides > 1 need a known input "
                        "size")
        if all(b == a for b, a in pads):
            if any(b for b, _ in pads):
                in_args.append(f"padding={short(b for b, _ in pads)}")
        else:
            input_pad = torch_pad_arg(pads)
    if not spec.use_bias:
        in_args.append("bias=False")
    state_pads = [same_pads(None, k, 1, 1) for k in kernel]
    h_args = [str(filters), str(4 * filters), short(kernel)]
    state_pad = None
    if all(b == a for b, a in state_pads):
        if any(b for b, _ in state_pads):
            h_args.append(f"padding={short(b for b, _ in state_pads)}")
    else:
        state_pad = torch_pad_arg(state_pads)
    h_args.append("bias=False")
    helpers = {"ConvLSTM": CONV_LSTM, "gate_conv": GATE_CONV}
    args = [f"{conv}({', '.join(in_args)})", f"{conv}({', '.join(h_args)})"]
    if input_pad is not None:
        args.append(f"input_pad={lit(input_pad)}")
    if state_pad is not None:
        args.append(f"state_pad={lit(state_pad)}")
    if spec.activation != "tanh":
        args.append(f"activation={_function(call, spec.activation, helpers)}")
    if spec.recurrent_activation != "sigmoid":
        fn = _function(call, spec.recurrent_activation, helpers)
        args.append(f"recurrent_activation={fn}")
    if spec.dropout:
        args.append(f"dropout={lit(spec.dropout)}")
    if spec.recurrent_dropout:
        args.append(f"recurrent_dropout={lit(spec.recurrent_dropout)}")
    if spec.dropped and inp.mask is not None:
        call.refuse("dropout with a Keras mask", "a masked ConvLSTM steps "
                    "one call per time step, which would draw new dropout "
                    "masks at every step")
    module = f"ConvLSTM({', '.join(args)})"
    w = call.layer.weights.bind(["kernel", "recurrent_kernel"]
                                + (["bias"] if spec.use_bias else []))
    order = (nd + 1, nd) + tuple(range(nd))  # (*k, in, out) -> (out, in, *k)
    how = f"transposed (k.., in, out) -> (out, in, k..): {order}"
    state = {"input_conv.weight": Transformed(
                 lambda k: as_f32(k.transpose(order)), [w["kernel"]], how),
             "state_conv.weight": Transformed(
                 lambda k: as_f32(k.transpose(order)),
                 [w["recurrent_kernel"]], how)}
    if spec.use_bias:
        state["input_conv.bias"] = Transformed(as_f32, [w["bias"]])
    out_sizes = tuple(conv_out(n, k, s, d, padding)
                      for n, k, s, d in zip(sizes, kernel, strides, dilation))
    if fmt == "channels_first":
        step_shape = (filters,) + out_sizes
        step_layout = identity(nd + 2)
    else:
        step_shape = out_sizes + (filters,)
        step_layout = Layout((0, nd + 1) + tuple(range(1, nd + 1)))
    states = []
    for t in inp.states:
        t = call.want(call.index(t), step_layout)
        states.append(t.expr)
    if len(states) not in (0, 2):
        call.refuse("initial_state", "a ConvLSTM has two states")
    code = run_code(f"self.{call.attr}", x.expr, spec, inp.mask, states,
                    spec.zero_output_for_mask)
    if code.startswith("run_rnn("):
        helpers["run_rnn"] = RUN_RNN
    if spec.return_sequences:
        shape = (None, x.shape[1]) + step_shape
        layout = Layout((0, 1) + tuple(p + 1 for p in step_layout.perm[1:]))
    else:
        shape, layout = (None,) + step_shape, step_layout
    outs = [Out(chain(code), shape, layout, masked=spec.return_sequences)]
    emit = Emit(outs, module=module, state=state, helpers=helpers)
    if spec.return_state:
        emit.outputs += [Out([], (None,) + step_shape, step_layout,
                             masked=False) for _ in range(2)]
        emit.multi = [code]
    return emit
