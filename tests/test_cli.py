"""The keras-zoo command: catalog commands answer without TensorFlow; user errors are one line, exit 2."""
import os
import subprocess
import sys


def run(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], capture_output=True, text=True, **kwargs)


def test_list_prints_a_table_of_matching_models():
    out = run("list", "efficientnet*", "--pretrained")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["model", "family", "input"]
    assert any(line.startswith("efficientnet_b0.imagenet ") and "224x224x3" in line for line in lines)
    assert any(line.startswith("efficientnet_b0.ra_in1k ") and "keras-hub" in line for line in lines)  # timm
    assert lines[-1] == "16 models"


def test_info_shows_input_preprocessing_stages_weights_and_licence():
    out = run("info", "resnet50")
    assert out.returncode == 0
    text = out.stdout
    for expected in ["resnet50.imagenet", "224x224x3", "caffe", "conv5_block3_out",
                     "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "MIT"]:
        assert expected in text


def test_user_errors_print_one_line_and_exit_2():
    out = run("info", "resnt50")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "did you mean resnet50" in out.stderr
    assert "Traceback" not in out.stderr


def test_weights_import_refuses_a_file_whose_hash_does_not_match(tmp_path):
    bogus = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    bogus.write_bytes(b"not the real weights")
    out = run("weights", "import", str(bogus), "--model", "resnet50.imagenet",
              env={**os.environ, "KERAS_HOME": str(tmp_path / "home")})
    assert out.returncode == 2 and "does not match the hash" in out.stderr
    assert not (tmp_path / "home" / "models" / bogus.name).exists()


def test_weights_path_is_in_keras_cache(tmp_path):
    out = run("weights", "path", "mobilenetv2", env={**os.environ, "KERAS_HOME": str(tmp_path)})
    assert out.returncode == 0
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    assert out.stdout.strip() == str(tmp_path / "models" / name)


# The main job, end to end, on the bundled task in a few epochs ---------------------------------

import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def keras_zoo(*args):
    """The installed console script in a new process, as a user runs it."""
    return subprocess.run(["keras-zoo", *map(str, args)], capture_output=True, text=True)


@pytest.fixture
def cli(capsys):
    """``keras-zoo ARGS`` in this process (``zoo.cli.main``, what the console script calls), without paying
    for a new TensorFlow each time; the loggers the command sets up are put back afterwards."""
    import logging

    from zoo.cli import main

    loggers = [logging.getLogger(name) for name in ("zoo", "tuning")]
    saved = [(logger, logger.level, list(logger.handlers)) for logger in loggers]

    def call(*args):
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    yield call
    for logger, level, handlers in saved:
        logger.setLevel(level)
        logger.handlers[:] = handlers


def one_line_error(out, text):
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("keras-zoo: error:")]
    assert len(errors) == 1 and text in errors[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def bundled_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "bundled"
    out = keras_zoo("finetune", "--epochs", 3, "--run-dir", run)
    assert out.returncode == 0, out.stderr[-3000:]
    return run, out.stdout


def test_finetune_with_no_arguments_runs_the_bundled_task_and_reports_the_baseline(bundled_run):
    run, stdout = bundled_run
    assert "resnet_tiny.digits (full): test accuracy" in stdout
    assert "resnet_tiny from scratch (full, learning rate" in stdout
    for name in ["config.yaml", "history.csv", "metrics.json", "model.keras", "curves.png",
                 "confusion_matrix.png", "README.md"]:
        assert (run / name).stat().st_size > 0, name
    summary = json.loads((run / "summary.json").read_text())
    assert 0 <= summary["baseline"]["test_accuracy"] <= 1 and summary["baseline"]["learning_rate"] > 0
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 3
    assert json.loads((run / "run.json").read_text())["class_names"] == ["5", "6", "7", "8", "9"]
    assert "scikit-learn digits 0-4" in (run / "README.md").read_text()
    knn = summary["knn_before_training"]
    assert set(knn) == {"pretrained", "random init"} and all(0 < v <= 1 for v in knn.values())
    assert f"before training, kNN on the backbone's features: {knn['pretrained']:.3f} pretrained" in stdout
    assert json.loads((run / "fingerprint.json").read_text())["data"]["num_examples"]["test"] > 600  # all held out


def test_explain_writes_saliency_overlays_next_to_the_images(bundled_run, tmp_path, cli):
    from PIL import Image
    from sklearn.datasets import load_digits

    run, _ = bundled_run
    digits = load_digits()
    paths = []
    for label in (5, 8):
        paths.append(tmp_path / f"{label}.png")
        Image.fromarray((digits.images[digits.target == label][0] * 255 / 16).astype("uint8")).save(paths[-1])
    out = cli("explain", run, *paths, "--method", "gradcam")
    assert out.returncode == 0, out.stderr[-2000:]
    for path in paths:
        with Image.open(tmp_path / f"{path.stem}.gradcam.png") as overlay:
            assert overlay.size[0] >= 200
    one_line_error(cli("explain", run, tmp_path / "none.png"), "no such image file")


def test_a_run_reproduces_from_its_config(bundled_run, tmp_path, cli):
    run, _ = bundled_run
    out = cli("finetune", "--config", run / "config.yaml", "--run-dir", tmp_path / "again", "--no-baseline")
    assert out.returncode == 0, out.stderr[-3000:]
    first, again = (json.loads((d / "metrics.json").read_text()) for d in (run, tmp_path / "again"))
    assert again["test_accuracy"] == first["test_accuracy"] and again["test_loss"] == pytest.approx(first["test_loss"])


def test_evaluate_and_predict_a_finished_run(bundled_run, tmp_path, cli):
    from PIL import Image
    from sklearn.datasets import load_digits

    run, _ = bundled_run
    out = cli("evaluate", run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert out.returncode == 0 and f"test: accuracy {metrics['test_accuracy']:.4f}" in out.stdout
    digits = load_digits()
    image = tmp_path / "seven.png"
    Image.fromarray((digits.images[digits.target == 7][0] * 255 / 16).astype("uint8")).save(image)
    out = cli("predict", run, image, "--top", 2)
    assert out.returncode == 0, out.stderr[-2000:]
    line = out.stdout.strip()
    assert line.startswith(f"{image}: ") and len(line.split(", ")) == 2
    probabilities = [float(part.split()[-1]) for part in line.split(": ", 1)[1].split(", ")]
    assert 0 <= probabilities[1] <= probabilities[0] <= 1


def test_export_writes_a_saved_model_and_tflite(bundled_run, tmp_path, cli):
    import tensorflow as tf

    run, _ = bundled_run
    out = cli("export", run, "--out", tmp_path / "export", "--tflite")
    assert out.returncode == 0, out.stderr[-2000:]
    interpreter = tf.lite.Interpreter(model_path=str(tmp_path / "export" / "model.tflite"))
    interpreter.allocate_tensors()
    assert list(interpreter.get_input_details()[0]["shape"][1:]) == [16, 16, 3]
    assert list(interpreter.get_output_details()[0]["shape"]) == [1, 5]
    assert (tmp_path / "export" / "saved_model" / "saved_model.pb").exists()
    # a keras-hub preset needs a keras-hub backbone: refused in one line, and nothing written
    one_line_error(cli("export", run, "--out", tmp_path / "preset", "--preset"), "has no keras-hub backbone")
    assert not (tmp_path / "preset").exists()


def test_bad_input_on_the_command_line_is_one_line_and_exit_2(bundled_run, tmp_path, cli):
    run, _ = bundled_run
    one_line_error(cli("finetune", "--data", tmp_path / "missing", "--model", "resnet_tiny"), "missing")
    one_line_error(cli("finetune", "--model", "resnt_tiny"), "did you mean resnet_tiny")
    one_line_error(cli("finetune", "--run-dir", run), "holds a finished run")
    (tmp_path / "unknown.yaml").write_text("model: resnet_tiny\nbogus: 1\n")
    one_line_error(cli("finetune", "--config", tmp_path / "unknown.yaml"), "unknown key(s) bogus")
    (tmp_path / "wrong.yaml").write_text("model: resnet_tiny\nepochs: two\n")
    one_line_error(cli("finetune", "--config", tmp_path / "wrong.yaml"), "epochs must be an integer, got 'two'")
    (tmp_path / "bad.png").write_text("not an image")
    one_line_error(cli("predict", run, tmp_path / "bad.png"), "not a PNG, JPEG")
    assert np.isfinite(json.loads((run / "metrics.json").read_text())["test_loss"])


def test_tune_then_retrain_the_best_trial_from_its_config(tmp_path, cli):
    space = tmp_path / "space.yaml"
    space.write_text("backbone: [mlp_small]\nlearning_rate: [0.0001, 0.01, log]\nrecipe: [full]\n")
    out = cli("tune", "--space", space, "--data", "digits", "--max-trials", 2, "--epochs", 1,
                    "--image-size", "8,8", "--directory", tmp_path / "search")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "best:" in out.stdout and (tmp_path / "search" / "trials.csv").exists()
    out = cli("finetune", "--config", tmp_path / "search" / "best.yaml", "--run-dir", tmp_path / "best",
                    "--epochs", 1)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "mlp_small" in out.stdout and (tmp_path / "best" / "model.keras").exists()
    space.write_text("backbone: [no_such_net]\n")
    one_line_error(cli("tune", "--space", space, "--directory", tmp_path / "bad"), "no_such_net")
