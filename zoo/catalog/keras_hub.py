"""Backbones built through keras-hub, from Hugging Face transformers and timm checkpoints, as data.

Each entry carries its checkpoint's own ``config.json`` (the fields keras-hub's converter reads), so the
architecture builds offline with random weights and ``keras-zoo list`` needs no network; the weights are the
checkpoint directory at ``url`` (``hf://org/name``), converted by keras-hub on load. The hub publishes no
hash keras-hub checks, so these files are "unverifiable" in ``keras-zoo weights verify``; a Hugging Face
checkpoint is downloaded at its pinned revision where ``REVISIONS`` has one, else from the main branch.
"""
from zoo.registry import ModelSpec, WeightSpec, register

IMAGENET = "torch"  # ImageNet mean and std: DINOv2, DeiT, Swin and timm's recipes
TWO_TOWERS = ("keras_hub>SigLIPBackbone", "keras_hub>CLIPBackbone")  # presets whose image tower is an entry


# Top-1 at 224 of the same weights with their ImageNet classifier, as timm's results/results-imagenet.csv gives
# it (timm ports the Hugging Face DeiT, Swin and ViT checkpoints; google/vit-base-patch16-224 is its
# vit_base_patch16_224.orig_in21k_ft_in1k). The self-supervised and image-text entries have no classifier.
TOP1 = {
    "resnet18.a1_in1k": 0.71504, "resnet50.a1_in1k": 0.80382, "efficientnet_b0.ra_in1k": 0.77698,
    "mobilenetv3_large_100.ra_in1k": 0.75784, "densenet121.tv_in1k": 0.74750,
    "deit_tiny_distilled_patch16_224.fb_in1k": 0.74538, "deit_small_distilled_patch16_224.fb_in1k": 0.81204,
    "deit_base_distilled_patch16_224.fb_in1k": 0.83384, "swin_tiny_patch4_window7_224.ms_in1k": 0.81388,
    "swin_small_patch4_window7_224.ms_in1k": 0.83228, "swin_base_patch4_window7_224.ms_in22k_ft_in1k": 0.85276,
    "vit_base_patch16_224.in21k_ft_in1k": 0.81782,
}

# The commit each Hugging Face checkpoint is downloaded at. This machine cannot reach the hub: each one is the
# commit independent public projects pin or have in their hub cache (snapshots/<commit>/model.safetensors);
# the handles without one (no such evidence found) follow the main branch.
REVISIONS = {
    "hf://facebook/dinov2-small": "ed25f3a31f01632728cabb09d1542f84ab7b0056",
    "hf://facebook/dinov2-base": "f9e44c814b77203eaa57a6bdbbd535f21ede1415",
    "hf://facebook/dinov2-large": "47b73eefe95e8d44ec3623f8890bd894b6ea2d6c",
    "hf://facebook/dinov2-with-registers-small": "0d9846e56b43a21fa46d7f3f5070f0506a5795a9",
    "hf://google/vit-base-patch16-224-in21k": "b4569560a39a0f1af58e3ddaf17facf20ab919b0",
    "hf://google/vit-base-patch16-224": "3f49326eb077187dfe1c2a2bb15fbd74e6ab91e3",
    "hf://google/vit-large-patch16-224-in21k": "6074eaf2211423e928c93b93ef773d5da618aa7e",
    "hf://microsoft/swin-tiny-patch4-window7-224": "d00d478bfaf1f417d34a1186673ad4b4be264c51",
    "hf://timm/resnet18.a1_in1k": "491b427b45c94c7fb0e78b5474cc919aff584bbf",
    "hf://timm/resnet50.a1_in1k": "767268603ca0cb0bfe326fa87277f19c419566ef",
    "hf://timm/efficientnet_b0.ra_in1k": "1b5383e5f79cc0f7fc067e372f8f26a5fa73f26a",
    "hf://timm/mobilenetv3_large_100.ra_in1k": "96f46a1c52932f27492dff66c72378eb99b443a7",
    "hf://timm/densenet121.tv_in1k": "f0d0f2698a02cb133b09d48396db6e1e46fe9f3b",
}


def hub_weights_file(handle: str) -> str:
    """The weights file of a hub checkpoint: keras-hub's own presets (Kaggle) keep ``model.weights.h5``,
    transformers and timm checkpoints (Hugging Face) ``model.safetensors``."""
    return "model.weights.h5" if handle.startswith("kaggle://") else "model.safetensors"
HALF = "tf"  # mean 0.5, std 0.5: Google's ViT releases


