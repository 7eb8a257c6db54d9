"""Keep standard modules' size attributes in step with their (pruned) tensors."""

from __future__ import annotations

from torch import nn

__all__ = ["sync_module_attrs"]


def sync_module_attrs(model: nn.Module) -> None:
    """Update ``in/out_channels``, ``groups``, ``num_features``... from current tensor shapes.

    Called after slicing tensors (pruning) and after resizing them (loading a pruned
    checkpoint), so the result is a plain model of standard layers whose attributes match.
    """
    for mod in model.modules():
        if isinstance(mod, nn.modules.conv._ConvNd):
            _sync_conv(mod)
        elif isinstance(mod, nn.Linear):
            mod.in_features = mod.weight.shape[1]
            mod.out_features = mod.weight.shape[0]
        elif isinstance(mod, nn.Bilinear):
            mod.out_features, mod.in1_features, mod.in2_features = mod.weight.shape
        elif isinstance(mod, nn.modules.batchnorm._NormBase):
            ref = mod.weight if mod.weight is not None else mod.running_mean
            if ref is not None:
                mod.num_features = ref.shape[0]
        elif isinstance(mod, nn.LayerNorm):
            if mod.weight is not None:
                mod.normalized_shape = tuple(mod.weight.shape)
        elif isinstance(mod, nn.GroupNorm):
            if mod.weight is not None:
                mod.num_channels = mod.weight.shape[0]
        elif isinstance(mod, nn.Embedding):
            mod.num_embeddings, mod.embedding_dim = mod.weight.shape
        elif isinstance(mod, nn.PReLU):
            mod.num_parameters = mod.weight.numel()
        elif isinstance(mod, nn.RMSNorm) and mod.weight is not None:
            mod.normalized_shape = tuple(mod.weight.shape)


def _sync_conv(mod: nn.modules.conv._ConvNd) -> None:
    w = mod.weight
    if mod.transposed:
        mod.in_channels = w.shape[0]
        mod.out_channels = w.shape[1] * mod.groups
        return
    per_group_in = mod.in_channels // mod.groups
    if mod.groups > 1 and per_group_in == 1:
        # Depthwise-like: each input channel owns a block of `mult` outputs; removing a
        # channel removes its whole group.
        mult = mod.out_channels // mod.groups
        mod.groups = w.shape[0] // mult
        mod.in_channels = mod.groups
    else:
        mod.in_channels = w.shape[1] * mod.groups
    mod.out_channels = w.shape[0]
