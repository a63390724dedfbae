"""``RNN([cell, cell, ...])`` (StackedRNNCells): the code the rule writes,
how it finds each cell's weights, what it refuses, and dropout in
``train()`` mode.  Parity with Keras 3 and tf.keras (sequences, states,
go_backwards, masks with holes, initial states) is proven by the fixtures
of ``fixtures/cases_stacked_rnn.py`` through ``tests/test_parity.py``."""
import re

import numpy as np
import pytest
import torch

from migrate.rules.rnn_cell import _keys

from test_rules_unit import forward_lines, port, refusal


def _cell(cls, name, units, **options):
    return {"class_name": cls, "config": dict(name=name, units=units,
                                              **options)}


def _stacked(*cells, **options):
    return dict({"cell": {"class_name": "StackedRNNCells",
                          "config": {"name": "stacked_rnn_cells",
                                     "cells": list(cells)}}}, **options)


def _random(shape, seed):
    return np.random.default_rng(seed).normal(0, 0.5, shape)


def _lstm_gru_weights(prefix, names, size=3):
    """Weights of an LSTMCell(4) then a GRUCell(2) (reset_after) keyed as
    ``prefix`` + cell key + variable."""
    lstm, gru = names
    return {f"{prefix}{lstm}/kernel": _random((size, 16), 1),
            f"{prefix}{lstm}/recurrent_kernel": _random((4, 16), 2),
            f"{prefix}{lstm}/bias": _random((16,), 3),
            f"{prefix}{gru}/kernel": _random((4, 6), 4),
            f"{prefix}{gru}/recurrent_kernel": _random((2, 6), 5),
            f"{prefix}{gru}/bias": _random((2, 6), 6)}


CELLS = (_cell("LSTMCell", "enc", 4),
         _cell("GRUCell", "dec", 2, reset_after=True))


def _oneline(source):
    """The source with its line breaks (as the formatter wraps) undone."""
    return re.sub(r"([({\[]) | ([)}\]])", r"\1\2", " ".join(source.split()))


def _run(conv, x):
    with torch.no_grad():
        return conv.module()(torch.from_numpy(x))


# -- the code -------------------------------------------------------------
def test_stacked_cells_become_a_chain_of_torch_rnns():
    conv = port("RNN", _stacked(*CELLS, return_sequences=True), (None, 5, 3),
                _lstm_gru_weights("stacked_rnn_cells/", ("enc", "dec")))
    assert ('nn.ModuleDict({"enc": nn.LSTM(3, 4, batch_first=True), '
            '"dec": nn.GRU(4, 2, batch_first=True)})') in _oneline(
                conv.source)
    fwd = forward_lines(conv)
    assert 'layer = self.layer["dec"](self.layer["enc"](x)[0])[0]' in fwd
    assert "run_rnn" not in conv.source


def test_stacked_cells_compute_the_chain_of_layers():
    """RNN([LSTMCell, GRUCell]) == LSTM(return_sequences) then GRU."""
    w = _lstm_gru_weights("stacked_rnn_cells/", ("enc", "dec"))
    x = _random((2, 5, 3), 7).astype("float32")
    stacked = _run(port("RNN", _stacked(*CELLS), (None, 5, 3), w), x)
    lstm = port("LSTM", {"units": 4, "return_sequences": True},
                (None, 5, 3), {k.split("/", 1)[1].replace("enc/", ""): v
                               for k, v in w.items() if "/enc/" in k})
    gru = port("GRU", {"units": 2, "reset_after": True}, (None, 5, 4),
               {k.split("/")[-1]: v for k, v in w.items() if "/dec/" in k})
    want = _run(gru, _run(lstm, x).numpy())
    torch.testing.assert_close(stacked, want, rtol=0, atol=1e-6)


def test_keras3_positional_weights_bind_in_cell_order():
    """Keras 3 stores ``cell/cells/<class key>/vars/<i>``; the keys sort
    gru_cell before lstm_cell, the cells are LSTM first."""
    named = _lstm_gru_weights("cell/cells/", ("lstm_cell", "gru_cell"))
    positional = {k.rsplit("/", 1)[0] + "/vars/" + str(
        ["kernel", "recurrent_kernel", "bias"].index(k.rsplit("/", 1)[1])): v
        for k, v in named.items()}
    conv = port("RNN", _stacked(*CELLS), (None, 5, 3), positional)
    kernel = named["cell/cells/lstm_cell/kernel"]
    assert np.allclose(conv.state_dict["layer.enc.weight_ih_l0"].numpy(),
                       kernel.T)
    assert tuple(conv.state_dict["layer.dec.weight_ih_l0"].shape) == (6, 4)


def test_returned_states_are_every_cells_in_cell_order():
    conv = port("RNN", _stacked(*CELLS, return_state=True), (None, 5, 3),
                _lstm_gru_weights("stacked_rnn_cells/", ("enc", "dec")))
    fwd = forward_lines(conv)
    assert "enc, enc_h, enc_c = run_rnn(" in fwd
    assert "layer, dec_h = run_rnn(" in fwd


