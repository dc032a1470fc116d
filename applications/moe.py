"""Mixture-of-experts feed-forward (Switch Transformer / GShard routing) and a ViT that uses it.

Each token goes to its top-k experts. Every expert takes at most ``capacity`` tokens of each sequence;
a token that finds its expert full is dropped there: the layer outputs zero for it, so the block's
residual connection carries it on unchanged. The load-balancing loss is added with ``add_loss``.

Example:
    >>> moe = MoEFeedForward(num_experts=4, hidden_dim=32, top_k=2)
    >>> moe(keras.ops.ones((2, 10, 8))).shape
    TensorShape([2, 10, 8])
"""
from __future__ import annotations

import math

import keras
from keras import layers, ops

from applications.blocks import check_positive
from applications.vit import build_vit


def _check_moe(num_experts: int, top_k: int, capacity_factor: float, aux_loss_weight: float) -> None:
    check_positive(num_experts=num_experts, top_k=top_k)
    if top_k > num_experts:
        raise ValueError(f"top_k ({top_k}) cannot exceed num_experts ({num_experts})")
    if capacity_factor <= 0:
        raise ValueError(f"capacity_factor must be positive, got {capacity_factor!r}")
    if aux_loss_weight < 0:
        raise ValueError(f"aux_loss_weight must be >= 0, got {aux_loss_weight!r}")


