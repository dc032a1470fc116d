"""What a model knows about itself: the ``Backbone`` layer carries the catalog ``Entry`` it was built from.

``create_model`` puts the architecture's body in a ``Backbone`` (a functional ``keras.Model`` registered
for serialisation, in the spirit of keras-hub's Backbone), whose config holds the entry: name, stages,
first convolution, preprocessing, input size. The entry survives ``.keras`` save and load, renaming the
model, and nesting the model inside a user's own functional model, so freezing, groups, evaluation and
the command line read it from the model and never look the model up again by its name.

Example:
    >>> model = zoo.create_model("resnet_tiny.digits", num_classes=3)
    >>> entry_of(model).stages
    ('stage1', 'stage2', 'stage3', 'stage4')
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import keras


@dataclass(frozen=True)
class Entry:
    """The catalog entry a backbone was built from, as plain data.

    ``name`` is ``arch.tag`` when catalog weights were loaded, else the bare ``arch``; ``weights`` says
    where its weights came from (a tag, a file name, or None for random initialisation). ``stages`` are
    the layer names ending each stage, bottom to top, and ``strides`` their output strides (block
    indices for transformers). ``hub_config``: a keras-hub backbone's serialised config.
    """

    name: str
    arch: str
    family: str
    source: str
    preprocessing: str
    input_size: tuple[int, int, int]
    stages: tuple[str, ...] = ()
    strides: tuple[int, ...] = ()
    first_conv: str | None = None
    weights: str | None = None
    hub_config: dict | None = None  # keras-hub's own config of the backbone, for export as a keras-hub preset

    @classmethod
    def from_dict(cls, values: dict) -> Entry:
        tuples = {"input_size", "stages", "strides"}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in values.items()})


@keras.saving.register_keras_serializable(package="keras_zoo")
class Backbone(keras.Model):
    """A functional model (the architecture's body) that carries its catalog ``Entry``.

    Example:
        >>> body = Backbone(built.input, built.output, entry=Entry(...), name="backbone")
    """

    def __init__(self, *args, entry: Entry | dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.entry = Entry.from_dict(entry) if isinstance(entry, dict) else entry

    def get_config(self) -> dict:
        return {**super().get_config(), "entry": dataclasses.asdict(self.entry) if self.entry else None}

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> Backbone:
        config = dict(config)
        entry = config.pop("entry", None)
        model = super().from_config(config, custom_objects)  # the functional graph
        model.entry = Entry.from_dict(entry) if entry else None
        return model


def find_backbone(model: keras.Layer) -> Backbone | None:
    """The ``Backbone`` inside ``model`` (at any depth), or None for a model ``create_model`` did not make."""
    if isinstance(model, Backbone):
        return model
    for layer in getattr(model, "layers", []):
        found = find_backbone(layer)
        if found is not None:
            return found
    return None


def clone(model: keras.Model, **kwargs) -> keras.Model:
    """``keras.models.clone_model`` that keeps what the model knows (Keras rebuilds a nested functional
    subclass from its graph alone, without its config)."""
    copy = keras.models.clone_model(model, **kwargs)
    source, target = find_backbone(model), find_backbone(copy)
    if source is not None and target is not None:
        target.entry = source.entry
    return copy


def entry_of(model: keras.Layer) -> Entry | None:
    """The catalog entry a model was built from, or None.

    Example:
        >>> entry_of(keras.saving.load_model("m.keras")).name
        'resnet_tiny.digits'
    """
    backbone = find_backbone(model)
    return backbone.entry if backbone is not None else None


def example_input(model: keras.Model):
    """One input of zeros for ``model`` (an empty string for a text model), to probe what it computes.

    Example:
        >>> model(example_input(model)).shape
        TensorShape([1, 10])
    """
    import numpy as np

    def one(tensor):
        if tensor.dtype == "string":
            return np.array([""], dtype=object)
        return np.zeros((1, *tensor.shape[1:]), tensor.dtype)

    inputs = model.input
    return {name: one(t) for name, t in inputs.items()} if isinstance(inputs, dict) else one(inputs)


def save_backbone_weights(model: keras.Model, path) -> None:
    """Save the weights of ``model``'s backbone (a ``.weights.h5`` file ``create_model(..., pretrained=path)``
    loads), written atomically.

    Example:
        >>> save_backbone_weights(model, "ssl.weights.h5")
    """
    from zoo.errors import InvalidArgumentError
    from zoo.files import atomic_save

    backbone = find_backbone(model)
    if backbone is None:
        raise InvalidArgumentError(f"{model.name} has no zoo backbone: save its weights with model.save_weights")
    atomic_save(path, backbone.save_weights)
