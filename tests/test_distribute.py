"""zoo.distribute: strategies, batch plans, the multi-worker patches, synchronized BatchNorm.

Training on several devices runs in subprocesses (this file, run as a script): logical CPU
devices must be configured before TensorFlow starts, and a multi-worker cluster is several
processes. Run as a script it prints one line, ``RESULT <json>``.
"""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from zoo.errors import InvalidArgumentError

EPOCHS = 3
TIMEOUT = 240  # seconds for any one subprocess; a broken collective hangs rather than fails


# ---------------------------------------------------------------- strategies, in this process

def test_off_and_auto_give_the_default_strategy_without_asking_for_a_tpu(monkeypatch):
    import tensorflow as tf

    from zoo import distribute

    for name in ("TPU_NAME", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", "TPU_CONFIG"):
        monkeypatch.delenv(name, raising=False)

    def no_tpu_lookups(*args, **kwargs):
        raise AssertionError("auto looked for a TPU on a machine that shows no sign of one")

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", no_tpu_lookups)
    assert distribute.strategy("off") is tf.distribute.get_strategy()
    if not (tf.config.list_logical_devices("GPU") or Path("/dev/accel0").exists()):
        assert distribute.strategy("auto") is tf.distribute.get_strategy()


def test_one_device_and_mirrored_on_this_machine():
    import tensorflow as tf

    from zoo import distribute

    one = distribute.strategy("one_device", ["/cpu:0"])
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    mirrored = distribute.strategy("mirrored", ["/cpu:0"])
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync == 1


@pytest.mark.parametrize("name, devices, message", [
    ("nope", None, "unknown strategy 'nope'"),
    ("keras_data_parallel", None, "only distributes on the JAX backend"),
    ("data_parallel", None, "use 'mirrored'"),
    ("mirrored", ["/gpu:7"], "no device '/gpu:7'"),
    ("mirrored", ["/cpu:0", "/cpu:9"], "no device '/cpu:9'"),
    ("mirrored", ["banana"], "no device 'banana'"),
    ("mirrored", ["/cpu:0", "/cpu:0"], "named twice"),
    ("mirrored", [], "devices is empty"),
    ("one_device", ["/cpu:0", "/cpu:0"], "one_device takes one device"),
    ("off", ["/cpu:0"], "devices only applies"),
])
def test_bad_strategy_requests_say_what_to_do(name, devices, message):
    from zoo import distribute

    with pytest.raises(InvalidArgumentError, match=message):
        distribute.strategy(name, devices)


@pytest.mark.parametrize("tf_config, message", [
    (None, "TF_CONFIG, which is not set"),
    ("{cluster: oops", "TF_CONFIG is not JSON"),
    ('{"task": {"type": "worker", "index": 0}}', "needs a 'cluster' and a 'task'"),
    ('{"cluster": {"worker": ["localhost:1"]}}', "needs a 'cluster' and a 'task'"),
    ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', "needs a list"),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}', "is not 'host:port'"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', "index 2 is out of range"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "'ps' is not a job"),
])
def test_a_malformed_tf_config_is_refused_before_training(monkeypatch, tf_config, message):
    from zoo import distribute

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(InvalidArgumentError, match=message):
        distribute.strategy("multi_worker")


def test_multi_worker_must_come_before_any_other_tensorflow_work(monkeypatch):
    import tensorflow as tf

    from zoo import distribute

    tf.constant(1.0) + 1  # the runtime has started
    monkeypatch.setenv("TF_CONFIG", distribute.tf_config([f"localhost:{p}" for p in _free_ports(2)], index=0))
    with pytest.raises(InvalidArgumentError, match="before any other TensorFlow work"):
        distribute.strategy("multi_worker")


@pytest.mark.skipif(Path("/dev/accel0").exists(), reason="this machine has a TPU")
def test_tpu_without_a_tpu_says_what_to_do(monkeypatch):
    from zoo import distribute

    for name in ("TPU_NAME", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", "TPU_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(InvalidArgumentError, match="cannot start a TPU .*run on a TPU VM or set TPU_NAME"):
        distribute.strategy("tpu")


def test_tf_config_names_the_cluster_and_this_worker():
    from zoo import distribute

    config = json.loads(distribute.tf_config("host1:2222, host2:2222", index=1))
    assert config == {"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 1}}
    with pytest.raises(InvalidArgumentError, match="out of range"):
        distribute.tf_config("host1:2222,host2:2222", index=2)
    with pytest.raises(InvalidArgumentError, match="not 'host:port'"):
        distribute.tf_config("host1,host2:2222", index=0)


def test_single_process_runs_are_chief_and_back_up_under_the_run_directory(tmp_path):
    import tensorflow as tf

    from zoo import distribute

    default = tf.distribute.get_strategy()
    assert distribute.is_chief(default)
    assert distribute.backup_dir(tmp_path, default) == tmp_path / "backup"


def test_the_multi_worker_patch_applies_once_and_only_to_broken_versions(monkeypatch):
    import keras
    from keras.src.backend.tensorflow import trainer

    from zoo import distribute

    before = trainer.reduce_per_replica
    monkeypatch.setattr(trainer, "reduce_per_replica", before)  # restored after the test
    monkeypatch.setattr(trainer.TensorFlowTrainer, "_maybe_symbolic_build",
                        trainer.TensorFlowTrainer._maybe_symbolic_build)
    monkeypatch.setattr(keras, "__version__", "3.99.0")
    assert distribute.patch_keras_for_multi_worker() is False
    assert trainer.reduce_per_replica is before

    monkeypatch.setattr(keras, "__version__", "3.15.1")
    assert distribute.patch_keras_for_multi_worker() is True
    patched = trainer.reduce_per_replica
    assert patched is not before
    assert distribute.patch_keras_for_multi_worker() is True
    assert trainer.reduce_per_replica is patched


def test_sync_batchnorm_sets_every_batchnorm_layer_and_survives_saving(tmp_path):
    import keras

    from zoo import distribute

    inner = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()], name="inner")
    inputs = keras.Input((4,))
    x = keras.layers.BatchNormalization()(inner(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    assert distribute.sync_batchnorm(model) == 2
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    flags = [layer.synchronized for layer in loaded._flatten_layers()
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert flags == [True, True]


# ---------------------------------------------------------------- batch plans

def test_batch_size_is_global_and_split_over_the_replicas():
    from zoo import distribute

    plan = distribute.batch_plan(4, batch_size=64, learning_rate=0.1)
    assert (plan.replicas, plan.global_batch_size, plan.per_replica_batch_size) == (4, 64, 16)
    assert plan.learning_rate == 0.1 and plan.warmup_epochs == 0
    plan = distribute.batch_plan(4, per_replica_batch_size=8)
    assert (plan.global_batch_size, plan.per_replica_batch_size) == (32, 8)
    assert distribute.batch_plan(1).global_batch_size == 32  # Keras's default batch


def test_batch_plan_reads_the_replicas_from_a_strategy():
    import tensorflow as tf

    from zoo import distribute

    assert distribute.batch_plan(tf.distribute.get_strategy(), batch_size=8).per_replica_batch_size == 8


def test_learning_rate_scaling_rules():
    from zoo import distribute

    linear = distribute.batch_plan(8, per_replica_batch_size=32, learning_rate=0.1, scale_rule="linear")
    assert linear.learning_rate == pytest.approx(0.8)  # from the one-device batch of 32
    assert linear.warmup_epochs == 3
    sqrt = distribute.batch_plan(4, batch_size=512, learning_rate=0.1, scale_rule="sqrt", base_batch_size=128)
    assert sqrt.learning_rate == pytest.approx(0.2)
    assert sqrt.warmup_epochs == 1
    huge = distribute.batch_plan(1024, per_replica_batch_size=8, learning_rate=1e-4, scale_rule="linear")
    assert huge.warmup_epochs == 5
    smaller = distribute.batch_plan(1, batch_size=64, learning_rate=0.1, scale_rule="linear", base_batch_size=256)
    assert smaller.learning_rate == pytest.approx(0.025) and smaller.warmup_epochs == 0


def test_batch_plan_describes_itself_for_the_log_and_the_config():
    from zoo import distribute

    plan = distribute.batch_plan(2, batch_size=64, learning_rate=0.1, scale_rule="linear")
    assert plan.describe() == ("2 replicas x 32 = global batch 64; learning rate 0.1 -> 0.2 "
                               "(linear scaling from batch 32); warm up 1 epoch")
    assert json.loads(json.dumps(plan.as_dict())) == {
        "replicas": 2, "global_batch_size": 64, "per_replica_batch_size": 32, "base_learning_rate": 0.1,
        "learning_rate": 0.2, "scale_rule": "linear", "base_batch_size": 32, "warmup_epochs": 1}


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=3), "smaller than the 4 replicas"),
    (dict(batch_size=30), "use 28 or 32"),
    (dict(batch_size=32, per_replica_batch_size=8), "not both"),
    (dict(batch_size=0), "positive integer"),
    (dict(per_replica_batch_size=2.5), "positive integer"),
    (dict(batch_size=32, scale_rule="cubic"), "unknown scale_rule"),
    (dict(batch_size=32, learning_rate=0.0), "learning_rate must be positive"),
])
def test_batch_plan_errors(kwargs, message):
    from zoo import distribute

    with pytest.raises(InvalidArgumentError, match=message):
        distribute.batch_plan(4, **kwargs)


