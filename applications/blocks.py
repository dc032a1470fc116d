"""Pieces shared by the families: residual blocks, transformer block, patch and position embeddings.

Blocks are functions that apply named layers to a tensor (so a model stays a flat functional graph
whose layers generic code can find by name); the few custom layers are registered for ``.keras``.

Example:
    >>> inputs = keras.Input((32, 32, 16))
    >>> basic_block(inputs, 32, stride=2, name="stage2_block1").shape
    (None, 16, 16, 32)
"""
from __future__ import annotations

import keras
from keras import layers, ops

BN_EPSILON = 1e-5  # torchvision's
LN_EPSILON = 1e-6  # timm's


def check_positive(**values: int) -> None:
    """Raise ValueError naming each value that is not a positive integer.

    Example:
        >>> check_positive(depth=12, width=192)
    """
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_rate(**rates: float) -> None:
    """Raise ValueError naming each rate that is not in [0, 1)."""
    for name, rate in rates.items():
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {rate!r}")


def drop_path_rates(rate: float, count: int) -> list[float]:
    """Stochastic-depth rates rising linearly from 0 to ``rate`` over ``count`` blocks (as in timm).

    Example:
        >>> drop_path_rates(0.2, 3)
        [0.0, 0.1, 0.2]
    """
    check_rate(drop_path_rate=rate)
    return [rate * i / (count - 1) if count > 1 else rate for i in range(count)]


