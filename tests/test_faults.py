"""Run directories survive faults: kills at any point, a full disk, damaged checkpoints, a second process, a
resume with other settings. Each fault ends in a resume with the weights of an uninterrupted run, or in one
line that says what to do.

The command-line runs are ``keras-zoo finetune`` in fresh processes (mlp_small on 8x8 digits, a few seconds of
training each); the faults are injected by the test's own script around the command (``_CLI``), never by
hooks in the library. The killed runs go on in a thread beside the tests that run in this process.
"""
import errno
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import datasets, tiny_model

import zoo
from zoo.runs import BEST, CHECKPOINT, STATE, RunDamagedError, RunDir, RunLockedError, RunMismatchError

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
ARGS = ["finetune", "--model", "mlp_small", "--pretrained", "false", "--data", "digits", "--image-size", "8,8",
        "--classes", "0,1,2", "--per-class", "10", "--epochs", "4", "--batch-size", "8", "--run-dir"]

# keras-zoo finetune with one fault injected: python -c _CLI FAULT ARGS...
_CLI = textwrap.dedent("""
    import os, signal, sys, time
    fault = sys.argv[1]
    count = 0

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if fault.startswith(("batch:", "hold:")):  # killed at the Nth training batch / held at the first
        import keras
        original = keras.callbacks.TerminateOnNaN.on_batch_end

        def on_batch_end(self, batch, logs=None):
            global count
            count += 1
            if fault.startswith("batch:") and count == int(fault[6:]):
                die()
            if fault.startswith("hold:") and count == 1:
                open(os.path.join(fault[5:], "held"), "w").close()
                deadline = time.time() + 120
                while not os.path.exists(os.path.join(fault[5:], "go")) and time.time() < deadline:
                    time.sleep(0.05)
            return original(self, batch, logs)

        keras.callbacks.TerminateOnNaN.on_batch_end = on_batch_end
    elif fault.startswith("checkpoint:"):  # killed half-way through writing the Nth checkpoint
        import zoo.files, zoo.runs
        original = zoo.runs.atomic_write

        def atomic_write(path, data, **kwargs):
            global count
            if path.name == "checkpoint.npz":
                count += 1
                if count == int(fault[11:]):
                    partial, fd = zoo.files._partial_file(path)  # where zoo.files writes it
                    os.write(fd, data[: len(data) // 2])
                    os.fsync(fd)
                    die()
            return original(path, data, **kwargs)

        zoo.runs.atomic_write = atomic_write
    elif fault == "report":  # killed while the command writes its reports
        import zoo.runs
        zoo.runs.confusion_report = lambda *args, **kwargs: die()
    from zoo.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def _cli(fault: str, run_dir: Path, wait: bool = True):
    command = [sys.executable, "-c", _CLI, fault, *ARGS, str(run_dir)]
    if not wait:
        return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)


def _model_weights(run_dir: Path) -> list[np.ndarray]:
    """The layers' weights in a run's model.keras, read with h5py (no TensorFlow). Not the optimizer's: a run
    resumed after its training saves the model without one."""
    import h5py

    with zipfile.ZipFile(run_dir / "model.keras") as archive:
        data = archive.read("model.weights.h5")
    found = []
    with h5py.File(io.BytesIO(data), "r") as f:
        f["layers"].visititems(lambda name, item: found.append((name, item[()])) if isinstance(item, h5py.Dataset)
                               else None)
    assert found
    return [array for _, array in sorted(found, key=lambda pair: pair[0])]


def _killed(out) -> bool:
    return out.returncode == -signal.SIGKILL


def _partials(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.rglob("*.partial"))


# --------------------------------------------------------------------------- the command line, killed

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, held at its first batch (it has the run directory locked) until the test says go."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    signals = run_dir.parent
    process = _cli(f"hold:{signals}", run_dir, wait=False)
    deadline = time.monotonic() + 120
    while not (signals / "held").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    yield run_dir, signals, process
    (signals / "go").touch()
    if process.poll() is None:
        process.kill()
        process.communicate()


def _finished(reference) -> Path:
    run_dir, signals, process = reference
    (signals / "go").touch()
    err = process.communicate(timeout=300)[1] if process.returncode is None else ""
    assert process.returncode == 0, err[-3000:]
    return run_dir


SECOND = textwrap.dedent("""
    import sys
    from zoo.cli import main
    status = main(sys.argv[1:])
    print("tensorflow imported:", "tensorflow" in sys.modules)
    sys.exit(status)
""")


def test_a_second_run_on_a_busy_directory_is_refused_at_once_and_the_first_finishes(reference):
    run_dir, signals, process = reference
    assert (signals / "held").exists(), "the first run never started training"
    second = subprocess.run([sys.executable, "-c", SECOND, *ARGS, str(run_dir)], env=ENV, capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 2, second.stderr[-3000:]
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keras-zoo: error:") and str(run_dir) in lines[0], lines
    assert f"in use by another run (process {process.pid})" in lines[0]
    assert second.stdout.strip().splitlines()[-1] == "tensorflow imported: False"  # refused at once
    finished = _finished(reference)
    assert json.loads((finished / STATE).read_text())["finished"] is True
    assert len((finished / "history.csv").read_text().splitlines()) == 1 + 4


# --------------------------------------------------------------------------- in this process

def _digits(classes, run_dir, **options):
    """mlp_small on digits (8x8, 5 examples a class), one epoch."""
    model = zoo.create_model("mlp_small", num_classes=len(classes), pretrained=False, input_shape=(8, 8, 1))
    return zoo.finetune(model, "digits", recipe="full", epochs=1, batch_size=8, run_dir=run_dir, verbose=0,
                        data_options={"classes": classes, "per_class": 5}, **options)


def _edit_state(path: Path, **changes) -> None:
    """Change the loop state inside a checkpoint (saved with a matching checksum)."""
    run = RunDir(path.parent)
    arrays = run.load_arrays(path.name)
    state = json.loads(str(arrays["state"][0]))
    arrays["state"] = [np.array(json.dumps({**state, **changes}))]
    run.save_arrays(path.name, arrays)


def _files(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


def test_resuming_with_other_settings_is_refused_in_one_line_naming_them(tmp_path):
    run = tmp_path / "run"
    _digits([0, 1, 2], run, finish=False)  # a run that is not finished: the next call would resume it
    fingerprint = json.loads((run / "fingerprint.json").read_text())
    assert fingerprint["model"]["name"] == "mlp_small" and fingerprint["model"]["input_shape"] == [8, 8, 1]
    assert fingerprint["data"]["source"] == "digits" and fingerprint["data"]["class_names"] == ["0", "1", "2"]
    assert fingerprint["data"]["num_examples"]["train"] == 15
    assert fingerprint["options"]["learning_rate"] == 1e-3 and fingerprint["distribution"]["replicas"] == 1
    assert not {"tensorboard", "strategy"} & set(fingerprint["options"])
    before = _files(run)

    with pytest.raises(RunMismatchError) as error:  # another class count: once a traceback
        _digits([0, 1, 2, 3], run)
    message = str(error.value)
    assert "\n" not in message and str(run) in message and "data.class_names" in message
    assert 'data.class_names: ["0", "1", "2"] there, ["0", "1", "2", "3"] now' in message
    assert "--overwrite" in message and "--run-dir" in message and "same options" in message
    with pytest.raises(RunMismatchError, match=r"\(learning_rate: 0\.001 there, 0\.01 now\)"):
        _digits([0, 1, 2], run, learning_rate=0.01)
    assert _files(run) == before  # refused before anything was written

    again = _digits([0, 1, 2], run, tensorboard=True, finish=False)  # the same run (logs are no change)
    assert again.resumed
    killed_early = tmp_path / "early"  # a run killed before its first checkpoint: nothing to resume
    killed_early.mkdir()
    (killed_early / "fingerprint.json").write_bytes((run / "fingerprint.json").read_bytes())
    assert not _digits([0, 1, 2, 3], killed_early).resumed
    fresh = _digits([0, 1, 2, 3], run, overwrite=True)  # other settings, asked for: starts over
    assert not fresh.resumed and len(fresh.history) == 1
    assert json.loads((run / "fingerprint.json").read_text())["data"]["class_names"] == ["0", "1", "2", "3"]


def test_a_full_disk_mid_run_keeps_the_last_good_checkpoint_and_the_run_resumes(tmp_path, monkeypatch):
    import zoo.files

    options = dict(recipe="full", epochs=3, patience=None, verbose=0)
    reference = zoo.finetune(tiny_model(), datasets(), run_dir=tmp_path / "reference", **options)
    checkpoints, real_partial, real_fsync = [], zoo.files._partial_file, os.fsync

    def partial_file(path):  # the disk fills up while the second checkpoint is written, and stays full
        checkpoints.extend([path.name] if path.name == CHECKPOINT else [])
        return real_partial(path)

    def fsync(fd):
        if checkpoints.count(CHECKPOINT) >= 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(zoo.files, "_partial_file", partial_file)
    monkeypatch.setattr(os, "fsync", fsync)
    run = tmp_path / "run"
    with pytest.raises(OSError) as error:
        zoo.finetune(tiny_model(), datasets(), run_dir=run, **options)
    assert error.value.errno == errno.ENOSPC
    monkeypatch.undo()

    assert _partials(run) == []
    saved = json.loads(str(RunDir(run).load_arrays(CHECKPOINT)["state"][0]))  # whole, and its checksum matches
    assert len(saved["history"]) == 1 == len(json.loads((run / STATE).read_text())["history"])
    resumed = zoo.finetune(tiny_model(), datasets(), run_dir=run, **options)
    assert resumed.resumed and [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for got, want in zip(resumed.model.get_weights(), reference.model.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_damaged_checkpoints_are_detected_and_never_loaded(tmp_path, caplog):
    run = tmp_path / "run"
    options = dict(recipe="full", epochs=2, patience=None, run_dir=run)
    first = zoo.finetune(tiny_model(), datasets(), verbose=0, finish=False, **options)
    want = first.model.get_weights()

    with np.load(run / CHECKPOINT) as data:  # a valid file whose content differs from its checksum
        arrays = {key: data[key] for key in data.files}
    key = next(k for k in arrays if k.startswith("model/"))
    arrays[key] = arrays[key] + 1.0
    np.savez(run / CHECKPOINT, **arrays)
    with caplog.at_level("WARNING", logger="zoo"):
        again = zoo.finetune(tiny_model(), datasets(), verbose=2, finish=False, **options)
    assert "checkpoint.npz is damaged (its checksum does not match its content): resuming from " \
           "checkpoint.prev.npz" in caplog.text
    for got, expected in zip(again.model.get_weights(), want, strict=True):
        np.testing.assert_array_equal(got, expected)

    for name in (BEST, "best.prev.npz"):  # the best weights, lost
        (run / name).unlink(missing_ok=True)
    for name in (CHECKPOINT, "checkpoint.prev.npz"):  # checkpoints that need them: an earlier best epoch
        _edit_state(run / name, best_epoch=1)
    with pytest.raises(RunDamagedError, match=r"best weights it goes with \(best.npz, epoch 1\) are missing"):
        zoo.finetune(tiny_model(), datasets(), verbose=0, **options)
    _edit_state(run / CHECKPOINT, best_epoch=2)  # a checkpoint of the best epoch holds the best weights itself
    zoo.finetune(tiny_model(), datasets(), verbose=0, finish=False, **options)
    assert int(RunDir(run).load_arrays(BEST)["epoch"][0]) == 2  # and best.npz is written again from it

    for name in (CHECKPOINT, "checkpoint.prev.npz"):  # both checkpoints truncated
        path = run / name
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(RunDamagedError) as error:
        zoo.finetune(tiny_model(), datasets(), verbose=0, **options)
    message = str(error.value)
    assert "\n" not in message and "checkpoint.npz is damaged (BadZipFile" in message
    assert "delete the run directory" in message and "--overwrite" in message
    fresh = zoo.finetune(tiny_model(), datasets(), verbose=0, overwrite=True, **options)
    assert not fresh.resumed
    for got, expected in zip(fresh.model.get_weights(), want, strict=True):
        np.testing.assert_array_equal(got, expected)


HOLDER = textwrap.dedent("""
    import sys, time
    from zoo.runs import RunDir
    with RunDir(sys.argv[1]).lock():
        print("locked", flush=True)
        time.sleep(300)
""")


def test_a_locked_run_directory_is_refused_and_a_killed_holder_frees_it(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError) as error:
            zoo.finetune(tiny_model(), datasets(), recipe="full", epochs=1, run_dir=run, verbose=0)
        assert str(error.value).startswith(f"{run} is in use by another run (process {holder.pid}): wait for it")
        assert [p.name for p in run.iterdir()] == [".lock"]  # nothing written
    finally:
        holder.send_signal(signal.SIGKILL)  # the kernel drops its lock
        holder.wait()
    result = zoo.finetune(tiny_model(), datasets(), recipe="full", epochs=1, run_dir=run, verbose=0)
    assert len(result.history) == 1


def test_a_refused_run_leaves_no_new_directory(tmp_path):
    from zoo.config import RunConfig
    from zoo.errors import InvalidArgumentError
    from zoo.jobs import run_finetune

    with pytest.raises(RuntimeError):
        with RunDir(tmp_path / "new" / "run").lock():
            raise RuntimeError("refused")
    assert not (tmp_path / "new").exists()
    config = RunConfig(model="mlp_small", pretrained=False, data="digits", classes=[0, 1], per_class=5,
                       image_size=(8, 8), recipe="two_phase", blocks=9, run_dir=str(tmp_path / "job" / "run"))
    with pytest.raises(InvalidArgumentError, match="blocks=9"):  # refused by zoo.finetune, inside the job's lock
        run_finetune(config, verbose=0)
    assert not (tmp_path / "job").exists()


def test_the_wall_time_of_a_resumed_run_covers_the_whole_run(tmp_path, monkeypatch):
    import zoo.runs
    from zoo.config import RunConfig
    from zoo.jobs import run_finetune

    config = RunConfig(model="mlp_small", pretrained=False, data="digits", classes=[0, 1], per_class=5,
                       image_size=(8, 8), recipe="full", epochs=2, batch_size=8, patience=None,
                       run_dir=str(tmp_path / "run"))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo.runs, "confusion_report", interrupted)  # Ctrl-C while the reports are written
    with pytest.raises(KeyboardInterrupt):
        run_finetune(config, verbose=0)
    monkeypatch.undo()
    run = RunDir(tmp_path / "run")
    assert json.loads(run.file(STATE).read_text())["finished"] is False
    arrays = run.load_arrays(CHECKPOINT)
    state = json.loads(str(arrays["state"][0]))
    assert state["seconds"] > 0
    state["seconds"] += 1000.0  # as if the interrupted run had trained for 1000 s more
    arrays["state"] = [np.array(json.dumps(state))]
    run.save_arrays(CHECKPOINT, arrays)

    summary = run_finetune(config, verbose=0)  # the same command: reports written, the run finished
    assert summary["seconds"] >= 1000
    assert json.loads(run.file(STATE).read_text())["finished"] is True
    assert "Wall time: 10" in run.file("README.md").read_text()


# --------------------------------------------------------------------------- the command line, killed (in a thread)

@pytest.fixture(scope="module", autouse=True)
def killed(reference, tmp_path_factory):
    """``_kill_and_resume`` in a thread, started with the first test: its processes run beside the tests
    below (TensorFlow starts in a few seconds of CPU each)."""
    run_dir, outcome = tmp_path_factory.mktemp("killed") / "run", {}

    def chain():
        try:
            _kill_and_resume(run_dir)
        except BaseException as e:  # an assertion, a timeout: raised again in the test
            outcome["error"] = e

    thread = threading.Thread(target=chain, daemon=True)
    thread.start()
    yield run_dir, thread, outcome
    thread.join(timeout=600)


def _kill_and_resume(run_dir: Path) -> None:
    """keras-zoo finetune killed mid-epoch, mid-checkpoint (then its last checkpoint truncated on disk) and
    mid-report, each time followed by the same command."""
    # 4 batches an epoch; epoch 1 trains the head on cached features (the whole epoch in one graph call, so one
    # on_batch_end), epochs 2-4 the top blocks
    out = _cli("batch:3", run_dir)  # in epoch 2
    assert _killed(out), out.stderr[-3000:]
    assert len(json.loads((run_dir / STATE).read_text())["history"]) == 1

    out = _cli("checkpoint:2", run_dir)  # resumes at epoch 2; killed writing epoch 3's checkpoint
    assert _killed(out), out.stderr[-3000:]
    assert "resuming" in out.stdout and "phase 2, 0 epochs done" in out.stdout, out.stdout[-3000:]
    assert any(name.startswith(f".{CHECKPOINT}.") for name in _partials(run_dir)), "no half-written checkpoint"
    assert len(json.loads((run_dir / STATE).read_text())["history"]) == 2

    checkpoint = run_dir / CHECKPOINT  # the last good checkpoint (epoch 2), damaged on disk afterwards
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    out = _cli("report", run_dir)  # falls back on checkpoint.prev.npz (end of epoch 1); killed in the report
    assert _killed(out), out.stderr[-3000:]
    assert "checkpoint.npz is damaged" in out.stdout and "resuming from checkpoint.prev.npz" in out.stdout, \
        out.stdout[-3000:]
    assert _partials(run_dir) == []  # what the killed write left was cleared
    assert json.loads((run_dir / STATE).read_text())["finished"] is False and not (run_dir / "summary.json").exists()

    out = _cli("none", run_dir)  # the same command: training done, the reports written, the run finished
    assert out.returncode == 0, out.stderr[-3000:]
    assert "training done, evaluating" in out.stdout, out.stdout[-3000:]
    assert json.loads((run_dir / STATE).read_text())["finished"] is True
    assert (run_dir / "confusion_matrix.png").exists() and (run_dir / "summary.json").exists()
    assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + 4


def test_runs_killed_mid_epoch_mid_checkpoint_and_mid_report_resume_to_the_same_weights(reference, killed):
    run_dir, thread, outcome = killed
    thread.join(timeout=600)
    assert not thread.is_alive(), "the killed runs did not end"
    if "error" in outcome:
        raise outcome["error"]
    finished = _finished(reference)
    for got, want in zip(_model_weights(run_dir), _model_weights(finished), strict=True):
        np.testing.assert_array_equal(got, want)
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (run_dir, finished)]
    assert metrics[0] == metrics[1]