def _entry(arch, family, config, tag, handle, *, dataset, license, preprocessing=IMAGENET, size=224,
           pooling="token", fixed_size=False, tower=None, description="", more=()):
    """One architecture; ``tower``: the image side of a two-tower keras-hub preset (its attribute);
    ``more``: further ``(tag, handle, dataset)`` checkpoints of it."""
    weights = tuple(WeightSpec(tag=t, file_name=hub_weights_file(h), url=h, dataset=d, license=license,
                               input_size=(size, size), cache_subdir=f"hub/{arch}.{t}", top1=TOP1.get(f"{arch}.{t}"),
                               revision=REVISIONS.get(h))
                    for t, h, d in ((tag, handle, dataset), *more))
    register(ModelSpec(
        arch=arch, family=family, source="keras-hub", builder="zoo.hub:build",
        builder_kwargs={"config": config, **({"fixed_size": True} if fixed_size else {}),
                        **({"tower": tower} if tower else {})},
        input_size=(size, size, 3), preprocessing=preprocessing, pooling=pooling, stages=stages_for(config),
        min_input_size=_min_size(config),
        description=description, weights=weights))


# Where keras-hub 0.32 keeps a transformer's blocks: {model_type: (encoder layer, block prefix, first index)}.
# The blocks run inside the encoder layer, so a stage is a path to a block (groups open the encoder).
ENCODERS = {"dinov2": ("encoder", "layers_", 0), "dinov2_with_registers": ("encoder", "layers_", 0),
            "vit": ("vit_encoder", "transformer_block_", 1), "deit": ("deit_encoder", "transformer_block_", 1)}
# timm CNNs: the layers keras-hub's pyramid_outputs (P1..P5) come from, by stride; MobileNetV3 has no
# pyramid outputs, so its last block before each stride change.
TIMM_STAGES = {
    "resnet18": {4: "stack0_block1_out", 8: "stack1_block1_out", 16: "stack2_block1_out", 32: "stack3_block1_out"},
    "resnet50": {4: "stack0_block2_out", 8: "stack1_block3_out", 16: "stack2_block5_out", 32: "stack3_block2_out"},
    "efficientnet_b0": {2: "block1a_project_bn", 4: "block2b_add", 8: "block3b_add", 16: "block5c_add",
                        32: "top_activation"},
    "mobilenetv3_large_100": {2: "block_0_0", 4: "block_1_1", 8: "block_2_2", 16: "block_4_1", 32: "block_6_0"},
    "densenet121": {4: "stack1_block6_concat", 8: "stack2_block12_concat", 16: "stack3_block24_concat",
                    32: "stack4_block16_concat"}}


def vision_config(config: dict) -> dict:
    """The part of a ``config.json`` that describes the image side: a keras-hub preset's vision encoder (SigLIP's
    ``vision_encoder``), else the config itself (a transformers or timm checkpoint's)."""
    inner = config.get("config", config)
    return inner["vision_encoder"]["config"] if "vision_encoder" in inner else inner


def _min_size(config: dict) -> int:
    """A ViT's one patch (DINOv2, ViT, DeiT, SigLIP and CLIP take any multiple of it); 32 for CNNs and Swin."""
    if config.get("model_type") in ENCODERS or config.get("registered_name") in TWO_TOWERS:
        return vision_config(config)["patch_size"]
    return 32