# ---------------------------------------------------------------- training, in subprocesses

def _run(*args: str) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    return subprocess.Popen([sys.executable, __file__, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).parents[1])


@pytest.fixture
def spawn():
    """``_run``, and the processes it started killed after the test: a worker whose peer failed waits."""
    started = []

    def start(*args: str) -> subprocess.Popen:
        started.append(_run(*args))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _result(process: subprocess.Popen) -> dict:
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert process.returncode == 0 and lines, output[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


def _largest_difference(a: list, b: list) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b, strict=True))


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_mirrored_on_two_devices_trains_like_one_device_with_the_same_global_batch():
    result = _result(_run("mirrored"))
    print(f"largest weight difference, mirrored vs one device: {result['plain']:.2e}; with BatchNorm: "
          f"synchronized {result['sync_bn']:.2e}, per replica {result['local_bn']:.2e}")
    assert result["replicas"] == 2
    assert result["plain"] < 1e-5
    assert result["sync_bn"] < 1e-5
    assert result["local_bn"] > 1e-3  # per-replica statistics differ: the comparison can tell
    print(f"keras-hub DINOv2 fine-tuned mirrored vs one device: {result['hub']:.2e}")
    assert result["hub"] < 1e-5  # a hub backbone's layers are mirrored and their gradients summed


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict:
    return _result(_run("train", str(tmp_path_factory.mktemp("single"))))


