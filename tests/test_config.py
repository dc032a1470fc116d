"""One config drives every entry point: zoo.finetune, the command line's flags, config.yaml, tuning."""
import dataclasses
import subprocess
import sys

import keras
import pytest
import yaml

import zoo
from zoo import cli
from zoo.config import FinetuneConfig, RunConfig, fields
from zoo.errors import InvalidArgumentError

# A value other than the default for every field, as a user would type it on the command line.
NON_DEFAULT = {
    "model": ("mlp_small", "mlp_small"), "data": ("path/to/images", "path/to/images"),
    "pretrained": ("false", False), "classes": ("5,6", [5, 6]), "per_class": ("10", 10),
    "image_size": ("24,24", (24, 24)), "dropout": ("0.25", 0.25), "head_hidden": ("64,32", [64, 32]),
    "baseline": (None, True), "curve": (None, True), "test_fraction": ("0.5", 0.5), "run_dir": ("runs/x", "runs/x"),
    "recipe": ("gradual", "gradual"),
    "epochs": ("9", 9), "learning_rate": ("3e-4", 3e-4), "batch_size": ("8", 8), "blocks": ("1", 1),
    "optimizer": ("sgd", "sgd"), "lr_schedule": ("one_cycle", "one_cycle"), "warmup": ("0.2", 0.2),
    "lr_slice": ("1e-5,1e-3", (1e-5, 1e-3)), "layer_decay": ("0.7", 0.7), "lora_rank": ("8", 8),
    "augment": ("light", "light"), "mix": ("cutmix", "cutmix"), "label_smoothing": ("0.1", 0.1),
    "grad_accum": ("4", 4), "ema": ("0.999", 0.999), "shuffle": (None, False), "cache_features": ("false", False),
    "patience": ("none", None), "train_bn": (None, True), "precise_bn": (None, False), "seed": ("3", 3),
    "jit_compile": ("false", False), "strategy": ("mirrored", "mirrored"), "lr_scaling": ("sqrt", "sqrt"),
    "mixed_precision": ("mixed_bfloat16", "mixed_bfloat16"), "tensorboard": (None, True),
}


def flag(name, text):
    dashed = "--" + name.replace("_", "-")
    if text is None:  # a boolean: --name or --no-name
        value = NON_DEFAULT[name][1]
        return [dashed if value else "--no-" + dashed[2:]]
    return [dashed, text]


def test_every_field_has_a_flag_with_its_help_and_default():
    actions = {a.dest: a for a in cli.parser()._subparsers._group_actions[0].choices["finetune"]._actions}
    for field in fields(RunConfig):
        assert field.name in actions, field.name
        assert field.metadata["help"] in actions[field.name].help
        assert "(default: " in actions[field.name].help
    assert set(NON_DEFAULT) == {f.name for f in fields(RunConfig)}  # this test covers every field


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(RunConfig)])
def test_every_option_reproduces_through_flags_and_config_yaml(name, tmp_path):
    text, value = NON_DEFAULT[name]
    assert getattr(RunConfig(), name) != value  # the test value differs from the default
    from_flags = cli.run_config(cli.parser().parse_args(["finetune", "--model", "mlp_small", *flag(name, text)]))
    assert getattr(from_flags, name) == value
    path = tmp_path / "config.yaml"
    path.write_text(from_flags.to_yaml())
    again = cli.run_config(cli.parser().parse_args(["finetune", "--config", str(path)]))
    assert again == from_flags


def test_finetune_takes_a_config_and_its_fields_as_keyword_arguments(tmp_path):
    config = FinetuneConfig(recipe="full", epochs=2, optimizer="sgd", lr_schedule="constant", warmup=0.5,
                            layer_decay=0.5, precise_bn=False, train_bn=True, cache_features=False, patience=None,
                            learning_rate=0.05, batch_size=8)
    keras.utils.set_random_seed(0)
    model = zoo.create_model("mlp_small", num_classes=3, pretrained=False, input_shape=(8, 8, 1))
    result = zoo.finetune(model, "digits", config, seed=1, run_dir=tmp_path / "run", verbose=0,
                          data_options={"classes": [0, 1, 2], "per_class": 8})
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert FinetuneConfig.from_dict(written) == dataclasses.replace(config, seed=1)
    assert not (tmp_path / "run" / "config.json").exists()  # one config file per run
    assert [row["epoch"] for row in result.history] == [1, 2]


def test_bad_values_are_refused_in_one_line_naming_the_option():
    with pytest.raises(InvalidArgumentError, match="learning_rate must be a number, got 'abc'"):
        FinetuneConfig.from_dict({"learning_rate": "abc"})
    with pytest.raises(InvalidArgumentError, match="batch_size must be an integer, got True"):
        FinetuneConfig.from_dict({"batch_size": True})
    with pytest.raises(InvalidArgumentError, match="unknown optimizer 'adamax': use adam, adamw, sgd"):
        zoo.finetune(None, None, optimizer="adamax")
    with pytest.raises(InvalidArgumentError, match="unknown key"):
        zoo.finetune(None, None, learning_rat=1e-3)


def test_a_bad_flag_is_refused_before_tensorflow_is_imported():
    code = ("import sys; from zoo.cli import main; rc = main(['finetune', '--epochs', '0']); "
            "print(rc, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["2", "False", "False"], out.stderr
    assert out.stderr.strip() == "keras-zoo: error: options: epochs must be a positive integer, got 0 " \
                                 "(epochs in all, over every phase)"