def test_go_backwards_flips_only_the_first_cells_input():
    conv = port("RNN", _stacked(*CELLS, go_backwards=True,
                                return_sequences=True), (None, 5, 3),
                _lstm_gru_weights("stacked_rnn_cells/", ("enc", "dec")))
    fwd = forward_lines(conv)
    assert fwd.count(".flip(1)") == 1 and 'self.layer["enc"](x.flip(1))' \
        in fwd


def test_cell_names_become_module_dict_keys():
    assert _keys(["lstm_cell", "lstm_cell", "1st", "update", "a-b", ""]) == [
        "lstm_cell", "lstm_cell_1", "cell_1st", "update_cell", "a_b", "cell"]


# -- refusals ---------------------------------------------------------------
def test_custom_cell_in_a_stack_is_refused():
    why = refusal("RNN", _stacked(CELLS[0], {"class_name": "MyCell",
                                             "config": {"units": 2}}),
                  (None, 4, 3))
    assert "cells[1]='MyCell'" in why and "LSTMCell" in why


@pytest.mark.parametrize("options, says", [
    ({"stateful": True}, "stateful=True"),
    ({"time_major": True}, "time_major=True"),
])
def test_unsupported_rnn_options_are_refused(options, says):
    assert says in refusal("RNN", _stacked(*CELLS, **options), (None, 4, 3))


def test_cell_options_are_refused_naming_the_cell():
    lstm = _cell("LSTMCell", "enc", 4, dropout=0.0)
    bad = _cell("SimpleRNNCell", "odd", 2, dropout=1.0)
    why = refusal("RNN", _stacked(lstm, bad), (None, 4, 3))
    assert "cell 'odd' dropout=1.0" in why


def test_empty_stack_and_shared_names_are_refused():
    assert "no cells" in refusal("RNN", _stacked(), (None, 4, 3))
    twice = _stacked(CELLS[0], _cell("LSTMCell", "enc", 4))
    assert "share a name" in refusal("RNN", twice, (None, 4, 3))
    reverse = _stacked(*CELLS)
    reverse["cell"]["config"]["reverse_state_order"] = True
    assert "reverse_state_order=True" in refusal("RNN", reverse, (None, 4, 3))


def test_bidirectional_over_stacked_cells_is_refused():
    inner = {"class_name": "RNN", "config": _stacked(*CELLS)}
    why = refusal("Bidirectional", {"layer": inner}, (None, 4, 3))
    assert "layer=RNN" in why


# -- training mode ----------------------------------------------------------
@pytest.mark.parametrize("keras", ["3.15.1", "2.15.0"])
def test_each_cell_drops_as_its_own_layer_in_train_mode(keras):
    """Each cell gets the dropout module of its own rule; eval() computes
    the stack without dropout, train() drops.  tf.keras runs a generic RNN
    step by step (no fused kernel): one input mask per sequence."""
    w = _lstm_gru_weights("stacked_rnn_cells/", ("enc", "dec"))
    cells = (_cell("LSTMCell", "enc", 4, dropout=0.5, implementation=2),
             _cell("GRUCell", "dec", 2, reset_after=True,
                   recurrent_dropout=0.5, implementation=1))
    conv = port("RNN", _stacked(*cells), (None, 5, 3), w, keras=keras)
    plain = port("RNN", _stacked(*CELLS), (None, 5, 3), w, keras=keras)
    src = _oneline(conv.source)
    assert '"enc": KerasLSTM(3, 4, dropout=0.5)' in src
    assert '"dec": KerasGRU(4, 2, recurrent_dropout=0.5, dropout_per="gate")' \
        in src
    x = torch.from_numpy(_random((64, 5, 3), 8).astype("float32"))
    model = conv.module()
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain.module()(x), rtol=0,
                                   atol=1e-6)
        torch.manual_seed(0)
        a, b = model.train()(x), model(x)
    assert not torch.allclose(a, b)
    assert not torch.allclose(a, plain.module()(x))


def test_a_single_cell_rnn_draws_dropout_as_the_generic_rnn_does():
    """tf.keras's LSTM layer runs a fused kernel that draws a new input
    mask at every step; its generic RNN(LSTMCell) runs the cell step by
    step, one input mask per sequence (per gate with implementation=1)."""
    w = {"kernel": _random((3, 16), 1), "recurrent_kernel": _random((4, 16), 2),
         "bias": _random((16,), 3)}
    cell_w = {f"cell/{k}": v for k, v in w.items()}
    layer = port("LSTM", {"units": 4, "dropout": 0.5}, (None, 5, 3), w,
                 keras="2.15.0")
    assert 'dropout_per="step"' in layer.source
    for impl, per in ((2, ""), (1, 'dropout_per="gate"')):
        cell = port("RNN", {"cell": _cell("LSTMCell", "c", 4, dropout=0.5,
                                          implementation=impl)},
                    (None, 5, 3), cell_w, keras="2.15.0")
        src = _oneline(cell.source)
        assert "dropout_per=\"step\"" not in src
        assert per in src and "KerasLSTM(3, 4, dropout=0.5" in src
