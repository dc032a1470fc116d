"""Bad inputs, across the command line and the public API: each is refused before any heavy work, in one
line (``keras-zoo: error: ...`` on stderr, exit 2; a ZooError subclass in Python), with no traceback, and
nothing is written.

The command-line table runs in-process through ``zoo.cli.main`` (it returns the exit code); one subprocess
runs the whole table again to show that none of these refusals imports TensorFlow.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zoo import cli
from zoo.config import TUNERS, FinetuneConfig, RunConfig
from zoo.errors import DataError, InvalidArgumentError, UnknownModelError, WeightsError, ZooError

PROC = "/proc/keras-zoo-test"  # a place nobody can make a folder in, root included
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False
has_proc = pytest.mark.skipif(not Path("/proc/self").exists(), reason="no /proc")


# The command line ---------------------------------------------------------------------------------------
# (arguments, text the one error line holds); {tmp} is the test's folder, the others are made there:
# {run} a finished run's folder (a model.keras and a config.yaml), {file} a plain file, {space} a search
# space, {images} a folder of class folders a, b, c, {full} a folder with a file in it, {ro} a read-only folder.
CLI = [
    # finetune: every option through RunConfig's types
    ("finetune --batch-size 0", "batch_size must be a positive integer, got 0"),
    ("finetune --batch-size -4", "batch_size must be a positive integer, got -4"),
    ("finetune --batch-size abc", "batch_size must be an integer, got 'abc'"),
    ("finetune --image-size abc", "image_size must be an integer, got 'abc'"),
    ("finetune --image-size 8", "image_size has too few values"),
    ("finetune --image-size 8,8,8", "image_size has too many values"),
    ("finetune --image-size 0,8", "image_size must be a positive integer, got 0"),
    ("finetune --image-size -8,8", "argument --image-size: expected one argument"),
    ("finetune --epochs 0", "epochs must be a positive integer, got 0"),
    ("finetune --epochs -1", "epochs must be a positive integer, got -1"),
    ("finetune --epochs 1.5", "epochs must be an integer, got 1.5"),
    ("finetune --epochs", "argument --epochs: expected one argument (see keras-zoo finetune --help)"),
    ("finetune --recipe bogus", "unknown recipe 'bogus': use linear_probe, two_phase"),
    ("finetune --model resnet_tiny --epochs 1", "recipe 'two_phase' needs at least 2 epochs"),
    ("finetune --model resnet_tiny --recipe gradual --epochs 1", "recipe 'gradual' needs at least 2 epochs"),
    ("finetune --learning-rate 0", "learning_rate must be positive, got 0"),
    ("finetune --learning-rate fast", "learning_rate must be a number, got 'fast'"),
    ("finetune --optimizer adamax", "unknown optimizer 'adamax'"),
    ("finetune --lr-schedule step", "unknown lr_schedule 'step'"),
    ("finetune --warmup 1", "warmup must be below 1.0, got 1"),
    ("finetune --warmup -0.1", "warmup must be 0.0 or more, got -0.1"),
    ("finetune --lr-slice 1e-3,1e-5", "lr_slice LO,HI must have LO <= HI"),
    ("finetune --lr-slice 1e-3", "lr_slice has too few values"),
    ("finetune --layer-decay 2", "layer_decay must be at most 1"),
    ("finetune --lora-rank 0", "lora_rank must be a positive integer, got 0"),
    ("finetune --augment heavy", "unknown augment 'heavy'"),
    ("finetune --cache-features maybe", "cache_features"),
    ("finetune --patience 0", "patience must be a positive integer, got 0"),
    ("finetune --seed -1", "seed must be 0 or more, got -1"),
    ("finetune --jit-compile maybe", "jit_compile"),
    ("finetune --strategy bogus", "strategy must be one of auto, off"),
    ("finetune --lr-scaling cube", "unknown lr_scaling 'cube'"),
    ("finetune --mixed-precision float8", "unknown mixed_precision 'float8'"),
    ("finetune --blocks 0", "blocks must be a positive integer, got 0"),
    ("finetune --per-class 0", "per_class must be a positive integer, got 0"),
    ("finetune --per-class -3", "per_class must be a positive integer, got -3"),
    ("finetune --classes 1", "classes must name at least two different classes"),
    ("finetune --classes 5,5", "classes must name at least two different classes"),
    ("finetune --classes 5,11", "digits has no class 11"),
    ("finetune --data {images} --model resnet_tiny --classes a,z", "has no class 'z'"),
    ("finetune --dropout 1", "dropout must be below 1.0, got 1"),
    ("finetune --head-hidden 0", "head_hidden must be a positive integer, got 0"),
    ("finetune --shuffle=yes", "argument --shuffle/--no-shuffle: ignored explicit argument 'yes'"),
    ("finetune --bogus 1", "unrecognized arguments: --bogus 1 (see keras-zoo finetune --help)"),
    # finetune: the model, its weights and its size, against the catalog
    ("finetune --model resnt_tiny", "did you mean resnet_tiny"),
    ("finetune --model mlp_small", "mlp_small has no pretrained weights: pass pretrained=False"),
    ("finetune --model resnet_tiny --pretrained imagenet", "resnet_tiny has no weights tagged 'imagenet'"),
    ("finetune --model resnet_tiny.digits --pretrained other", "has no weights tagged 'other'"),
    ("finetune --pretrained {tmp}/weights.txt", "a weights file must end in .weights.h5"),
    ("finetune --pretrained {tmp}/missing.weights.h5", "no weights file at"),
    ("finetune --model resnet50 --pretrained false --image-size 16,16", "below resnet50's least input size 32x32"),
    # finetune: the data, the run directory, the cluster, the config file
    ("finetune --data {tmp}/missing", "--data {tmp}/missing does not exist"),
    ("finetune --data {file}", "is a file, not a folder"),
    ("finetune --data tfds:", "give a dataset name"),
    ("finetune --run-dir {file}", "is a file: give a folder"),
    ("finetune --run-dir {file}/run", "is a file, not a folder"),
    pytest.param("finetune --run-dir " + PROC + "/run", "cannot write in /proc", marks=has_proc),
    ("finetune --workers garbage", "--workers: 'garbage' is not host:port"),
    ("finetune --workers a:1,b:99999", "'b:99999' is not host:port"),
    ("finetune --workers a:1,b:2 --worker-index 2", "--worker-index 2: --workers lists 2 machine(s)"),
    ("finetune --worker-index -1", "argument --worker-index: must be 0 or more, got -1"),
    ("finetune --worker-index 1", "give --workers too"),
    ("finetune --workers a:1,b:2 --strategy mirrored", "needs --strategy multi_worker"),
    ("finetune --config {tmp}/missing.yaml", "no config file at"),
    ("finetune --config {tmp}/two.yaml", "epochs must be an integer, got 'two'"),
    ("finetune --config {tmp}/unknown.yaml", "unknown key(s) bogus"),
    ("finetune --config {tmp}/list.yaml", "must hold a mapping"),
    # evaluate, predict, export: a finished run, files that exist, places that can be written
    ("evaluate", "the following arguments are required: run (see keras-zoo evaluate --help)"),
    ("evaluate {tmp}/missing", "no run directory at"),
    ("evaluate {full}", "holds no model.keras"),
    ("evaluate {run} --data {tmp}/missing", "does not exist"),
    ("predict {run}", "give image or .wav files, or texts with --text"),
    ("predict {run} x.png --top 0", "argument --top: must be a positive integer, got 0"),
    ("predict {run} x.png --top -2", "argument --top: must be a positive integer, got -2"),
    ("predict {run} x.png --top abc", "argument --top: must be an integer, got 'abc'"),
    ("predict {run} {tmp}/missing.png", "no such file"),
    ("predict {tmp}/missing x.png", "no run directory at"),
    ("export {tmp}/missing", "no run directory at"),
    ("export {run} --out {file}", "is a file: give a folder"),
    ("export {run} --out {file}/export", "is a file, not a folder"),
    ("export {run} --out {full}", "already exists and is not empty"),
    pytest.param("export {run} --out " + PROC, "cannot write in /proc", marks=has_proc),
    # tune
    ("tune", "the following arguments are required: --space"),
    ("tune --space {space} --max-trials 0", "argument --max-trials: must be a positive integer, got 0"),
    ("tune --space {space} --epochs 0", "argument --epochs: must be a positive integer, got 0"),
    ("tune --space {space} --epochs x", "argument --epochs: must be an integer, got 'x'"),
    ("tune --space {space} --tuner bogus", "argument --tuner: invalid choice: 'bogus'"),
    ("tune --space {space} --objective auc", "argument --objective: invalid choice: 'auc'"),
    ("tune --space {space} --image-size abc", "argument --image-size: must be H,W in positive integers"),
    ("tune --space {space} --image-size 8", "argument --image-size: must be H,W"),
    ("tune --space {space} --image-size 0,8", "argument --image-size: must be H,W"),
    ("tune --space {space} --seed -1", "argument --seed: must be 0 or more, got -1"),
    ("tune --space {tmp}/missing.yaml", "--space {tmp}/missing.yaml: no such file"),
    ("tune --space {space} --data {tmp}/missing", "does not exist"),
    ("tune --space {space} --directory {file}", "is a file: give a folder"),
    pytest.param("tune --space {space} --directory " + PROC, "cannot write in /proc", marks=has_proc),
    ("tune --space {space} --chief --oracle nowhere", "--oracle: 'nowhere' is not host:port"),
    ("tune --space {space} --chief --worker", "not allowed with argument"),
    # pretrain
    ("pretrain --epochs 0", "argument --epochs: must be a positive integer, got 0"),
    ("pretrain --seed -1", "argument --seed: must be 0 or more, got -1"),
    ("pretrain --out {tmp}/backbone.h5", "must end in .weights.h5"),
    ("pretrain --out {tmp}/old.weights.h5", "exists: remove it first"),
    pytest.param("pretrain --out " + PROC + "/x.weights.h5", "cannot write in /proc", marks=has_proc),
    ("pretrain --method byol --out {tmp}/new.weights.h5", "argument --method: invalid choice: 'byol'"),
    ("pretrain --method simclr --model resnt_tiny --out {tmp}/new.weights.h5", "did you mean resnet_tiny"),
    ("pretrain --method simclr --data {tmp}/none --out {tmp}/new.weights.h5", "does not exist"),
    ("pretrain --method simclr --classes 0,12 --out {tmp}/new.weights.h5", "digits has no class 12"),
    # the representation commands
    ("embed resnt_tiny", "did you mean resnet_tiny"),
    ("embed resnet_tiny.digits --data {tmp}/none", "does not exist"),
    ("embed resnet_tiny.digits --classes 5,11", "digits has no class 11"),
    ("embed resnet_tiny.digits --split dev", "argument --split: invalid choice: 'dev'"),
    ("embed resnet_tiny.digits --plot pca", "argument --plot: invalid choice: 'pca'"),
    ("embed resnet_tiny.digits --out {full}", "is a folder: give a file name"),
    ("embed resnet_tiny.digits --projector {file}", "is a file: give a folder"),
    ("embed {tmp}/nowhere.keras", "does not exist: give a run directory, a .keras file or a catalog name"),
    ("probe resnet_tiny.digits --k 0", "argument --k: must be a positive integer, got 0"),
    ("probe resnet_tiny.digits --per-class 0", "argument --per-class: must be a positive integer, got 0"),
    ("probe resnet_tiny.bogus", "resnet_tiny has no weights tagged 'bogus'"),
    ("compare resnet_tiny.digits resnt_tiny", "did you mean resnet_tiny"),
    ("compare resnet_tiny.digits --examples 2", "argument --examples: must be 4 or more, got 2"),
    ("explain {tmp}/none img.png", "no run directory at"),
    ("explain {run} {tmp}/none.png", "no such image file"),
    ("explain {run} {file} --method lime", "argument --method: invalid choice: 'lime'"),
    # list, info, weights
    ("list --family bogus", "unknown family 'bogus': use one of"),
    ("list --bogus", "unrecognized arguments: --bogus (see keras-zoo list --help)"),
    ("info", "the following arguments are required: name (see keras-zoo info --help)"),
    ("info resnt50", "did you mean resnet50"),
    ("info resnet50.bogus", "resnet50 has no weights tagged 'bogus'"),
    ("weights bogus", "argument action: invalid choice: 'bogus'"),
    ("weights list extra", "weights list takes no name"),
    ("weights path", "weights path needs a model name"),
    ("weights download", "weights download needs a model name"),
    ("weights path mlp_small", "mlp_small has no pretrained weights"),
    ("weights verify mlp_small", "mlp_small has no pretrained weights"),
    ("weights download mlp_small", "mlp_small has no pretrained weights"),
    ("weights verify resnt50", "did you mean resnet50"),
    ("weights path resnet50 --model resnet50", "--model is for weights import"),
    ("weights import", "weights import needs the downloaded file"),
    ("weights import {file}", "weights import needs --model NAME"),
    ("weights import {tmp}/missing.h5 --model resnet50", "no such file"),
    ("weights import {file} --model mlp_small", "mlp_small has no pretrained weights"),
    ("weights import {file} --model resnt50", "did you mean resnet50"),
    # the command itself
    ("", "the following arguments are required: command (see keras-zoo --help)"),
    ("bogus", "argument command: invalid choice: 'bogus'"),
    ("--bogus list", "unrecognized arguments: --bogus"),
]


def make_inputs(tmp: Path) -> dict[str, str]:
    """The files and folders the table names, made in ``tmp``."""
    run = tmp / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"a finished run's model")  # never loaded: the refusals come first
    (run / "config.yaml").write_text(RunConfig(model="resnet_tiny.digits").to_yaml())
    (tmp / "file.txt").write_text("a file, not a folder")
    (tmp / "weights.txt").write_text("not weights")
    (tmp / "old.weights.h5").write_bytes(b"an earlier checkpoint")
    (tmp / "full").mkdir()
    (tmp / "full" / "something.txt").write_text("x")
    for name in "abc":
        (tmp / "images" / name).mkdir(parents=True)
    (tmp / "space.yaml").write_text("backbone: [mlp_small]\n")
    (tmp / "two.yaml").write_text("model: resnet_tiny\nepochs: two\n")
    (tmp / "unknown.yaml").write_text("model: resnet_tiny\nbogus: 1\n")
    (tmp / "list.yaml").write_text("- model\n- data\n")
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)
    return {"tmp": str(tmp), "run": str(run), "file": str(tmp / "file.txt"), "space": str(tmp / "space.yaml"),
            "images": str(tmp / "images"), "full": str(tmp / "full"), "ro": str(tmp / "ro")}


def argv_of(command: str, places: dict[str, str]) -> list[str]:
    return [part.format(**places) for part in command.split()]


def snapshot(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def places(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default run directory (runs/...) would appear here
    yield make_inputs(tmp_path)
    (tmp_path / "ro").chmod(0o755)


@pytest.mark.parametrize("command, text", CLI)
def test_the_command_line_refuses_in_one_line(command, text, places, tmp_path, capsys):
    before = snapshot(tmp_path)
    code = cli.main(argv_of(command, places))
    out = capsys.readouterr()
    assert code == 2, out
    assert out.err.count("\n") == 1 and out.err.startswith("keras-zoo: error: "), out.err
    assert text.format(**places) in out.err, out.err
    assert "Traceback" not in out.err + out.out and "usage:" not in out.err
    assert snapshot(tmp_path) == before  # nothing written: no run directory, no export, no search
    assert not list(Path(places["tmp"]).glob(".keras-zoo-probe-*"))


def test_no_refusal_of_the_table_imports_tensorflow(tmp_path):
    """The whole table again, in a fresh process: TensorFlow and Keras are never imported."""
    commands = [p.values[0] if hasattr(p, "values") else p[0] for p in CLI]
    script = (
        "import json, sys, contextlib, io\n"
        "from zoo.cli import main\n"
        "codes = []\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    with contextlib.redirect_stderr(io.StringIO()):\n"
        "        codes.append(main(argv))\n"
        "print(json.dumps([codes, 'tensorflow' in sys.modules, 'keras' in sys.modules]))\n")
    places = make_inputs(tmp_path)
    argvs = [argv_of(c, places) for c in commands if not (ROOT and "{ro}" in c)]
    out = subprocess.run([sys.executable, "-c", script, json.dumps(argvs)], capture_output=True, text=True,
                         cwd=tmp_path)
    (tmp_path / "ro").chmod(0o755)
    codes, tensorflow, keras = json.loads(out.stdout.splitlines()[-1])
    assert codes == [2] * len(argvs)
    assert (tensorflow, keras) == (False, False)


def test_the_installed_command_prints_exactly_one_line(tmp_path):
    out = subprocess.run(["keras-zoo", "finetune", "--model", "resnet_tiny", "--data", str(tmp_path / "none"),
                          "--run-dir", str(tmp_path / "run")], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [f"keras-zoo: error: --data {tmp_path / 'none'} does not exist: give a "
                                       "folder with one sub-folder per class, a .csv or .jsonl file of texts, "
                                       "digits, pydoc, or tfds:NAME"]
    assert out.stdout == "" and not (tmp_path / "run").exists()


def test_help_is_where_usage_lives(capsys):
    assert cli.main(["finetune", "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: keras-zoo finetune")
    assert "the bundled task's" in " ".join(text.split()) and "FinetuneConfig's defaults" in " ".join(text.split())


# The public API -----------------------------------------------------------------------------------------


class Inputs:
    """What the API cases call with: a folder and tiny data; the model is built once, on first use."""

    model = None

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.x = np.random.default_rng(0).uniform(0, 255, (12, 8, 8, 1)).astype("float32")
        self.y = np.arange(12) % 2

    def tiny(self):
        if Inputs.model is None:
            import zoo

            Inputs.model = zoo.create_model("mlp_small", num_classes=2, pretrained=False, input_shape=(8, 8, 1))
        return Inputs.model

    def train(self):
        import zoo

        return zoo.data.load((self.x, self.y), batch_size=4)[0]


def create(*args, **kwargs):
    import zoo

    return lambda _: zoo.create_model(*args, **kwargs)


def finetune(data="arrays", **kwargs):
    import zoo

    def call(i: Inputs):
        source = (i.x, i.y) if isinstance(data, str) and data == "arrays" else data
        return zoo.finetune(i.tiny(), source, run_dir=i.tmp / "run", verbose=0, **kwargs)

    return call


def load(source="arrays", **kwargs):
    def call(i: Inputs):
        from zoo.data import load

        return load((i.x, i.y) if isinstance(source, str) and source == "arrays" else source, **kwargs)

    return call


def lr_find(**kwargs):
    def call(i: Inputs):
        import zoo

        return zoo.lr_find(i.tiny(), i.train(), **kwargs)

    return call


def search(space=None, **kwargs):
    def call(i: Inputs):
        import tuning

        options = {"image_size": (8, 8), "epochs": 2, "directory": i.tmp / "search", "verbose": 0, **kwargs}
        return tuning.search("digits", space or {"backbone": ["mlp_small"]}, **options)

    return call


def weights(action, *args):
    def call(i: Inputs):
        from zoo import weights as store

        return getattr(store, action)(*[a.format(tmp=i.tmp) if isinstance(a, str) else a for a in args])

    return call


def config(cls=FinetuneConfig, method=None, *args, **kwargs):
    def call(i: Inputs):
        target = getattr(cls, method) if method else cls
        return target(*[a.format(tmp=i.tmp) if isinstance(a, str) else a for a in args], **kwargs)

    return call


def registry(fn, *args, **kwargs):
    def call(_):
        import zoo.registry

        return getattr(zoo.registry, fn)(*args, **kwargs)

    return call


API = [
    # zoo.create_model
    ("create unknown name", create("bogus"), UnknownModelError, "unknown model 'bogus'"),
    ("create name not a string", create(3), InvalidArgumentError, "a model name is a string"),
    ("create num_classes -1", create("mlp_small", num_classes=-1, pretrained=False), InvalidArgumentError,
     "num_classes must be a positive integer"),
    ("create num_classes 2.5", create("mlp_small", num_classes=2.5, pretrained=False), InvalidArgumentError,
     "num_classes must be a positive integer"),
    ("create pooling", create("mlp_small", pooling="bogus", pretrained=False), InvalidArgumentError,
     "unknown pooling 'bogus'"),
    ("create dropout 1.5", create("mlp_small", num_classes=2, dropout=1.5, pretrained=False), InvalidArgumentError,
     "dropout must be in"),
    ("create input_shape rank", create("mlp_small", input_shape=(8,), pretrained=False), InvalidArgumentError,
     "input_shape must be (height, width)"),
    ("create too small", create("resnet50", input_shape=(8, 8), pretrained=False), InvalidArgumentError,
     "needs inputs of at least 32x32"),
    ("create in_channels 0", create("mlp_small", in_channels=0, pretrained=False), InvalidArgumentError,
     "at least one channel"),
    ("create no weights", create("mlp_small"), InvalidArgumentError, "has no pretrained weights"),
    ("create unknown tag", create("resnet_tiny", pretrained="bogus"), UnknownModelError, "no weights tagged 'bogus'"),
    ("create missing file", create("resnet_tiny", pretrained="/nonexistent/x.weights.h5"), WeightsError,
     "no weights file at"),
    ("create file suffix", create("resnet_tiny", pretrained="/nonexistent/x.txt"), InvalidArgumentError,
     "a weights file must end in"),
    ("create features and head", create("resnet_tiny", features_only=True, num_classes=3, pretrained=False),
     InvalidArgumentError, "features_only=True returns feature maps"),
    ("create out_indices alone", create("resnet_tiny", out_indices=(0,), pretrained=False), InvalidArgumentError,
     "out_indices selects feature maps"),
    ("create head_hidden 0", create("mlp_small", num_classes=2, head_hidden=(0,), pretrained=False),
     InvalidArgumentError, "head_hidden must be positive widths"),
    # zoo.FinetuneConfig / RunConfig, made directly or read
    ("config epochs 0", config(epochs=0), InvalidArgumentError, "FinetuneConfig: epochs must be a positive integer"),
    ("config recipe", config(recipe="bogus"), InvalidArgumentError, "unknown recipe 'bogus'"),
    ("config batch True", config(batch_size=True), InvalidArgumentError, "batch_size must be an integer, got True"),
    ("config learning_rate", config(learning_rate=-1.0), InvalidArgumentError, "learning_rate must be positive"),
    ("config lr_slice order", config(lr_slice=(1e-3, 1e-5)), InvalidArgumentError, "LO <= HI"),
    ("config warmup", config(warmup=1.0), InvalidArgumentError, "warmup must be below 1.0"),
    ("config strategy", config(strategy="bogus"), InvalidArgumentError, "strategy must be one of"),
    ("config unknown key", config(FinetuneConfig, "from_dict", {"bogus": 1}), InvalidArgumentError,
     "unknown key(s) bogus"),
    ("config from_dict type", config(FinetuneConfig, "from_dict", {"epochs": "two"}), InvalidArgumentError,
     "epochs must be an integer, got 'two'"),
    ("config missing yaml", config(FinetuneConfig, "from_yaml", "{tmp}/missing.yaml"), InvalidArgumentError,
     "no config file at"),
    ("run config classes", config(RunConfig, None, classes=[1]), InvalidArgumentError,
     "classes must name at least two different classes"),
    ("run config image_size", config(RunConfig, None, image_size=(8,)), InvalidArgumentError,
     "image_size has too few values"),
    ("run config empty model", config(RunConfig, None, model=" "), InvalidArgumentError, "model must not be empty"),
    # zoo.finetune: options refused before the data is loaded or a run directory made
    ("finetune epochs 0", finetune(epochs=0), InvalidArgumentError, "epochs must be a positive integer, got 0"),
    ("finetune optimizer", finetune(optimizer="adamax"), InvalidArgumentError, "unknown optimizer 'adamax'"),
    ("finetune unknown option", finetune(learning_rat=1e-3), InvalidArgumentError, "unknown key(s) learning_rat"),
    ("finetune config type", finetune(config={"epochs": 2}), InvalidArgumentError,
     "config must be a zoo.config.FinetuneConfig"),
    ("finetune two_phase 1 epoch", finetune(recipe="two_phase", epochs=1), InvalidArgumentError,
     "needs at least 2 epochs"),
    ("finetune missing folder", finetune(data="/nonexistent/images", recipe="full", epochs=1), DataError,
     "is not a folder"),
    ("finetune data None", finetune(data=None, recipe="full", epochs=1), DataError, "cannot load a NoneType"),
    ("finetune head mismatch", finetune(data="digits", recipe="full", epochs=1), InvalidArgumentError,
     "the model's head has 2 outputs but the data has 10 classes"),
    # zoo.data.load
    ("load missing folder", load("/nonexistent/images"), DataError, "is not a folder"),
    ("load int", load(3), DataError, "cannot load a int"),
    ("load array alone", load(np.zeros((4, 8, 8))), DataError, "an array alone has no labels"),
    ("load tfds no name", load("tfds:"), InvalidArgumentError, "'tfds:' needs a dataset name"),
    ("load batch 0", load(batch_size=0), InvalidArgumentError, "batch_size must be a positive integer, got 0"),
    ("load batch text", load(batch_size="a"), InvalidArgumentError, "batch_size must be a positive integer"),
    ("load per_class 0", load(per_class=0), InvalidArgumentError, "per_class must be a positive integer or None"),
    ("load per_class -1", load(per_class=-1), InvalidArgumentError, "per_class must be a positive integer"),
    ("load image_size 0", load(image_size=(0, 8)), InvalidArgumentError, "image_size must be (height, width)"),
    ("load image_size text", load(image_size="abc"), InvalidArgumentError, "image_size must be (height, width)"),
    ("load image_size 3", load(image_size=(8, 8, 8)), InvalidArgumentError, "image_size must be (height, width)"),
    ("load channels 0", load(channels=0), InvalidArgumentError, "channels must be a positive integer"),
    ("load channels 2", load(channels=2), InvalidArgumentError, "images convert to 1 or 3 channels only"),
    ("load seed -1", load(seed=-1), InvalidArgumentError, "seed must be an integer, 0 or more"),
    ("load num_classes 0", load(num_classes=0), InvalidArgumentError, "num_classes must be a positive integer"),
    ("load val_fraction", load(val_fraction=1.5), InvalidArgumentError, "must be >= 0 and sum to less than 1"),
    ("load val_fraction text", load(val_fraction="x"), InvalidArgumentError, "must be >= 0 and sum to less than 1"),
    ("load augment", load(augment="bogus"), InvalidArgumentError, "augment='bogus' is not a preset"),
    ("load one class", load(classes=[1]), InvalidArgumentError, "must name at least two different classes"),
    ("load unknown class", load(classes=[0, 9]), DataError, "has no class 9"),
    ("load splits", load(splits=("train",)), InvalidArgumentError, "apply to 'tfds:NAME' sources only"),
    ("load x and y lengths", load((np.zeros((4, 8, 8)), np.zeros(3, int))), DataError, "x holds 4 images"),
    ("load float labels", load((np.zeros((4, 8, 8)), np.zeros(4))), DataError, "give one integer class id"),
    # zoo.lr_find
    ("lr_find start above end", lr_find(start=1.0, end=0.1), InvalidArgumentError, "0 < start < end"),
    ("lr_find optimizer", lr_find(optimizer="bogus"), InvalidArgumentError, "unknown optimizer 'bogus'"),
    # tuning.search: refused before a search directory is made
    ("search tuner", search(tuner="bogus"), InvalidArgumentError, "unknown tuner 'bogus'"),
    ("search objective", search(objective="auc"), InvalidArgumentError, "objective 'auc' is not a metric"),
    ("search max_trials 0", search(max_trials=0), InvalidArgumentError, "max_trials must be a positive integer"),
    ("search epochs 0", search(epochs=0), InvalidArgumentError, "epochs must be a positive integer"),
    ("search image_size", search(image_size=(8,)), InvalidArgumentError, "image_size must be (height, width)"),
    ("search distributed", search(distributed="boss"), InvalidArgumentError, "use 'chief', 'worker' or None"),
    ("search unknown backbone", search({"backbone": ["no_such_net"]}), ZooError, "no_such_net"),
    # zoo.weights and the registry
    ("weights unknown", weights("resolve", "bogus"), UnknownModelError, "unknown model 'bogus'"),
    ("weights none", weights("resolve", "mlp_small"), WeightsError, "mlp_small has no pretrained weights"),
    ("weights status none", weights("status", "mlp_small"), WeightsError, "mlp_small has no pretrained weights"),
    ("weights import missing", weights("import_file", "{tmp}/missing.h5", "resnet_tiny.digits"), WeightsError,
     "no such file"),
    ("weights import no tag", weights("import_file", "{tmp}/missing.h5", "mlp_small"), WeightsError,
     "has no weights tag to import into"),
    ("model_info unknown", registry("model_info", "resnt50"), UnknownModelError, "did you mean resnet50"),
    ("resolve None", registry("resolve", None), InvalidArgumentError, "a model name is a string"),
]


@pytest.mark.parametrize("name, call, error, text", API, ids=[case[0] for case in API])
def test_the_api_refuses_with_a_zoo_error(name, call, error, text, tmp_path):
    before = snapshot(tmp_path)
    with pytest.raises(error) as caught:
        call(Inputs(tmp_path))
    assert isinstance(caught.value, ZooError)
    message = str(caught.value)
    assert text in message and "\n" not in message, message
    assert snapshot(tmp_path) == before  # no run directory, no search directory


def test_the_tuner_names_are_tunings_own():
    import tuning

    assert set(TUNERS) == set(tuning.ORACLES) and set(cli.OBJECTIVES) == set(tuning.OBJECTIVES)


# What the fixes changed besides refusing ------------------------------------------------------------------


def test_info_and_list_show_the_size_the_default_tag_builds_at(capsys):
    assert cli.main(["info", "resnet_tiny"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("input size"))
    assert line.split(None, 2)[2] == "16x16x3 (the digits weights' size; the architecture's own 32x32x3; at least 8x8)"
    assert cli.main(["info", "resnet50"]) == 0
    assert "224x224x3 (at least 32x32)" in capsys.readouterr().out
    assert cli.main(["list", "resnet_tiny*"]) == 0
    rows = {line.split()[0]: line.split()[1:3] for line in capsys.readouterr().out.splitlines()[2:-1]}
    assert rows == {"resnet_tiny.digits": ["resnet", "16x16x3"], "resnet_tiny.simclr_digits": ["resnet", "16x16x3"]}


def test_weights_verify_calls_a_file_without_a_hash_unverifiable_and_junk_not_readable(tmp_path):
    """mobilenet_v2's publisher gives no hash: a real HDF5 file is unverifiable, a junk one is refused."""
    import h5py

    from zoo.registry import resolve

    cache = tmp_path / "home" / "models"
    cache.mkdir(parents=True)
    path = cache / resolve("mobilenetv2")[1].file_name
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(2)
    script = ("import sys; from zoo.cli import main; print(main(['weights', 'verify', 'mobilenetv2'])); "
              "open(sys.argv[1], 'wb').write(b'<html>not weights</html>'); "
              "print(main(['weights', 'verify', 'mobilenetv2']))")
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                         env={**os.environ, "KERAS_HOME": str(tmp_path / "home")})
    lines = out.stdout.splitlines()
    assert lines[:2] == [f"mobilenetv2.imagenet: unverifiable (the publisher gives no hash) {path}", "0"]
    assert lines[2:] == [f"mobilenetv2.imagenet: NOT READABLE (not an HDF5 file) {path}", "2"]
    errors = [line for line in out.stderr.splitlines() if line.startswith("keras-zoo:")]
    assert errors == ["keras-zoo: error: 1 file(s) are damaged (a hash that does not match, or not a weights "
                      "file): delete them and download again"]