@pytest.mark.slow
def test_two_workers_train_like_one_process(tmp_path, one_process, spawn):
    ports = ",".join(map(str, _free_ports(2)))
    workers = [spawn("train", str(tmp_path / "run"), "--index", str(i), "--ports", ports) for i in range(2)]
    results = [_result(w) for w in workers]
    differences = [_largest_difference(r["weights"], one_process["weights"]) for r in results]
    print(f"largest weight difference, two workers vs one process: {max(differences):.2e}")
    assert max(differences) < 1e-5
    for r in results:  # the logged loss is the global batch's, as in one process
        np.testing.assert_allclose(r["loss"], one_process["loss"], atol=1e-5)
    assert [r["chief"] for r in results] == [True, False]
    assert [r["epochs"] for r in results] == [list(range(EPOCHS))] * 2
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["backup", "model.weights.h5"]


@pytest.mark.slow
def test_a_killed_worker_resumes_from_its_own_backup(tmp_path, one_process, spawn):
    run_dir, marker = tmp_path / "run", tmp_path / "crashed"
    ports = ",".join(map(str, _free_ports(2)))

    def worker(i: int) -> subprocess.Popen:
        return spawn("train", str(run_dir), "--index", str(i), "--ports", ports, "--crash-marker", str(marker))

    first, second = worker(0), worker(1)
    output, _ = second.communicate(timeout=TIMEOUT)
    assert second.returncode == 3, output[-4000:]  # it died after its first epoch
    # Its peer waits in the next collective (or fails there): a cluster manager restarts the
    # whole job. Wait for the peer's own backup of the epoch first.
    metadata = run_dir / "backup" / "worker-0" / "training_metadata.json"

    def backed_up() -> bool:
        return metadata.exists() and metadata.read_text().startswith('{"epoch": 1,')

    deadline = time.monotonic() + TIMEOUT
    while first.poll() is None and not backed_up() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert backed_up(), "worker 0 never backed up its first epoch"
    first.kill()
    first.communicate()

    results = [_result(w) for w in [worker(0), worker(1)]]
    differences = [_largest_difference(r["weights"], one_process["weights"]) for r in results]
    print(f"largest weight difference, resumed workers vs one process: {max(differences):.2e}")
    assert [r["epochs"] for r in results] == [list(range(1, EPOCHS))] * 2  # resumed, not restarted
    assert max(differences) < 1e-5


