"""The mixture-of-experts feed-forward: routing, capacity, load-balancing loss, gradients, ViT-MoE."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from applications.moe import MoEFeedForward, build_vit_moe


@pytest.fixture(autouse=True)
def _fresh_keras():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session(free_memory=False)  # names and seeds; no gc.collect (0.3 s) per test


def tokens(batch: int = 2, n: int = 12, dim: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, n, dim)).astype("float32")


def router_probs(layer: MoEFeedForward, x: np.ndarray) -> np.ndarray:
    logits = x @ layer.router.numpy()
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def routed(layer: MoEFeedForward, x: np.ndarray):
    return tuple(np.asarray(t) for t in layer.route(x))


@pytest.mark.parametrize("top_k", [1, 2])
def test_each_token_goes_to_exactly_its_top_k_experts(top_k):
    x = tokens()
    layer = MoEFeedForward(num_experts=4, hidden_dim=8, top_k=top_k, capacity_factor=4.0)  # room for all
    dispatch, combine, _ = routed(layer, x)
    probs = router_probs(layer, x)
    chosen = dispatch.sum(axis=3)  # (batch, tokens, experts)
    np.testing.assert_array_equal(chosen.sum(-1), np.full((2, 12), top_k))
    top = np.argsort(-probs, axis=-1)[..., :top_k]
    np.testing.assert_array_equal(np.sort(np.argwhere(chosen)[:, 2].reshape(2, 12, top_k), -1), np.sort(top, -1))
    assert dispatch.sum(axis=1).max() == 1  # a slot holds one token
    gates = combine.sum(axis=(2, 3))
    want = probs.max(-1) if top_k == 1 else np.ones((2, 12))  # Switch gate, or top-k renormalised
    np.testing.assert_allclose(gates, want, rtol=1e-5)


@pytest.mark.parametrize("top_k", [1, 2])
def test_capacity_is_respected_and_dropped_tokens_output_zero(top_k):
    x = tokens(n=16)
    layer = MoEFeedForward(num_experts=4, hidden_dim=8, top_k=top_k, capacity_factor=0.5)
    capacity = layer.capacity_for(16)
    assert capacity == math.ceil(0.5 * top_k * 16 / 4)
    dispatch, _, _ = routed(layer, x)
    probs = router_probs(layer, x)
    choices = np.argsort(-probs, axis=-1)[..., :top_k]
    wanted = np.stack([np.bincount(c.ravel(), minlength=4) for c in choices])  # (batch, experts)
    np.testing.assert_array_equal(dispatch.sum(axis=(1, 3)), np.minimum(wanted, capacity))
    if top_k == 1:  # an expert keeps the first tokens, in order, that chose it
        for b in range(2):
            for e in range(4):
                kept = np.flatnonzero(dispatch[b, :, e].sum(-1))
                np.testing.assert_array_equal(kept, np.flatnonzero(choices[b, :, 0] == e)[:capacity])
        kept = dispatch.sum(axis=(2, 3)) > 0
        assert 0 < kept.sum() < kept.size
        y = np.asarray(layer(x))
        assert np.abs(y[~kept]).max() == 0.0 and np.abs(y[kept]).max(axis=-1).min() > 0


def test_aux_loss_equals_the_switch_formula_on_a_hand_computed_case():
    # router = identity: token probabilities (0.75, 0.25), (0.9, 0.1), (0.25, 0.75), (0.75, 0.25)
    ln3, ln9 = math.log(3), math.log(9)
    x = np.array([[[ln3, 0], [ln9, 0], [0, ln3], [ln3, 0]]], "float32")
    layer = MoEFeedForward(num_experts=2, hidden_dim=4, top_k=1, capacity_factor=2.0, aux_loss_weight=0.1)
    layer.build(x.shape)
    layer.router.assign(np.eye(2, dtype="float32"))
    # f = (3/4, 1/4) of the tokens; P = (2.65/4, 1.35/4); loss = 2 * (0.75 * 0.6625 + 0.25 * 0.3375)
    assert float(layer.route(x)[2]) == pytest.approx(1.1625, abs=1e-6)
    layer(x)
    (added,) = layer.losses
    assert float(added) == pytest.approx(0.1 * 1.1625, abs=1e-7)
    # top-2 of 2 experts: every token uses both, f = (1/2, 1/2), so the loss is 2 * (P0 + P1) / 2 = 1
    both = MoEFeedForward(num_experts=2, hidden_dim=4, top_k=2)
    both.build(x.shape)
    both.router.assign(np.eye(2, dtype="float32"))
    assert float(both.route(x)[2]) == pytest.approx(1.0, abs=1e-6)


def test_gradients_reach_every_expert_that_received_tokens_and_no_other():
    x = np.abs(tokens(n=16))
    layer = MoEFeedForward(num_experts=4, hidden_dim=8, top_k=1, capacity_factor=4.0)
    layer.build(x.shape)
    router = np.random.default_rng(1).normal(size=(6, 4)).astype("float32")
    router[:, 3] = -5.0  # positive tokens never choose expert 3
    layer.router.assign(router)
    received = routed(layer, x)[0].sum(axis=(0, 1, 3)) > 0
    np.testing.assert_array_equal(received, [True, True, True, False])
    weights = [layer.kernel1, layer.bias1, layer.kernel2, layer.bias2, layer.router]
    with tf.GradientTape() as tape:
        y = layer(x)
        loss = tf.reduce_sum(y * np.linspace(-1, 1, y.shape[-1], dtype="float32")) + sum(layer.losses)
    grads = tape.gradient(loss, weights)
    for grad in grads[:4]:  # per-expert weights
        per_expert = np.abs(np.asarray(grad)).reshape(4, -1).sum(-1)
        np.testing.assert_array_equal(per_expert > 0, received)
    assert np.abs(np.asarray(grads[4])).sum() > 0  # the router learns through its gates and the aux loss


def test_vit_moe_puts_experts_in_every_other_block_and_trains_on_their_loss():
    backbone = build_vit_moe((32, 32, 3), patch_size=8, dim=16, depth=4, num_heads=2, num_experts=4,
                             aux_loss_weight=0.5)
    names = [layer.name for layer in backbone.layers]
    assert [n for n in names if n.endswith("_moe")] == ["block2_moe", "block4_moe"]
    assert "block1_mlp_fc1" in names and "block3_mlp_fc1" in names and "block2_mlp_fc1" not in names
    pooled = keras.layers.GlobalAveragePooling1D()(backbone.output)
    model = keras.Model(backbone.input, keras.layers.Dense(3)(pooled))
    x, y = np.random.default_rng(2).uniform(size=(8, 32, 32, 3)).astype("float32"), np.arange(8) % 3
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", ce)
    logits = model(x, training=False)
    aux = [float(v) for v in model.losses]
    assert len(aux) == 2 and min(aux) > 0
    total = model.evaluate(x, y, batch_size=8, verbose=0)
    assert total == pytest.approx(float(ce(y, logits)) + sum(aux), rel=1e-5)


def test_config_round_trip_and_bad_arguments():
    layer = MoEFeedForward(num_experts=3, hidden_dim=5, top_k=2, capacity_factor=1.5, aux_loss_weight=0.2,
                           activation="relu", name="moe")
    config = MoEFeedForward.from_config(layer.get_config()).get_config()
    assert config == layer.get_config() and config["top_k"] == 2 and config["activation"] == "relu"
    for kwargs, message in [({"top_k": 4}, "top_k"), ({"top_k": 0}, "top_k"), ({"num_experts": 0}, "num_experts"),
                            ({"capacity_factor": 0.0}, "capacity_factor"), ({"hidden_dim": 0}, "hidden_dim"),
                            ({"aux_loss_weight": -1.0}, "aux_loss_weight")]:
        with pytest.raises(ValueError, match=message):
            MoEFeedForward(**{"num_experts": 3, "hidden_dim": 5, **kwargs})
    with pytest.raises(ValueError, match="tokens"):
        MoEFeedForward(num_experts=3, hidden_dim=5).build((None, 6))