def stages_for(config: dict) -> dict[int, str]:
    """The stages of the keras-hub backbone a ``config.json`` describes: a quarter of a transformer's blocks
    each (keyed by block count, as the zoo's own ViTs), Swin's stages (each ends with its patch merging, so
    keyed by stage), a timm CNN's pyramid levels (by stride); {} for an architecture not known here."""
    kind = config.get("model_type")
    if kind in ENCODERS:
        encoder, block, first = ENCODERS[kind]
        depth = int(config["num_hidden_layers"])
        every = max(1, depth // 4)
        return {i: f"{encoder}/{block}{i - 1 + first}" for i in range(every, depth + 1, every)}
    if kind == "swin":
        return {i + 1: f"stage_{i}" for i in range(len(config["depths"]))}
    if config.get("registered_name") in TWO_TOWERS:  # the blocks are nodes of the vision encoder's graph
        vision = vision_config(config)
        depth, every = vision["num_layers"], max(1, vision["num_layers"] // 4)
        return {i: f"{vision['name']}_encoder_block_{i - 1}" for i in range(every, depth + 1, every)}
    return dict(TIMM_STAGES.get(config.get("architecture"), {}))


def _dinov2(hidden, layers, heads, registers=0):
    return {"model_type": "dinov2_with_registers" if registers else "dinov2", "hidden_size": hidden,
            "num_hidden_layers": layers, "num_attention_heads": heads, "mlp_ratio": 4, "patch_size": 14,
            "image_size": 518, "layerscale_value": 1.0, "use_swiglu_ffn": False, "hidden_dropout_prob": 0.0,
            "drop_path_rate": 0.0, "num_register_tokens": registers, "layer_norm_eps": 1e-6}


def _vit(model_type, hidden, layers, heads, patch=16):
    return {"model_type": model_type, "hidden_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "intermediate_size": 4 * hidden, "patch_size": patch,
            "image_size": 224, "qkv_bias": True, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
            "layer_norm_eps": 1e-12}


def _swin(embed, depths, heads):
    return {"model_type": "swin", "embed_dim": embed, "depths": depths, "num_heads": heads, "window_size": 7,
            "patch_size": 4, "image_size": 224, "mlp_ratio": 4.0, "qkv_bias": True, "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0, "drop_path_rate": 0.1, "layer_norm_eps": 1e-5}


def _timm(architecture, features, tag):
    return {"architecture": architecture, "num_classes": 1000, "num_features": features,
            "pretrained_cfg": {"tag": tag, "input_size": [3, 224, 224], "mean": [0.485, 0.456, 0.406],
                               "std": [0.229, 0.224, 0.225]}}


LVD = dict(dataset="lvd-142m (self-supervised)", license="Apache-2.0 (facebookresearch/dinov2)", size=224)
for _size, (_hidden, _layers, _heads) in {"small": (384, 12, 6), "base": (768, 12, 12),
                                          "large": (1024, 24, 16)}.items():
    _entry(f"dinov2_{_size}", "dinov2", _dinov2(_hidden, _layers, _heads), "lvd142m",
           f"hf://facebook/dinov2-{_size}", **LVD,
           description=f"DINOv2 ViT-{_size[0].upper()}/14, self-supervised (Oquab et al. 2023)")
_entry("dinov2_reg_small", "dinov2", _dinov2(384, 12, 6, registers=4), "lvd142m",
       "hf://facebook/dinov2-with-registers-small", **LVD,
       description="DINOv2 ViT-S/14 with 4 register tokens (Darcet et al. 2024)")

GOOGLE = dict(license="Apache-2.0 (google-research/vision_transformer)", preprocessing=HALF, fixed_size=True)
_entry("vit_base_patch16_224", "vit", _vit("vit", 768, 12, 12), "in21k", "hf://google/vit-base-patch16-224-in21k",
       dataset="imagenet-21k", **GOOGLE, description="ViT-B/16 (Dosovitskiy et al. 2021)",
       more=[("in21k_ft_in1k", "hf://google/vit-base-patch16-224", "imagenet-21k, then imagenet-1k")])
_entry("vit_base_patch32_224", "vit", _vit("vit", 768, 12, 12, patch=32), "in21k",
       "hf://google/vit-base-patch32-224-in21k", dataset="imagenet-21k", **GOOGLE, description="ViT-B/32")
_entry("vit_large_patch16_224", "vit", _vit("vit", 1024, 24, 16), "in21k", "hf://google/vit-large-patch16-224-in21k",
       dataset="imagenet-21k", **GOOGLE, description="ViT-L/16")

DEIT = dict(dataset="imagenet-1k", license="Apache-2.0 (facebookresearch/deit)", fixed_size=True)
for _size, (_hidden, _heads) in {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}.items():
    _entry(f"deit_{_size}_distilled_patch16_224", "deit", _vit("deit", _hidden, 12, _heads), "fb_in1k",
           f"hf://facebook/deit-{_size}-distilled-patch16-224", **DEIT,
           description=f"DeiT-{_size[0].upper()} distilled (Touvron et al. 2021)")

SWIN = dict(license="Apache-2.0 (microsoft/Swin-Transformer)", pooling="avg", fixed_size=True)
_entry("swin_tiny_patch4_window7_224", "swin", _swin(96, [2, 2, 6, 2], [3, 6, 12, 24]), "ms_in1k",
       "hf://microsoft/swin-tiny-patch4-window7-224", dataset="imagenet-1k", **SWIN, description="Swin-T")
_entry("swin_small_patch4_window7_224", "swin", _swin(96, [2, 2, 18, 2], [3, 6, 12, 24]), "ms_in1k",
       "hf://microsoft/swin-small-patch4-window7-224", dataset="imagenet-1k", **SWIN, description="Swin-S")
_entry("swin_base_patch4_window7_224", "swin", _swin(128, [2, 2, 18, 2], [4, 8, 16, 32]), "ms_in22k_ft_in1k",
       "hf://microsoft/swin-base-patch4-window7-224", dataset="imagenet-22k, then imagenet-1k", **SWIN,
       description="Swin-B")

TIMM = dict(dataset="imagenet-1k", pooling="avg")
for _arch, _family, _features, _tag, _license in [
        ("resnet18", "timm_resnet", 512, "a1_in1k", "Apache-2.0 (timm)"),
        ("resnet50", "timm_resnet", 2048, "a1_in1k", "Apache-2.0 (timm)"),
        ("efficientnet_b0", "timm_efficientnet", 1280, "ra_in1k", "Apache-2.0 (timm)"),
        ("mobilenetv3_large_100", "timm_mobilenet", 1280, "ra_in1k", "Apache-2.0 (timm)"),
        ("densenet121", "timm_densenet", 1024, "tv_in1k", "BSD-3-Clause (torchvision, through timm)")]:
    _entry(_arch, _family, _timm(_arch, _features, _tag), _tag, f"hf://timm/{_arch}.{_tag}", license=_license,
           **TIMM, description=f"timm's {_arch}.{_tag}, converted by keras-hub")


def _two_towers(family: str, prefix: str, vision: dict, text: dict, **top) -> dict:
    """keras-hub's preset config (``config.json``) of a two-tower backbone (``SigLIPBackbone``, ``CLIPBackbone``):
    the arguments of its vision encoder and of its text encoder, which the preset holds too."""
    def part(module: str, cls: str, **config) -> dict:
        return {"module": f"keras_hub.src.models.{family}.{family}_{module}", "class_name": cls, "config": config,
                "registered_name": f"keras_hub>{cls}"}
    return part("backbone", f"{prefix}Backbone", name=f"{family}_backbone", **top,
                vision_encoder=part("vision_encoder", f"{prefix}VisionEncoder", name="vision_encoder", **vision),
                text_encoder=part("text_encoder", f"{prefix}TextEncoder", name="text_encoder", **text))


def _siglip(size, patch, width, depth, heads, mlp):
    """SigLIP's towers (Zhai et al. 2023): the text tower has the vision tower's width and depth."""
    tower = dict(hidden_dim=width, num_layers=depth, num_heads=heads, intermediate_dim=mlp)
    return _two_towers("siglip", "SigLIP", dict(patch_size=patch, image_shape=[size, size, 3], **tower),
                       dict(vocabulary_size=32000, embedding_dim=width, **tower))


def _clip(size, patch, width, depth, heads, text_width, text_heads):
    """OpenAI CLIP's towers (Radford et al. 2021): a 12-layer text tower, MLPs 4x wide, a joint projection."""
    return _two_towers("clip", "CLIP", dict(patch_size=patch, hidden_dim=width, num_layers=depth, num_heads=heads,
                                            intermediate_dim=4 * width, image_shape=[size, size, 3]),
                       dict(vocabulary_size=49408, embedding_dim=text_width, hidden_dim=text_width, num_layers=12,
                            num_heads=text_heads, intermediate_dim=4 * text_width), projection_dim=text_width)


# The image towers of keras-hub's two-tower presets (kaggle:// handles, keras-hub's own files). SigLIP's tower
# ends in its attention-pooling (MAP) head; CLIP's in its tokens, read at the class token (before the projection).
SIGLIP_TOWER = dict(dataset="WebLI (image-text pairs, sigmoid loss)", license="Apache-2.0 (google-research/big_vision)",
                    preprocessing=HALF, pooling="none", fixed_size=True, tower="vision_encoder")
for _size, _width, _depth, _heads, _mlp, _name in [(224, 768, 12, 12, 3072, "base"), (384, 768, 12, 12, 3072, "base"),
                                                    (256, 1024, 24, 16, 4096, "large")]:
    _entry(f"siglip_{_name}_patch16_{_size}", "siglip", _siglip(_size, 16, _width, _depth, _heads, _mlp), "webli",
           f"kaggle://keras/siglip/keras/siglip_{_name}_patch16_{_size}/1", size=_size, **SIGLIP_TOWER,
           description=f"SigLIP ViT-{_name[0].upper()}/16 image tower at {_size} (Zhai et al. 2023)")
CLIP_TOWER = dict(dataset="WIT-400M (OpenAI's image-text pairs)", license="MIT (openai/CLIP)", preprocessing="clip",
                  pooling="token", fixed_size=True, tower="vision_encoder")
for _arch, _patch, _width, _depth, _heads, _text, _text_heads in [
        ("clip_vit_base_patch32", 32, 768, 12, 12, 512, 8), ("clip_vit_base_patch16", 16, 768, 12, 12, 512, 8),
        ("clip_vit_large_patch14", 14, 1024, 24, 16, 768, 12)]:
    _entry(_arch, "clip", _clip(224, _patch, _width, _depth, _heads, _text, _text_heads), "openai",
           f"kaggle://keras/clip/keras/{_arch}/3", **CLIP_TOWER,
           description=f"CLIP ViT-{'B' if _width == 768 else 'L'}/{_patch} image tower (Radford et al. 2021)")