@keras.saving.register_keras_serializable(package="keras_zoo")
class DropPath(layers.Layer):
    """Stochastic depth: drops a residual branch for a whole sample, scaling survivors by 1/(1-rate).

    Example:
        >>> DropPath(0.1)(ops.ones((2, 4)), training=False).shape
        TensorShape([2, 4])
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        check_rate(rate=rate)
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        noise_shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        return keras.random.dropout(inputs, self.rate, noise_shape=noise_shape, seed=self.seed_generator)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def _residual(shortcut, branch, drop_path: float, drop_name: str, add_name: str):
    """shortcut + branch (through DropPath ``drop_name`` when its rate > 0) in an Add ``add_name``."""
    if drop_path > 0:
        branch = DropPath(drop_path, name=drop_name)(branch)
    return layers.Add(name=add_name)([shortcut, branch])


def conv_bn(x, filters: int, kernel: int, stride: int = 1, name: str = "conv", norm: bool = True):
    """Conv2D ``{name}_conv`` without bias (+ BatchNorm ``{name}_bn``), padded like PyTorch.

    A strided convolution gets an explicit symmetric ZeroPadding2D and "valid" padding, so its output
    grid matches torchvision's (Keras "same" pads only the bottom/right) and ported weights line up.
    """
    if stride > 1 and kernel > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same" if stride == 1 else "valid",
                      use_bias=False, name=f"{name}_conv")(x)
    if norm:
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return x


def bn_relu(x, name: str):
    """BatchNorm ``{name}_bn`` then ReLU ``{name}_relu``."""
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _residual_block(x, convs: list[tuple[int, int, int]], preact: bool, drop_path: float, name: str):
    """Convs are (filters, kernel, stride), named ``{name}_1``...; the projection is ``{name}_0``.

    Post-activation (v1): conv-BN(-ReLU), add, ReLU. Pre-activation (v2): BN-ReLU-conv, add; the
    projection shortcut sees the pre-activated input. The block's last layer is ``{name}_out``.
    """
    filters, stride = convs[-1][0], max(s for _, _, s in convs)
    project = stride > 1 or x.shape[-1] != filters
    y = shortcut = x
    for i, (f, k, s) in enumerate(convs, 1):
        if preact:
            y = bn_relu(y, f"{name}_{i}")
            shortcut = y if i == 1 and project else shortcut
        y = conv_bn(y, f, k, s, f"{name}_{i}", norm=not preact)
        if not preact and i < len(convs):
            y = layers.ReLU(name=f"{name}_{i}_relu")(y)
    if project:
        shortcut = conv_bn(shortcut, filters, 1, stride, f"{name}_0", norm=not preact)
    if preact:
        return _residual(shortcut, y, drop_path, f"{name}_drop_path", f"{name}_out")
    y = _residual(shortcut, y, drop_path, f"{name}_drop_path", f"{name}_add")
    return layers.ReLU(name=f"{name}_out")(y)


def basic_block(x, filters: int, stride: int = 1, preact: bool = False, drop_path: float = 0.0,
                name: str = "block"):
    """Two 3x3 convolutions and a residual connection (ResNet-18/34).

    Example:
        >>> basic_block(keras.Input((8, 8, 4)), 4, name="b").shape
        (None, 8, 8, 4)
    """
    return _residual_block(x, [(filters, 3, stride), (filters, 3, 1)], preact, drop_path, name)


def bottleneck_block(x, filters: int, stride: int = 1, preact: bool = False, drop_path: float = 0.0,
                     name: str = "block", expansion: int = 4):
    """1x1 reduce, 3x3 (strided, as in torchvision's v1.5), 1x1 expand to ``filters * expansion``.

    Example:
        >>> bottleneck_block(keras.Input((8, 8, 16)), 4, name="b").shape
        (None, 8, 8, 16)
    """
    convs = [(filters, 1, 1), (filters, 3, stride), (filters * expansion, 1, 1)]
    return _residual_block(x, convs, preact, drop_path, name)


def mlp_block(x, hidden_dim: int, dropout: float = 0.0, activation: str = "gelu", name: str = "mlp"):
    """The transformer feed-forward: Dense(hidden) - activation - dropout - Dense(input width)."""
    dim = x.shape[-1]
    x = layers.Dense(hidden_dim, activation=activation, name=f"{name}_fc1")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name=f"{name}_drop1")(x)
    x = layers.Dense(dim, name=f"{name}_fc2")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name=f"{name}_drop2")(x)
    return x


def transformer_block(x, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0, dropout: float = 0.0,
                      name: str = "block", ffn: layers.Layer | None = None):
    """Pre-norm transformer block: x + attn(norm(x)), then x + ffn(norm(x)); last layer ``{name}_out``.

    ``ffn`` replaces the MLP (e.g. a mixture-of-experts layer); it must keep the token width.

    Example:
        >>> transformer_block(keras.Input((5, 8)), num_heads=2, name="block1").shape
        (None, 5, 8)
    """
    dim = x.shape[-1]
    if dim % num_heads:
        raise ValueError(f"num_heads ({num_heads}) must divide the width ({dim})")
    y = layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_norm1")(x)
    y = layers.MultiHeadAttention(num_heads, dim // num_heads, name=f"{name}_attn")(y, y)
    x = _residual(x, y, drop_path, f"{name}_attn_drop_path", f"{name}_add")
    y = layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_norm2")(x)
    y = ffn(y) if ffn is not None else mlp_block(y, int(dim * mlp_ratio), dropout, name=f"{name}_mlp")
    return _residual(x, y, drop_path, f"{name}_mlp_drop_path", f"{name}_out")


def patch_embedding(x, patch_size: int, dim: int, name: str = "patch_embed"):
    """Non-overlapping patches to tokens: Conv2D(kernel = stride = patch) named ``{name}``, then flatten.

    Example:
        >>> patch_embedding(keras.Input((32, 32, 3)), 4, 16).shape
        (None, 64, 16)
    """
    height, width = x.shape[1], x.shape[2]
    if height is None or width is None:
        raise ValueError("patch embedding needs a fixed input height and width, got None")
    if height % patch_size or width % patch_size:
        raise ValueError(f"patch_size ({patch_size}) must divide the input size ({height}x{width})")
    x = layers.Conv2D(dim, patch_size, strides=patch_size, name=name)(x)
    return layers.Reshape(((height // patch_size) * (width // patch_size), dim), name=f"{name}_tokens")(x)


@keras.saving.register_keras_serializable(package="keras_zoo")
class ClassToken(layers.Layer):
    """Prepends one learned token to a (batch, tokens, width) sequence.

    Example:
        >>> ClassToken()(ops.zeros((2, 4, 8))).shape
        TensorShape([2, 5, 8])
    """

    def build(self, input_shape):
        self.token = self.add_weight(shape=(1, 1, input_shape[-1]), initializer="zeros", name="token")

    def call(self, inputs):
        token = ops.broadcast_to(ops.cast(self.token, inputs.dtype), (ops.shape(inputs)[0], 1, inputs.shape[-1]))
        return ops.concatenate([token, inputs], axis=1)


def resize_positions(table, grid: tuple[int, int], new_grid: tuple[int, int], num_prefix_tokens: int,
                     interpolation: str = "bilinear"):
    """A position table ``(1, prefix + rows * cols, width)`` for another grid: the rows of the leading
    ``num_prefix_tokens`` tokens (class, distillation) kept, the grid resized as an image (timm's
    ``resample_abs_pos_embed``, which is bicubic).

    Example:
        >>> resize_positions(ops.zeros((1, 5, 8)), (2, 2), (4, 4), 1).shape
        TensorShape([1, 17, 8])
    """
    dim = table.shape[-1]
    prefix = table[:, :num_prefix_tokens]
    image = ops.reshape(table[:, num_prefix_tokens:], (1, *grid, dim))
    image = ops.image.resize(image, new_grid, interpolation=interpolation)
    return ops.concatenate([prefix, ops.reshape(image, (1, new_grid[0] * new_grid[1], dim))], axis=1)


@keras.saving.register_keras_serializable(package="keras_zoo")
class PositionEmbedding(layers.Layer):
    """Learned position embeddings, stored for ``grid_size`` and interpolated to ``input_grid``.

    The weight keeps the grid it was trained at, so weights saved at one input size load into a
    model built at another; the grid part is resized bilinearly in ``call`` while the embeddings of
    the ``num_prefix_tokens`` leading tokens (the class token) are kept as they are.

    Example:
        >>> layer = PositionEmbedding(grid_size=(2, 2), input_grid=(4, 4), num_prefix_tokens=1)
        >>> layer(ops.zeros((1, 17, 8))).shape
        TensorShape([1, 17, 8])
    """

    def __init__(self, grid_size: tuple[int, int], input_grid: tuple[int, int] | None = None,
                 num_prefix_tokens: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.grid_size = tuple(grid_size)
        self.input_grid = tuple(input_grid or grid_size)
        self.num_prefix_tokens = num_prefix_tokens

    def build(self, input_shape):
        tokens = self.num_prefix_tokens + self.input_grid[0] * self.input_grid[1]
        if input_shape[1] != tokens:
            raise ValueError(f"PositionEmbedding expects {tokens} tokens "
                             f"({self.num_prefix_tokens} + {self.input_grid[0]}x{self.input_grid[1]}), "
                             f"got {input_shape[1]}")
        stored = self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]
        self.embedding = self.add_weight(shape=(1, stored, input_shape[-1]),
                                         initializer=keras.initializers.TruncatedNormal(stddev=0.02),
                                         name="embedding")

    def resized(self):
        """The embeddings for ``input_grid``: (1, prefix + rows * cols, width)."""
        if self.input_grid == self.grid_size:
            return self.embedding
        return resize_positions(self.embedding, self.grid_size, self.input_grid, self.num_prefix_tokens)

    def call(self, inputs):
        return inputs + ops.cast(self.resized(), inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "grid_size": self.grid_size, "input_grid": self.input_grid,
                "num_prefix_tokens": self.num_prefix_tokens}

