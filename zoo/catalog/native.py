"""keras-zoo's own architectures (applications/mlp, resnet, vit, moe), as data.

All take raw 0-255 images rescaled to [0, 1] ("rescale"). ViT entries store their position
embeddings at the grid of their default input (``pos_embed_grid``), so weights made at that size
load into a model built at any other size (the embeddings are interpolated).
"""
from zoo.registry import ModelSpec, WeightSpec, register

MLP = "applications.mlp:build_mlp"
RESNET = "applications.resnet:build_resnet"
VIT = "applications.vit:build_vit"
VIT_MOE = "applications.moe:build_vit_moe"


def _resnet_stages(depths: tuple[int, ...], strides: tuple[int, ...]) -> dict[int, str]:
    return {s: f"stage{i}_block{d}_out" for i, (d, s) in enumerate(zip(depths, strides), 1)}


def _vit_stages(depth: int, every: int) -> dict[int, str]:
    return {i: f"block{i}_out" for i in range(every, depth + 1, every)}


register(ModelSpec(
    arch="mlp_small", family="mlp", builder=MLP, input_size=(32, 32, 3), preprocessing="rescale",
    builder_kwargs={"widths": (256, 128), "norm": "batch", "dropout": 0.1},
    stages={1: "hidden1_out", 2: "hidden2_out"}, pooling="none", min_input_size=1,
    description="MLP 256-128 with BatchNorm and ReLU on flattened pixels (0.8M params)."))
register(ModelSpec(
    arch="mlp_base", family="mlp", builder=MLP, input_size=(32, 32, 3), preprocessing="rescale",
    builder_kwargs={"widths": (1024, 512, 256), "norm": "batch", "dropout": 0.2},
    stages={1: "hidden1_out", 2: "hidden2_out", 3: "hidden3_out"}, pooling="none", min_input_size=1,
    description="MLP 1024-512-256 with BatchNorm and ReLU on flattened pixels (3.8M params)."))

register(ModelSpec(
    arch="resnet_tiny", family="resnet", builder=RESNET, input_size=(32, 32, 3), preprocessing="rescale",
    builder_kwargs={"depths": (2, 2, 2), "widths": (32, 64, 128), "block": "basic", "stem": "small"},
    stages=_resnet_stages((2, 2, 2), (1, 2, 4)), first_conv="stem_conv", min_input_size=8,
    weights=(
        WeightSpec(
            tag="digits", file_name="resnet_tiny_digits.weights.h5", bundled=True,
            file_hash="f68368cf8948286bce240ac2d11f4726583ce3e1275c792027e325b3e51854cc",
            dataset="scikit-learn digits 0-4", num_classes=5, input_size=(16, 16),
            license="BSD-3-Clause (scikit-learn's digits data); Apache-2.0 (weights)",
            description="pretrained by keras-zoo itself: `keras-zoo pretrain` (seeded), 30 epochs, 16x16 inputs"),
        WeightSpec(
            tag="simclr_digits", file_name="resnet_tiny_simclr_digits.weights.h5", bundled=True,
            file_hash="30057c30ff6c3214d4a0da6c9f6e5cf66aa9f52bd93a9d78be40ee23799211a6",
            dataset="scikit-learn digits 0-4, labels unused", input_size=(16, 16),
            license="BSD-3-Clause (scikit-learn's digits data); Apache-2.0 (weights)",
            description="self-supervised by keras-zoo itself (seeded): `keras-zoo pretrain --method simclr "
                        "--model resnet_tiny --classes 0,1,2,3,4 --image-size 16,16 --epochs 30`")),
    description="ResNet for 32x32 images: 3x3 stem, no max-pool, basic blocks [2, 2, 2] of widths 32-64-128 "
                "(0.7M params)."))
for arch, depths, block, params in [("resnet18", (2, 2, 2, 2), "basic", "11.7M"),
                                    ("resnet34", (3, 4, 6, 3), "basic", "21.8M"),
                                    ("resnet26", (2, 2, 2, 2), "bottleneck", "16.0M")]:
    register(ModelSpec(
        arch=arch, family="resnet", builder=RESNET, input_size=(224, 224, 3), preprocessing="rescale",
        builder_kwargs={"depths": depths, "widths": (64, 128, 256, 512), "block": block, "stem": "imagenet"},
        stages=_resnet_stages(depths, (4, 8, 16, 32)), first_conv="stem_conv",
        description=f"{arch}, torchvision layout: 7x7 stem + max-pool, {block} blocks {list(depths)} "
                    f"({params} params with a 1000-class head)."))

for arch, dim, depth, heads, params in [("vit_tiny", 192, 12, 3, "5.7M"), ("vit_small", 384, 12, 6, "22.1M"),
                                        ("vit_base", 768, 12, 12, "86.6M")]:
    register(ModelSpec(
        arch=arch, family="vit", builder=VIT, input_size=(224, 224, 3), preprocessing="rescale",
        builder_kwargs={"patch_size": 16, "dim": dim, "depth": depth, "num_heads": heads, "pos_embed_grid": 14},
        stages=_vit_stages(depth, 3), first_conv="patch_embed", pooling="token", min_input_size=16,
        description=f"ViT/16, timm layout: width {dim}, {depth} blocks, {heads} heads, class token "
                    f"({params} params with a 1000-class head)."))
register(ModelSpec(
    arch="vit_tiny_p4", family="vit", builder=VIT, input_size=(32, 32, 3), preprocessing="rescale",
    builder_kwargs={"patch_size": 4, "dim": 192, "depth": 12, "num_heads": 3, "pos_embed_grid": 8,
                    "drop_path_rate": 0.1},
    stages=_vit_stages(12, 3), first_conv="patch_embed", pooling="token", min_input_size=4,
    description="ViT-Ti with 4x4 patches for 32x32 images: 64 patches + class token (5.4M params)."))
register(ModelSpec(
    arch="vit_pico_p4", family="vit", builder=VIT, input_size=(32, 32, 3), preprocessing="rescale",
    builder_kwargs={"patch_size": 4, "dim": 96, "depth": 6, "num_heads": 3, "pos_embed_grid": 8},
    stages=_vit_stages(6, 2), first_conv="patch_embed", pooling="token", min_input_size=4,
    description="A small ViT with 4x4 patches for 32x32 images: width 96, 6 blocks (0.7M params)."))

register(ModelSpec(
    arch="vit_moe_tiny_p4", family="vit_moe", builder=VIT_MOE, input_size=(32, 32, 3), preprocessing="rescale",
    builder_kwargs={"patch_size": 4, "dim": 192, "depth": 12, "num_heads": 3, "pos_embed_grid": 8,
                    "num_experts": 4, "top_k": 1, "capacity_factor": 1.25, "moe_every": 2,
                    "drop_path_rate": 0.1},
    stages=_vit_stages(12, 3), first_conv="patch_embed", pooling="token", min_input_size=4,
    description="ViT-Ti/4 for 32x32 images with a 4-expert top-1 (Switch) MoE MLP in every other block "
                "(10.7M params, about 5.4M active per token)."))
