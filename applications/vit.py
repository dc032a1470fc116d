"""Vision Transformer backbones (Dosovitskiy et al. 2021), laid out like timm's.

Layers: ``patch_embed`` (the Conv2D), ``class_token``, ``pos_embed``, then blocks ``block{i}_*``
(1-based) each ending in ``block{i}_out``, and ``final_norm``. The backbone returns the normalised
tokens (batch, tokens, width); with a class token, token 0 is the class token.

Example:
    >>> model = build_vit((32, 32, 3), patch_size=4, dim=64, depth=2, num_heads=2)
    >>> model.output.shape
    (None, 65, 64)
"""
from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

from applications.blocks import (
    LN_EPSILON,
    ClassToken,
    PositionEmbedding,
    check_positive,
    check_rate,
    drop_path_rates,
    patch_embedding,
    transformer_block,
)

FeedForward = Callable[[int], layers.Layer | None]


def build_vit(input_shape: tuple[int, int, int],
              patch_size: int = 16,
              dim: int = 768,
              depth: int = 12,
              num_heads: int = 12,
              mlp_ratio: float = 4.0,
              class_token: bool = True,
              pos_embed_grid: int | tuple[int, int] | None = None,
              drop_path_rate: float = 0.0,
              dropout: float = 0.0,
              ffn: FeedForward | None = None,
              name: str = "vit") -> keras.Model:
    """A ViT backbone: patch embedding, class token, position embedding, pre-norm blocks, final norm.

    ``pos_embed_grid`` is the patch grid the position embeddings are stored at (the grid the weights
    were trained at, e.g. 14 for 224 / 16); when the input gives another grid they are interpolated,
    so weights load into a model of any input size. None stores them at this input's grid.
    ``ffn(i)`` may return the feed-forward layer of block ``i`` (0-based) instead of the MLP.

    Example:
        >>> build_vit((224, 224, 3), dim=192, num_heads=3).count_params()  # ViT-Ti/16 backbone
        5524416
    """
    check_positive(patch_size=patch_size, dim=dim, depth=depth, num_heads=num_heads)
    check_rate(dropout=dropout)
    if mlp_ratio <= 0:
        raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio!r}")
    if dim % num_heads:
        raise ValueError(f"num_heads ({num_heads}) must divide dim ({dim})")
    rates = drop_path_rates(drop_path_rate, depth)

    inputs = keras.Input(input_shape)
    x = patch_embedding(inputs, patch_size, dim, name="patch_embed")
    grid = (input_shape[0] // patch_size, input_shape[1] // patch_size)
    stored = grid if pos_embed_grid is None else _pair(pos_embed_grid)
    if class_token:
        x = ClassToken(name="class_token")(x)
    x = PositionEmbedding(stored, grid, num_prefix_tokens=int(class_token), name="pos_embed")(x)
    for i in range(depth):
        x = transformer_block(x, num_heads, mlp_ratio, rates[i], dropout, name=f"block{i + 1}",
                              ffn=ffn(i) if ffn is not None else None)
    x = layers.LayerNormalization(epsilon=LN_EPSILON, name="final_norm")(x)
    return keras.Model(inputs, x, name=name)


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2:
        raise ValueError(f"pos_embed_grid must be an int or (rows, cols), got {size!r}")
    check_positive(**{f"pos_embed_grid[{i}]": s for i, s in enumerate(pair)})
    return pair