def _glorot(fan_in: int, fan_out: int) -> keras.initializers.Initializer:
    """Glorot-uniform for one expert's kernel (Keras would count the expert axis in the fans)."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return keras.initializers.RandomUniform(-limit, limit)


@keras.saving.register_keras_serializable(package="keras_zoo")
class MoEFeedForward(layers.Layer):
    """Top-k routed experts, each a Dense(hidden_dim) - activation - Dense(width) MLP.

    Input (batch, tokens, width). Routing is per sequence: each expert has
    ``capacity = ceil(capacity_factor * top_k * tokens / num_experts)`` slots, filled in token order
    with first choices before second choices. The gate of a token's expert is its router
    probability (Switch, k=1), or the top-k probabilities renormalised to sum to one (k>1).
    The auxiliary loss is ``aux_loss_weight * num_experts * sum_i f_i * P_i``, with f_i the fraction
    of routing assignments that chose expert i (before capacity) and P_i its mean router probability.

    Example:
        >>> dispatch, combine, aux = MoEFeedForward(4, 16, top_k=1).route(keras.ops.ones((1, 6, 8)))
        >>> tuple(dispatch.shape)  # (batch, tokens, experts, capacity)
        (1, 6, 4, 2)
    """

    def __init__(self, num_experts: int, hidden_dim: int, top_k: int = 1, capacity_factor: float = 1.25,
                 aux_loss_weight: float = 0.01, activation: str = "gelu", **kwargs):
        super().__init__(**kwargs)
        _check_moe(num_experts, top_k, capacity_factor, aux_loss_weight)
        check_positive(hidden_dim=hidden_dim)
        self.num_experts = num_experts
        self.hidden_dim = hidden_dim
        self.top_k = top_k
        self.capacity_factor = capacity_factor
        self.aux_loss_weight = aux_loss_weight
        self.activation = activation
        self.activation_fn = keras.activations.get(activation)

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[1] is None:
            raise ValueError(f"MoEFeedForward needs (batch, tokens, width) with a known number of tokens, "
                             f"got {tuple(input_shape)}")
        dim, experts, hidden = input_shape[-1], self.num_experts, self.hidden_dim
        self.router = self.add_weight(shape=(dim, experts), initializer=_glorot(dim, experts), name="router")
        self.kernel1 = self.add_weight(shape=(experts, dim, hidden), initializer=_glorot(dim, hidden),
                                       name="kernel1")
        self.bias1 = self.add_weight(shape=(experts, hidden), initializer="zeros", name="bias1")
        self.kernel2 = self.add_weight(shape=(experts, hidden, dim), initializer=_glorot(hidden, dim),
                                       name="kernel2")
        self.bias2 = self.add_weight(shape=(experts, dim), initializer="zeros", name="bias2")

    def capacity_for(self, tokens: int) -> int:
        """Slots per expert for a sequence of ``tokens`` tokens."""
        return max(1, math.ceil(self.capacity_factor * self.top_k * tokens / self.num_experts))

    def route(self, inputs):
        """Routing for (batch, tokens, width) inputs: ``(dispatch, combine, aux_loss)``.

        ``dispatch[b, n, e, c]`` is 1 where token n of sequence b fills slot c of expert e;
        ``combine`` is the same tensor weighted by the gates; ``aux_loss`` is the unweighted
        load-balancing loss ``num_experts * sum_i f_i * P_i``.
        """
        if not self.built:
            self.build(inputs.shape)
        capacity = self.capacity_for(inputs.shape[1])
        logits = ops.einsum("bnd,de->bne", inputs, ops.cast(self.router, inputs.dtype))
        probs = ops.softmax(ops.cast(logits, "float32"), axis=-1)
        masks, gates, remaining = [], [], probs
        for _ in range(self.top_k):
            mask = ops.one_hot(ops.argmax(remaining, axis=-1), self.num_experts, dtype="float32")
            masks.append(mask)
            gates.append(ops.sum(probs * mask, axis=-1))
            remaining = remaining * (1.0 - mask)
        if self.top_k > 1:
            total = sum(gates)
            gates = [g / total for g in gates]
        dispatch = combine = 0.0
        filled = ops.zeros_like(probs[:, 0, :])  # (batch, experts): slots taken by earlier choices
        for mask, gate in zip(masks, gates):
            position = ops.cumsum(mask, axis=1) - mask + filled[:, None, :]  # queue position per expert
            filled = filled + ops.sum(mask, axis=1)
            kept = mask * ops.cast(position < capacity, "float32")  # a full expert drops the token
            slot = ops.one_hot(ops.cast(ops.sum(position * mask, axis=-1), "int32"), capacity, dtype="float32")
            assigned = kept[..., None] * slot[:, :, None, :]
            dispatch = dispatch + assigned
            combine = combine + gate[..., None, None] * assigned
        fraction = ops.mean(sum(masks), axis=(0, 1)) / self.top_k
        aux_loss = self.num_experts * ops.sum(fraction * ops.mean(probs, axis=(0, 1)))
        return dispatch, combine, aux_loss

    def call(self, inputs):
        dispatch, combine, aux_loss = self.route(inputs)
        self.add_loss(self.aux_loss_weight * aux_loss)
        expert_inputs = ops.einsum("bnec,bnd->becd", ops.cast(dispatch, inputs.dtype), inputs)
        hidden = ops.einsum("becd,edh->bech", expert_inputs, self.kernel1) + self.bias1[:, None, :]
        outputs = ops.einsum("bech,ehd->becd", self.activation_fn(hidden), self.kernel2) + self.bias2[:, None, :]
        return ops.einsum("bnec,becd->bnd", ops.cast(combine, inputs.dtype), outputs)

    def get_config(self):
        return {**super().get_config(), "num_experts": self.num_experts, "hidden_dim": self.hidden_dim,
                "top_k": self.top_k, "capacity_factor": self.capacity_factor,
                "aux_loss_weight": self.aux_loss_weight,
                "activation": self.activation}


def build_vit_moe(input_shape: tuple[int, int, int],
                  num_experts: int = 4,
                  top_k: int = 1,
                  capacity_factor: float = 1.25,
                  moe_every: int = 2,
                  aux_loss_weight: float = 0.01,
                  dim: int = 192,
                  mlp_ratio: float = 4.0,
                  name: str = "vit_moe",
                  **vit_kwargs) -> keras.Model:
    """A ViT whose every ``moe_every``-th block (the 2nd, 4th, ... by default) has an MoE feed-forward.

    The MoE layer of block i is ``block{i}_moe``; other arguments go to ``build_vit``.

    Example:
        >>> model = build_vit_moe((32, 32, 3), patch_size=4, dim=32, depth=2, num_heads=2)
        >>> model.get_layer("block2_moe").num_experts
        4
    """
    _check_moe(num_experts, top_k, capacity_factor, aux_loss_weight)
    check_positive(moe_every=moe_every)

    def ffn(i: int) -> MoEFeedForward | None:
        if (i + 1) % moe_every:
            return None
        return MoEFeedForward(num_experts, int(dim * mlp_ratio), top_k, capacity_factor, aux_loss_weight,
                              name=f"block{i + 1}_moe")

    return build_vit(input_shape, dim=dim, mlp_ratio=mlp_ratio, ffn=ffn, name=name, **vit_kwargs)
