"""zoo.pretrain: SimCLR's NT-Xent against the paper's formula written plainly, training that lowers the loss,
exact resume, the run directory's refusals, the saved backbone loading back, and bad inputs."""
import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import zoo  # noqa: E402
from zoo.errors import InvalidArgumentError  # noqa: E402
from zoo.represent.pretraining import nt_xent, pretrain  # noqa: E402
from zoo.runs import RunExistsError  # noqa: E402

DATA = {"classes": [0, 1, 2, 3], "per_class": 16}  # 64 digits, labels unused
OPTIONS = dict(epochs=3, batch_size=32, learning_rate=3e-3, temperature=0.2, projection_dim=16, data_options=DATA,
               verbose=0)


def reference_nt_xent(z1, z2, t):
    """Chen et al. 2020, eq. 1, averaged over all 2N views: one view at a time, one candidate at a time."""
    views = [v / np.linalg.norm(v) for v in np.concatenate([z1, z2]).astype(np.float64)]
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        positive = i + n if i < n else i - n
        below = 0.0
        for k in range(2 * n):
            if k != i:
                below += math.exp(float(views[i] @ views[k]) / t)
        total += -math.log(math.exp(float(views[i] @ views[positive]) / t) / below)
    return total / (2 * n)


@pytest.mark.parametrize("t", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("n", [1, 3, 8])
def test_nt_xent_matches_the_formula(t, n):
    rng = np.random.default_rng(n)
    z1, z2 = rng.normal(size=(n, 5)), rng.normal(size=(n, 5)) * 3.0  # the scale must not matter (cosine)
    assert float(nt_xent(z1, z2, t)) == pytest.approx(reference_nt_xent(z1, z2, t), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_nt_xent_known_values(t):
    n = 4
    # every view alike: the positive is one of 2N-1 equal candidates
    assert float(nt_xent(np.ones((n, 3)), np.ones((n, 3)), t)) == pytest.approx(math.log(2 * n - 1), rel=1e-6)
    # each pair the same unit vector, pairs orthogonal: -log(e^(1/t) / (e^(1/t) + 2N-2))
    z = np.eye(n, 6)
    assert float(nt_xent(z, z, t)) == pytest.approx(math.log(1 + (2 * n - 2) * math.exp(-1 / t)),
                                                   rel=1e-5, abs=1e-7)


def fresh_model():
    keras.utils.set_random_seed(0)
    return zoo.create_model("resnet_tiny", pretrained=False, input_shape=(16, 16))


def images(n=16):
    train, *_ = zoo.data.load("digits", image_size=(16, 16), channels=3, classes=[5, 6], shuffle=False,
                              batch_size=n)
    return next(iter(train))[0].numpy()


def batchnorms(model):
    backbone = model.get_layer("backbone")
    return [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 3-epoch SimCLR run in a run directory, with the weights it started from."""
    model = fresh_model()
    before = [w.copy() for w in model.get_weights()]
    run_dir = tmp_path_factory.mktemp("ssl") / "run"
    result = pretrain(model, "digits", run_dir=run_dir, **OPTIONS)
    return model, before, result, run_dir


def test_simclr_lowers_its_loss_and_trains_the_backbone(straight):
    model, before, result, _ = straight
    losses = [row["loss"] for row in result.history]
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert losses[-1] < losses[0] - 0.05, losses
    assert result.model is model
    backbone = model.get_layer("backbone")
    start = dict(zip([w.path for w in model.weights], before))
    kernels = [w for w in backbone.trainable_weights if w.path.endswith("kernel")]
    assert all(not np.allclose(w.numpy(), start[w.path]) for w in kernels)
    for layer in batchnorms(model):  # recalibrated on the images: finite, positive, moved from (0, 1)
        variance = layer.moving_variance.numpy()
        assert np.all(np.isfinite(variance)) and np.all(variance > 0)
        assert not np.allclose(layer.moving_mean.numpy(), 0.0)
    features = model.predict(images(), verbose=0)
    assert np.all(np.isfinite(features)) and features.std(axis=0).max() > 1e-3


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt("stopped after the first epoch")


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(straight, tmp_path):
    model, _, result, _ = straight
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        pretrain(fresh_model(), "digits", run_dir=run_dir, callbacks=[Interrupt()], **OPTIONS)
    resumed_model = fresh_model()
    resumed = pretrain(resumed_model, "digits", run_dir=run_dir, **OPTIONS)
    assert resumed.resumed and not result.resumed
    assert [row["loss"] for row in resumed.history] == pytest.approx([row["loss"] for row in result.history],
                                                                     rel=1e-6)
    for a, b in zip(resumed_model.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_a_finished_run_is_refused(straight):
    *_, run_dir = straight
    with pytest.raises(RunExistsError, match="finished run"):
        pretrain(fresh_model(), "digits", run_dir=run_dir, **OPTIONS)


def test_the_saved_backbone_loads_with_create_model(straight, tmp_path):
    model, *_ = straight
    path = tmp_path / "ssl.weights.h5"
    zoo.save_backbone_weights(model, path)
    loaded = zoo.create_model("resnet_tiny", pretrained=str(path), input_shape=(16, 16))
    x = images()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options, message", [
    ({"method": "byol"}, "simclr, supervised"),
    ({"epochs": 0}, "epochs"),
    ({"temperature": 0.0}, "temperature"),
    ({"temperature": -0.5}, "temperature"),
    ({"batch_size": 1}, "batch_size"),
])
def test_bad_inputs_are_one_line_errors(options, message):
    with pytest.raises(InvalidArgumentError, match=message) as error:
        pretrain(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), "digits", **options)
    assert "\n" not in str(error.value)
