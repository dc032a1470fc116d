"""Each script in examples/ runs as a user would run it (its --quick setting), from start to end."""
import csv
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args, cwd: Path, capsys=None) -> str:
    """Run examples/NAME.py --quick ARGS in ``cwd``; return its stdout. With ``capsys``, in this process
    (as ``python NAME.py`` would run it, without paying for a new TensorFlow); without, in a new process,
    for a script that must set TensorFlow up before anything else has."""
    argv = [str(EXAMPLES / name), "--quick", *map(str, args)]
    if capsys is None:
        done = subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        patch.setattr(sys, "argv", argv)
        runpy.run_path(argv[0], run_name="__main__")
    return capsys.readouterr().out


def number(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    assert found, f"no match for {pattern!r} in:\n{text}"
    return float(found.group(1).replace(",", ""))


def test_create_and_extract(tmp_path, capsys):
    out = run_example("create_and_extract.py", cwd=tmp_path, capsys=capsys)
    assert "classifier: (None, 16, 16, 3) -> (None, 5)" in out
    assert len(re.findall(r"stage at stride \d+ .*: kNN accuracy", out)) == 3
    # digits 5-9 were never seen in pretraining; chance is 0.2
    assert number(r"embedding \(128,\): kNN accuracy ([\d.]+)", out) > 0.6
    assert "average-pooled: equal True" in out
    assert len(re.findall(r"^\s+[5-9](\s+-?\d\.\d\d){5}$", out, re.M)) == 5  # the 5x5 similarity matrix
    assert list(tmp_path.iterdir()) == []  # writes nothing


def test_finetune_folder(tmp_path, capsys):
    out = run_example("finetune_folder.py", "--out", tmp_path / "ff", cwd=tmp_path, capsys=capsys)
    assert sorted(p.name for p in (tmp_path / "ff" / "images").iterdir()) == ["5", "6", "7", "8", "9"]
    assert len(list((tmp_path / "ff" / "images").glob("*/*.png"))) == 150
    assert re.search(r"^stage1\s+frozen\s+0 / ", out, re.M) and re.search(r"^head\s+trainable", out, re.M)
    assert number(r"lr_find suggests ([\d.e-]+)", out) > 0
    assert (tmp_path / "ff" / "lr_find.png").stat().st_size > 0
    assert "phase head: 1 epochs" in out and "phase finetune: 2 epochs, trains the top 2 blocks and the head" in out
    assert number(r"test accuracy ([\d.]+)", out) > 0.5  # chance is 0.2
    assert (tmp_path / "ff" / "run" / "model.keras").is_file()


@pytest.mark.slow
def test_lora_vit(tmp_path, capsys):
    out = run_example("lora_vit.py", "--out", tmp_path, cwd=tmp_path, capsys=capsys)
    before = number(r"trainable parameters ([\d,]+) ->", out)
    after = number(r"trainable parameters [\d,]+ -> ([\d,]+)", out)
    assert after < before / 5
    assert number(r"LoRA on digits 5-9: test accuracy ([\d.]+)", out) > 0.3  # chance is 0.2
    assert "merged predictions equal the adapted model's: True" in out
    assert (tmp_path / "vit_pico_digits04.weights.h5").is_file() and (tmp_path / "vit_pico_lora.keras").is_file()


@pytest.mark.slow
def test_hyperparameter_search(tmp_path, capsys):
    out = run_example("hyperparameter_search.py", "--out", tmp_path / "search", cwd=tmp_path, capsys=capsys)
    with open(tmp_path / "search" / "trials.csv") as f:
        trials = list(csv.DictReader(f))
    assert [t["status"] for t in trials] == ["COMPLETED", "COMPLETED"]
    assert "2 trials; the best by val_accuracy" in out
    best = (tmp_path / "search" / "best.yaml").read_text()
    assert re.search(r"^model: (resnet_tiny|mlp_small)$", best, re.M) and best in out


@pytest.mark.slow
def test_multi_gpu_on_two_cpu_devices(tmp_path):
    out = run_example("multi_gpu.py", "--cpu-devices", 2, cwd=tmp_path)
    assert "replicas in sync: 2 (" in out
    assert "batch plan: 2 replicas x 32 = global batch 64; learning rate 0.001 -> 0.002" in out
    assert re.search(r"each weight is a MirroredVariable, a copy on \S+CPU:0, \S+CPU:1$", out, re.M)
    assert number(r"test accuracy ([\d.]+)", out) > 0.3  # chance is 0.2