@pytest.mark.parametrize("flags, says", [
    ([], "defaults: the bundled task's (resnet_tiny.digits on digits classes 5,6,7,8,9"),
    (["--data", "digits"], "defaults: FinetuneConfig's (recipe two_phase, 6 epochs, batch 32, learning rate 0.001), "
                           "as --data is given"),
    (["--model", "resnet_tiny"], "as --model is given"),
])
def test_finetune_says_which_defaults_apply(flags, says, tmp_path, monkeypatch, capsys):
    import zoo.jobs

    seen = {}

    def run_finetune(config, overwrite=False):
        seen["config"] = config
        return {"model": config.model, "recipe": config.recipe, "test_accuracy": None, "seconds": 0.0,
                "run_dir": config.run_dir}

    monkeypatch.setattr(zoo.jobs, "run_finetune", run_finetune)
    assert cli.main(["finetune", *flags, "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("defaults: ") and says in out.splitlines()[0]
    assert "no test split" in out  # a run too small to hold out a test split says so
    assert seen["config"].epochs == (20 if not flags else 6)


def write_images(root: Path, classes: str, per_class: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_two_images_per_class_train_and_evaluate(tmp_path, capsys):
    """A positive fraction holds out at least one example where one can be spared, so tiny classes still have
    a validation and a test split; the run finishes, and runs again."""
    from zoo.data import load

    data = write_images(tmp_path / "tiny", "ab", 2)
    info = load(data, image_size=(8, 8))[3]
    assert info.num_examples == {"train": 2, "validation": 1, "test": 1}
    argv = ["finetune", "--model", "mlp_small", "--pretrained", "false", "--data", str(data), "--image-size", "8,8",
            "--epochs", "2", "--recipe", "full", "--run-dir", str(tmp_path / "run")]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "test accuracy" in capsys.readouterr().out
    assert (tmp_path / "run" / "metrics.json").exists()
    assert cli.main(argv) == 2  # a finished run is not overwritten: refused in one line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_one_image_per_class_leaves_nothing_to_hold_out(tmp_path):
    from zoo.data import load

    data = write_images(tmp_path / "single", "abc", 1)
    info = load(data, image_size=(8, 8))[3]
    assert info.num_examples == {"train": 3, "validation": 0, "test": 0}


def test_one_image_per_class_trains_without_held_out_splits(tmp_path, capsys):
    data = write_images(tmp_path / "single", "abc", 1)
    argv = ["finetune", "--model", "mlp_small", "--pretrained", "false", "--data", str(data), "--image-size", "8,8",
            "--epochs", "2", "--run-dir", str(tmp_path / "run")]
    assert cli.main(argv) == 0
    assert "no test split" in capsys.readouterr().out
