"""Sequences beyond parity: what the ports look like, what masks mean,
refusals and training mode.  Parity itself (every layer option, padded
inputs) is in test_parity.py over fixtures/cases_sequences.py."""
import itertools
import json
import re
import zipfile

import pytest
import torch

import migrate
from migrate.graph import Graph, GraphInput, GraphOutput, Layer, Node
from migrate.graph import TensorRef
from migrate.translate import keras3_run_order

from conftest import fixture_dir


def _convert(case, fmt="model.keras", **kw):
    return migrate.convert(fixture_dir(case) / fmt, **kw)


def _forward(source):
    return source[source.index("    def forward(self"):]


# -- what the ports look like -------------------------------------------------
@pytest.mark.parametrize("case", ["k3_lstm_text_classifier",
                                  "k2_lstm_text_classifier"])
def test_bidirectional_lstm_classifier_reads_in_one_screen(case):
    src = _convert(case).source
    cls = src[src.index("class LstmTextClassifier"):]
    assert len(cls.splitlines()) <= 40
    # with the run_rnn helpers (one call for end padding, else a step loop)
    assert len(src.splitlines()) <= 180
    assert src.count('nn.LSTM(8, 6, batch_first=True)') == 2
    fwd = _forward(src)
    # the mask is computed once and given to both directions
    assert len(re.findall(r"\w+ = \w+ != 0", fwd)) == 1
    assert fwd.count("run_rnn(") == 2 and "go_backwards=True" in fwd
    assert "torch.cat([fwd, bwd], dim=-1)" in fwd


def test_unmasked_rnns_are_plain_torch_modules():
    src = _convert("k3_bidirectional_options").source
    assert "self.cat = nn.LSTM(4, 3, batch_first=True, bidirectional=True)" \
        in src
    assert "cat = self.cat(plain)[0]" in src
    src = _convert("k3_gru_options").source
    assert "self.after = nn.GRU(3, 4, batch_first=True)" in src
    assert "self.before = KerasGRU(3, 4, reset_after=False)" in src
    assert "after = self.after(x)[0][:, -1]" in src


def test_keras2_hard_sigmoid_is_written_out():
    src = _convert("k2_lstm_options").source
    assert "def keras_hard_sigmoid(x):" in src
    assert "torch.clamp(0.2 * x + 0.5, 0.0, 1.0)" in src
    assert "recurrent_activation=keras_hard_sigmoid" in src
    assert "recurrent_activation=F.hardsigmoid" in _convert(
        "k3_lstm_options").source


def test_no_unused_mask_lines():
    """Masks are written only where read: every bool line is used."""
    for case in ("k3_gru_seq2seq", "k2_gru_seq2seq", "k3_rnn_initial_state",
                 "k3_transformer_encoder", "k2_transformer_encoder"):
        fwd = _forward(_convert(case).source)
        lines = fwd.splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"\s+(\w+) = .* != 0$", line)
            if m:
                later = "\n".join(lines[i + 1:])
                assert re.search(rf"\b{m.group(1)}\b", later), (case, line)


def test_keras3_passes_no_mask_with_initial_state():
    """Keras 3 fills a layer's mask only when it is called on one tensor;
    with initial_state it runs unmasked (checked against Keras by the
    rnn_initial_state and gru_seq2seq fixtures).  Keras 2 masks."""
    k3 = _forward(_convert("k3_gru_seq2seq").source)
    k2 = _forward(_convert("k2_gru_seq2seq").source)
    decoder = [ln for ln in k3.split("run_rnn(")[2].split(")")[0:1]]
    assert "mask=" not in decoder[0]
    assert "mask=" in k2.split("self.decoder")[1].split(")")[0]


