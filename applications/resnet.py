"""ResNet backbones: basic or bottleneck blocks, post- or pre-activation, ImageNet or small-image stem.

Layer names: ``stem_*``, then ``stage{s}_block{b}_*`` with each block ending in
``stage{s}_block{b}_out``; pre-activation nets end in ``final_bn`` / ``final_relu``.

Example:
    >>> model = build_resnet((32, 32, 3), depths=(2, 2, 2), widths=(32, 64, 128), stem="small")
    >>> model.output.shape
    (None, 8, 8, 128)
"""
from __future__ import annotations

import keras
from keras import layers

from applications.blocks import basic_block, bn_relu, bottleneck_block, check_positive, conv_bn, drop_path_rates

BLOCKS = {"basic": basic_block, "bottleneck": bottleneck_block}
STEMS = ("imagenet", "small")


def build_resnet(input_shape: tuple[int | None, int | None, int],
                 depths: tuple[int, ...] = (2, 2, 2, 2),
                 widths: tuple[int, ...] = (64, 128, 256, 512),
                 block: str = "basic",
                 stem: str = "imagenet",
                 stem_width: int = 64,
                 preact: bool = False,
                 drop_path_rate: float = 0.0,
                 name: str = "resnet") -> keras.Model:
    """A ResNet backbone returning the last feature map (no pooling, no head).

    ``stem="imagenet"`` is the 7x7/2 conv + 3x3/2 max-pool (stride 4 before the first stage);
    ``stem="small"`` is one 3x3 conv and no pooling, for 32x32 images. Each stage after the first
    halves the resolution. ``preact=True`` gives ResNet v2 blocks (BN-ReLU before each conv).

    Example:
        >>> build_resnet((224, 224, 3)).output.shape  # ResNet-18
        (None, 7, 7, 512)
    """
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    if len(depths) != len(widths) or not depths:
        raise ValueError(f"depths {tuple(depths)} and widths {tuple(widths)} must be non-empty and equally long")
    check_positive(stem_width=stem_width, **{f"depths[{i}]": d for i, d in enumerate(depths)},
                   **{f"widths[{i}]": w for i, w in enumerate(widths)})
    rates = iter(drop_path_rates(drop_path_rate, sum(depths)))

    inputs = keras.Input(input_shape)
    if stem == "imagenet":
        x = bn_relu(conv_bn(inputs, stem_width, 7, 2, "stem", norm=False), "stem")
        x = layers.ZeroPadding2D(1, name="stem_pool_pad")(x)  # zeros are safe after the ReLU
        x = layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    else:
        x = bn_relu(conv_bn(inputs, stem_width, 3, 1, "stem", norm=False), "stem")
    for s, (depth, width) in enumerate(zip(depths, widths), 1):
        for b in range(1, depth + 1):
            stride = 2 if s > 1 and b == 1 else 1
            x = BLOCKS[block](x, width, stride, preact, next(rates), name=f"stage{s}_block{b}")
    if preact:
        x = bn_relu(x, "final")
    return keras.Model(inputs, x, name=name)