# ---------------------------------------------------------------- the subprocess side

def _data():
    rng = np.random.RandomState(1)
    return rng.rand(64, 8, 8, 1).astype("float32"), rng.randint(0, 3, size=64)


def _model(batchnorm: bool = False):
    import keras

    layers = [keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu")]
    layers += [keras.layers.BatchNormalization()] if batchnorm else []
    return keras.Sequential(layers + [keras.layers.Flatten(), keras.layers.Dense(3)])


def _train(strategy, initial, batchnorm=False, sync=False, epochs=1, callbacks=()):
    import keras

    from zoo import distribute

    x, y = _data()
    with strategy.scope():
        model = _model(batchnorm)
        model.set_weights(initial)
        if sync:
            distribute.sync_batchnorm(model)
        model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=list(callbacks))
    return model


def _initial_weights(batchnorm: bool = False) -> list:
    import keras

    keras.utils.set_random_seed(0)
    return _model(batchnorm).get_weights()


def _mirrored_main() -> dict:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from zoo import distribute

    mirrored = distribute.strategy("mirrored", ["/cpu:0", "/cpu:1"])
    one = distribute.strategy("off")
    result = {"replicas": mirrored.num_replicas_in_sync}
    for key, batchnorm, sync in (("plain", False, False), ("sync_bn", True, True), ("local_bn", True, False)):
        initial = _initial_weights(batchnorm)
        reference = _train(one, initial, batchnorm, epochs=2).get_weights()
        weights = _train(mirrored, initial, batchnorm, sync, epochs=2).get_weights()
        result[key] = _largest_difference(weights, reference)
    result["hub"] = _largest_difference(*(_finetune_hub(strategy) for strategy in (mirrored, one)))
    return result


def _finetune_hub(strategy) -> list:
    """A keras-hub DINOv2 (the parity fixture) fine-tuned through ``zoo.finetune``: copied into the strategy's
    scope, as a model built outside it is."""
    import keras
    import tensorflow as tf

    import zoo

    keras.utils.set_random_seed(0)
    model = zoo.create_model(Path(__file__).parent / "fixtures" / "hub" / "dinov2_tiny", num_classes=3)
    x = np.random.default_rng(0).uniform(0, 255, (8, 56, 56, 3)).astype("float32")
    train = tf.data.Dataset.from_tensor_slices((x, np.arange(8) % 3)).batch(4)
    result = zoo.finetune(model, (train,), recipe="full", epochs=1, patience=None, verbose=0, strategy=strategy)
    return result.model.get_weights()


def _train_main(run_dir: Path, index: int | None, ports: str | None, crash_marker: Path | None) -> dict:
    import keras

    from zoo import distribute

    if ports is not None:
        os.environ["TF_CONFIG"] = distribute.tf_config([f"localhost:{p}" for p in ports.split(",")], index)
    strategy = distribute.strategy("multi_worker" if ports else "off")
    epochs = []
    callbacks = [keras.callbacks.BackupAndRestore(distribute.backup_dir(run_dir, strategy)),
                 keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: epochs.append(epoch))]
    if crash_marker is not None and index == 1 and not crash_marker.exists():
        def crash(epoch, logs):
            crash_marker.touch()
            os._exit(3)
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=crash))  # after the backup is written
    model = _train(strategy, _initial_weights(), epochs=EPOCHS, callbacks=callbacks)
    loss = model.history.history["loss"]
    if distribute.is_chief(strategy):
        run_dir.mkdir(parents=True, exist_ok=True)
        model.save_weights(run_dir / "model.weights.h5")
    weights = [w.tolist() for w in model.get_weights()]
    return {"weights": weights, "loss": loss, "epochs": epochs, "chief": distribute.is_chief(strategy)}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["mirrored", "train"])
    parser.add_argument("run_dir", nargs="?", type=Path)
    parser.add_argument("--index", type=int)
    parser.add_argument("--ports")
    parser.add_argument("--crash-marker", type=Path)
    args = parser.parse_args()
    if args.mode == "mirrored":
        output = _mirrored_main()
    else:
        output = _train_main(args.run_dir, args.index, args.ports, args.crash_marker)
    print("RESULT " + json.dumps(output), flush=True)