# -- masks change what the port computes, as in Keras -------------------------
def test_padding_does_not_reach_the_result():
    """The embedding of token 0 (padding) cannot change the output of the
    masked classifier, however long the padding."""
    conv = _convert("k3_lstm_text_classifier")
    model = conv.module()
    ids = torch.tensor([[5, 7, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                        [3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    before = model(ids)
    with torch.no_grad():
        model.embedding.weight[0] = 100.0
    assert torch.allclose(model(ids), before, atol=1e-6)
    # and the unpadded prefix alone gives the same answer
    with torch.no_grad():
        model.embedding.weight[0] = -3.0
    assert torch.allclose(model(ids), before, atol=1e-6)


def test_masked_steps_inside_a_sequence_are_skipped():
    """A mask with holes (not only trailing padding) keeps the state."""
    conv = _convert("k3_rnn_masked", rules=_any_rule())
    model = conv.module()
    x = torch.randn(1, 7, 3)
    x[0, 2] = 0.0  # a masked step in the middle
    y = torch.cat([x[:, :2], x[:, 3:], torch.zeros(1, 1, 3)], dim=1)
    out_x, out_y = model(x), model(y)
    names = [t.name for t in conv.program.outputs]
    last = names.index("lstm_back")  # last output of a backward LSTM
    assert torch.allclose(out_x[last], out_y[last], atol=1e-6)


def _counted(rnn):
    """``rnn`` with ``rnn.calls`` counting its calls (a forward hook)."""
    rnn.calls = 0

    def hook(module, args, out):
        module.calls += 1
    rnn.register_forward_hook(hook)
    return rnn


def _rnns(ns, inputs, units):
    nn = torch.nn
    return {"lstm": nn.LSTM(inputs, units, batch_first=True),
            "gru": nn.GRU(inputs, units, batch_first=True),
            "rnn": nn.RNN(inputs, units, batch_first=True),
            "keras_lstm": ns["KerasLSTM"](inputs, units, dropout=0.3),
            "keras_gru": ns["KerasGRU"](inputs, units, reset_after=False),
            "keras_rnn": ns["KerasSimpleRNN"](inputs, units,
                                              activation=torch.relu)}


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn", "keras_lstm",
                                  "keras_gru", "keras_rnn"])
def test_end_padding_runs_the_rnn_once_as_the_step_loop(kind):
    """A mask padding the end of each row (one row all padding) gives what
    the exact step loop gives, for every flag, with one call of the RNN
    (Keras parity over the same flags: the rnn_end_padded fixtures)."""
    ns = _rnn_classes()
    torch.manual_seed(0)
    rnn = _counted(_rnns(ns, 3, 4)[kind].eval())
    lengths = torch.tensor([6, 1, 0, 3, 5, 6, 2])
    mask = torch.arange(6) < lengths[:, None]
    x = torch.randn(7, 6, 3)
    n_states = 2 if "lstm" in kind else 1
    flags = ("go_backwards", "zero_output_for_mask", "return_state",
             "initial_state", "return_sequences")
    for on in itertools.product([False, True], repeat=len(flags)):
        kw = dict(zip(flags, on))
        init = None
        if kw.pop("initial_state"):
            init = tuple(torch.randn(7, 4) for _ in range(n_states))
        with torch.no_grad():
            rnn.calls = 0
            got = ns["run_rnn"](rnn, x, mask=mask, initial_state=init,
                                **kw)
            calls = rnn.calls
            state = None if init is None else tuple(s[None] for s in init)
            state = state if state is None or n_states == 2 else state[0]
            seqs, last, final = ns["run_masked_steps"](
                rnn, x, mask, state, kw["go_backwards"],
                kw["zero_output_for_mask"], False)
        want = seqs if kw["return_sequences"] else last
        if kw["return_state"]:
            final = final if isinstance(final, tuple) else (final,)
            want = (want, *(s[0] for s in final))
        got, want = ((got,), (want,)) if torch.is_tensor(got) else (got, want)
        for a, b in zip(got, want, strict=True):
            assert torch.allclose(a, b, atol=1e-6), (kind, kw)
        # the cell state of an LSTM other than nn.LSTM needs the loop
        loop = kw["return_state"] and kind == "keras_lstm"
        assert calls == (6 if loop else 1), (kind, kw)


def test_masks_with_holes_step_through_time():
    ns = _rnn_classes()
    rnn = _counted(torch.nn.GRU(3, 4, batch_first=True))
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 2] = False
    ns["run_rnn"](rnn, torch.randn(2, 5, 3), mask=mask)
    assert rnn.calls == 5


def _any_rule():
    """keras.ops.any (Keras 3 Masking writes its mask with it), in case the
    op table does not have it yet."""
    from migrate.layout import identity
    from migrate.rules import Emit, Out, RULES, Rule, chain
    key = "keras.src.ops.numpy.Any"
    if key in RULES:
        return None

    def any_op(call):
        x = call.inputs[0]
        axis = int(call.config["axis"]) % x.rank
        shape = tuple(d for i, d in enumerate(x.shape) if i != axis)
        return Emit([Out(chain(f"{x.expr}.any(dim={axis})"), shape,
                         identity(len(shape)), "bool")])
    return {key: Rule(key, any_op)}


# -- refusals -----------------------------------------------------------------
def _edited(tmp_path, case, edit):
    """A copy of a fixture's .keras archive with its config edited."""
    src = fixture_dir(case) / "model.keras"
    dst = tmp_path / "model.keras"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                cfg = json.loads(data)
                edit(cfg)
                data = json.dumps(cfg).encode()
            zout.writestr(item, data)
    return dst


def test_stateful_rnn_is_refused_with_a_reason(tmp_path):
    def stateful(cfg):
        for layer in cfg["config"]["layers"]:
            if layer["class_name"] == "LSTM":
                layer["config"]["stateful"] = True
    path = _edited(tmp_path, "k3_lstm_options", stateful)
    with pytest.raises(migrate.UnsupportedLayers) as err:
        migrate.convert(path)
    msg = str(err.value)
    assert "stateful=True" in msg and "initial_state" in msg
    # every stateful layer is named at once
    assert len(err.value.problems) == 6


def test_partial_attention_axes_are_refused(tmp_path):
    def axes(cfg):
        for layer in cfg["config"]["layers"]:
            if layer["config"]["name"] == "image":
                layer["config"]["attention_axes"] = [2]
    path = _edited(tmp_path, "k3_mha_options", axes)
    with pytest.raises(migrate.UnsupportedLayers, match="attention_axes"):
        migrate.convert(path)


def test_softmax_of_a_masked_sequence_is_refused(tmp_path):
    """Keras broadcasts a (batch, steps) mask against the last axes of a
    Softmax input and fails; the port does not guess."""
    def softmax(cfg):
        for layer in cfg["config"]["layers"]:
            if layer["config"]["name"] == "relu":
                layer["class_name"] = "Softmax"
                layer["config"] = {"name": "relu", "axis": -1}
    path = _edited(tmp_path, "k3_mask_propagation", softmax)
    with pytest.raises(migrate.UnsupportedLayers, match="Keras mask"):
        migrate.convert(path)


def test_time_distributed_mask_consumer_per_step_is_refused(tmp_path):
    """Over a masked (batch, steps, features) input, Keras gives the
    wrapped layer a (batch,) mask per step: nothing it can apply."""
    def inner_softmax(cfg):
        for layer in cfg["config"]["layers"]:
            if layer["config"]["name"] == "td_masked":
                layer["config"]["layer"] = {
                    "module": "keras.layers", "class_name": "Softmax",
                    "config": {"name": "softmax", "axis": -1},
                    "registered_name": None}
    path = _edited(tmp_path, "k3_time_distributed", inner_softmax)
    with pytest.raises(migrate.UnsupportedLayers,
                       match="layer=Softmax on a masked input"):
        migrate.convert(path)


def test_masks_pass_activation_layers_and_time_distributed():
    """Activation layers keep the mask (Keras: supports_masking); inside
    TimeDistributed the wrapped layer gets each step's mask; Keras 2 then
    masks a sentence whose words are all masked (checked against Keras by
    the mask_propagation fixtures)."""
    k3 = _forward(_convert("k3_mask_propagation").source)
    k2 = _forward(_convert("k2_mask_propagation").source)
    for fwd in (k3, k2):
        assert re.search(r"run_rnn\(self\.lstm, relu, mask=\w+\)", fwd)
        assert "mask=mask_1.flatten(0, 1)" in fwd
    assert ".masked_fill(~(keep > 0.5), 0.0)" in k3
    assert "scores + (1.0 - keep) * -1e9" in k2
    assert "mask_1.flatten(2).any(dim=-1)" in k2


def test_merges_of_masked_inputs_follow_each_keras():
    """Keras 3 leaves masked steps out of Multiply/Maximum/Minimum and
    keeps a step any input keeps; Keras 2 merges values as they are and
    keeps a step every input keeps (parity: the merge_masks fixtures)."""
    k3 = _forward(_convert("k3_merge_masks").source)
    k2 = _forward(_convert("k2_merge_masks").source)
    assert "masked_multiply([masked_a, plain_b], [mask, None])" in k3
    assert re.search(r"masked_merge\(\s*torch\.maximum, \[plain_b, "
                     r"masked_a\], \[None, mask\]", k3)
    assert "mul_first = masked_a * plain_b" in k2 and "mask & mask_1" in k2
    assert "masked_multiply" not in k2 and "masked_merge" not in k2


def test_grouped_query_attention_shares_key_value_heads():
    """Each key/value head serves num_heads // num_key_value_heads query
    heads in turn (Keras: ops.repeat on the heads axis); the Keras masks
    of query and value build the attention mask (parity: gqa_options)."""
    conv = _convert("k3_gqa_options")
    fwd = _forward(conv.source)
    assert "k = k.repeat_interleave(repeats, dim=1)" in conv.source
    assert "mask=mask[:, :, None] & mask[:, None, :]" in fwd
    mqa = conv.module().mqa
    assert mqa.key.weight.shape == (3, 3)  # one head of 3 for 6 queries
    assert mqa.query.weight.shape == (18, 8)


# -- training mode ------------------------------------------------------------
def test_rnn_dropout_follows_each_keras():
    """Keras 3 draws one input mask per sequence (one per gate with
    recurrent dropout); tf.keras's fused kernel a new one at every step."""
    k3 = _convert("k3_rnn_dropout").module()
    k2 = _convert("k2_rnn_dropout").module()
    assert k3.lstm.dropout_per == "sequence" and k2.lstm.dropout_per == "step"
    assert k3.gru.dropout_per == "sequence" and k2.gru.dropout_per == "step"
    for m in (k3, k2):
        assert m.lstm_unrolled.dropout_per == "sequence"  # no fused kernel
        assert m.lstm_recurrent.dropout_per == "gate"
        assert (m.lstm_recurrent.input_dropout,
                m.lstm_recurrent.recurrent_dropout) == (0.2, 0.4)
        assert m.gru_before.dropout_per == "gate"
    assert _convert("k3_rnn_dropout").report["warnings"] == []


def _rnn_classes():
    """KerasLSTM, KerasGRU, KerasSimpleRNN and run_rnn as generated."""
    ns = {}
    exec(compile(_convert("k3_rnn_dropout").source, "model.py", "exec"), ns)
    return ns


def _probe(module, **weights):
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.zero_()
        for name, value in weights.items():
            getattr(module, name).copy_(value)
    return module.train()


def test_rnn_input_dropout_one_mask_per_sequence():
    """A linear SimpleRNN copying its input shows the mask: drawn once per
    sequence and kept at every step, the rate dropped, kept values scaled
    by 1 / (1 - rate); eval() is exact."""
    ns = _rnn_classes()
    rnn = _probe(ns["KerasSimpleRNN"](4, 4, activation=torch.nn.Identity(),
                                      dropout=0.3),
                 weight_ih_l0=torch.eye(4))
    torch.manual_seed(0)
    x = torch.ones(3000, 5, 4)
    out = rnn(x)[0]
    assert torch.equal(out, out[:, :1].expand_as(out))  # same at every step
    kept = out[:, 0] != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.02
    assert torch.allclose(out[:, 0][kept], torch.tensor(1 / 0.7))
    assert abs(out.mean().item() - 1.0) < 0.03  # the expectation is kept
    assert torch.equal(rnn.eval()(x)[0], x)
    # run_rnn steps one call per time step (a Keras mask): same masks
    mask = torch.ones(3000, 5, dtype=torch.bool)
    mask[:, 2] = False
    out = ns["run_rnn"](rnn.train(), x, mask=mask, return_sequences=True)
    assert torch.equal(out, out[:, :1].expand_as(out))


def test_rnn_recurrent_dropout_kept_over_time():
    """A SimpleRNN copying its state: h_t = h_0 * mask ** t, the same
    state mask at every step."""
    ns = _rnn_classes()
    rnn = _probe(ns["KerasSimpleRNN"](4, 4, activation=torch.nn.Identity(),
                                      recurrent_dropout=0.4),
                 weight_hh_l0=torch.eye(4))
    torch.manual_seed(1)
    out = rnn(torch.zeros(3000, 4, 4), torch.ones(1, 3000, 4))[0]
    kept = out[:, 0] != 0
    assert abs(kept.float().mean().item() - 0.6) < 0.02
    for t in range(4):
        assert torch.equal(out[:, t] != 0, kept)
        assert torch.allclose(out[:, t][kept], torch.tensor(0.6 ** -(t + 1)))


def _gru_probe(ns, **kw):
    """h_t = tanh(x_t * mask) for x = 1 (update gate shut, no state)."""
    bias = torch.zeros(12)
    bias[4:8] = -100.0  # torch order r, z, n: z = 0
    weight = torch.zeros(12, 4)
    weight[8:] = torch.eye(4)
    return _probe(ns["KerasGRU"](4, 4, **kw), weight_ih_l0=weight,
                  bias_ih_l0=bias)


@pytest.mark.parametrize("per", ["sequence", "step", "gate"])
def test_gru_dropout_masks_per_sequence_or_per_step(per):
    ns = _rnn_classes()
    gru = _gru_probe(ns, dropout=0.5, dropout_per=per)
    torch.manual_seed(2)
    kept = gru(torch.ones(2000, 6, 4))[0] != 0
    assert abs(kept.float().mean().item() - 0.5) < 0.03
    constant = torch.equal(kept, kept[:, :1].expand_as(kept))
    assert constant == (per != "step")


@pytest.mark.parametrize("per", ["sequence", "gate"])
def test_lstm_dropout_one_mask_per_gate(per):
    """Input gate and cell input see the input through their own masks
    with ``dropout_per="gate"``, through one shared mask otherwise."""
    ns = _rnn_classes()
    weight = torch.zeros(16, 4)
    weight[:4] = 100 * torch.eye(4)  # input gate: 1 if kept, else 0.5
    weight[8:12] = torch.eye(4)  # cell input: tanh(2) if kept, else 0
    bias = torch.zeros(16)
    bias[4:8], bias[12:] = -100.0, 100.0  # forget nothing kept; output 1
    lstm = _probe(ns["KerasLSTM"](4, 4, dropout=0.5, dropout_per=per),
                  weight_ih_l0=weight, bias_ih_l0=bias)
    torch.manual_seed(3)
    h = lstm(torch.ones(4000, 3, 4))[0]
    half = torch.isclose(h, torch.tanh(0.5 * torch.tanh(torch.tensor(2.))))
    share = half.float().mean().item()  # input gate dropped, cell input not
    assert (abs(share - 0.25) < 0.02) if per == "gate" else share == 0.0


def test_conv_lstm_dropout_masks_per_gate_kept_over_time():
    """ConvLSTM dropout: four masks per call (one per gate, element-wise),
    drawn at the first step; a per-gate convolution with masks of ones is
    the plain convolution."""
    ns = _rnn_classes()
    conv = _convert("k3_rnn_dropout").module().conv_lstm
    x = torch.randn(2, 3, 2, 5, 4)
    drawn = []
    draw = conv.gate_masks
    conv.gate_masks = lambda t, rate: drawn.append(rate) or draw(t, rate)
    conv.train()
    conv(x)
    assert drawn.count(0.2) == 1 and drawn.count(0.3) == 1
    xt = torch.randn(2, 2, 5, 4)
    ones = [torch.ones_like(xt)] * 4
    assert torch.allclose(ns["gate_conv"](conv.input_conv, xt, ones),
                          conv.input_conv(xt), atol=1e-6)
    masks = conv.gate_masks(xt, 0.5)
    assert len(masks) == 4 and not torch.equal(masks[0], masks[1])
    conv.eval()
    assert conv.gate_masks(xt, 0.5) is None


def test_rnn_dropout_in_eval_is_the_torch_module():
    model = _convert("k3_rnn_dropout").module()
    x, ids = torch.randn(3, 6, 3), torch.tensor([[1, 2, 3, 0, 0, 0]] * 3)
    video = torch.randn(3, 3, 2, 5, 4)
    for name in ("lstm", "lstm_recurrent", "gru"):
        m = getattr(model, name)
        base = type(m).__mro__[1]  # nn.LSTM / nn.GRU
        assert torch.equal(m(x)[0], base.forward(m, x)[0])
    with torch.no_grad():
        ref = model(x, ids, video)
        model.train()
        torch.manual_seed(0)
        noisy = model(x, ids, video)
    assert all(not torch.allclose(a, b) for a, b in zip(ref, noisy))
    model.zero_grad()
    sum(o.sum() for o in model(x, ids, video)).backward()
    assert model.lstm_recurrent.weight_hh_l0.grad.abs().sum() > 0


def test_attention_dropout_acts_in_train_mode_only():
    conv = _convert("k3_transformer_encoder")
    model = conv.module()
    ids = torch.tensor([[4, 8, 15, 16, 23, 42 % 50, 0, 0, 0, 0]] * 3)
    with torch.no_grad():
        ref = model(ids)
        assert torch.equal(model(ids), ref)  # eval: deterministic
        model.train()
        torch.manual_seed(0)
        noisy = model(ids)
    assert model.attention.dropout.p == 0.1
    assert not torch.allclose(noisy, ref)


def _mha(case, **kw):
    ns = {}
    exec(compile(_convert(case).source, "model.py", "exec"), ns)
    torch.manual_seed(0)
    return ns["MultiHeadAttention"](8, num_heads=2, key_dim=4, **kw).eval()


@pytest.mark.parametrize("case", ["k3_mha_options", "k2_mha_options"])
def test_attention_runs_sdpa_as_the_explicit_scores(case):
    """F.scaled_dot_product_attention gives what the explicit path (kept
    for returned scores) gives; a query step that may attend to nothing
    attends uniformly (Keras 3's dot_product_attention, Keras 2's -1e9),
    never NaN (Keras parity: the mha_options fixtures)."""
    mha = _mha(case)
    assert "F.scaled_dot_product_attention(" in _convert(case).source
    query, value = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    mask = torch.ones(2, 3, 5, dtype=torch.bool)
    mask[0, :, 3:] = False
    mask[1, 2] = False  # query step 2 of row 1 sees nothing
    with torch.no_grad():
        out = mha(query, value, mask=mask)
        explicit, _ = mha(query, value, mask=mask,
                          return_attention_scores=True)
        uniform = mha.output(mha.value(value[1]).mean(dim=0))
    assert torch.allclose(out[0], explicit[0], atol=1e-6)
    assert torch.allclose(out[1, :2], explicit[1, :2], atol=1e-6)
    assert torch.allclose(out[1, 2], uniform, atol=1e-6)


def test_keras3_attention_with_dropout_zeroes_a_step_without_keys():
    """Keras 3 with dropout takes its Softmax layer, which zeroes masked
    weights: a query step that may attend to nothing gets zeros (then the
    output projection's bias), in eval() as in train()."""
    mha = _mha("k3_mha_options", dropout=0.5)
    mask = torch.zeros(1, 2, 4, dtype=torch.bool)
    with torch.no_grad():
        out = mha(torch.randn(1, 2, 8), torch.randn(1, 4, 8), mask=mask)
    assert torch.allclose(out, mha.output.bias.expand_as(out))


def test_dot_attention_runs_sdpa():
    src = _convert("k3_dense_attention").source
    assert "def dot_attend(" in src and "F.scaled_dot_product_attention(" \
        in src
    # returned scores keep the explicit path
    assert re.search(r"with_scores_0, with_scores_1 = attend\(", src)


# -- the translator -----------------------------------------------------------
def test_a_tensor_is_permuted_once_for_all_its_readers():
    """Two layers that need the same tensor in the same other layout share
    one permute, moved into a variable before the first of them."""
    fwd = _forward(_convert("k3_reshape_sweep").source)
    assert fwd.count("conv.permute(0, 2, 3, 1)") == 1
    assert "conv_cl = conv.permute(0, 2, 3, 1)" in fwd
    assert "conv_cl.reshape(-1, 4, 20)" in fwd


# -- Keras 3 run order --------------------------------------------------------
def _layer(name):
    return Layer(name=name, class_name="Dense", config={"name": name})


def test_keras3_run_order_follows_map_graph():
    """Deeper nodes first; nodes of one depth in reverse order of the
    outputs that reach them (what Keras 3's map_graph gives)."""
    x = GraphInput("x", (None, 4), "float32", TensorRef("x"))
    a = Node("a", _layer("a"), [x.ref])
    b = Node("b", _layer("b"), [x.ref])
    c = Node("c", _layer("c"), [TensorRef("a")])
    graph = Graph("g", [x], [GraphOutput("c", TensorRef("c")),
                             GraphOutput("b", TensorRef("b"))], [a, b, c])
    order = keras3_run_order(graph)
    assert order["a"] < order["c"]
    assert order["a"] < order["b"]  # depth 1 before depth 0
    graph.outputs.reverse()
    assert keras3_run_order(graph)["a"] < keras3_run_order(graph)["b"]


def test_sequence_helpers_are_reserved_names():
    from migrate.emit.names import Namespace
    ns = Namespace()
    assert ns.name("a", "run_rnn") == "run_rnn_1"
    assert ns.name("b", "MultiHeadAttention") != "MultiHeadAttention"
