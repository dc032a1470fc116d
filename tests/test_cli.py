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
    assert lines[-1] == "15 models"


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
    assert out.stdout.strip() == str(tmp_path / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")
