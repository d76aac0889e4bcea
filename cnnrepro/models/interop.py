"""Loading torchvision / timm weights into our models where the architecture is identical.

Each family module registers a converter with ``@register_converter(model_name, source)``: a
function mapping the library model's ``state_dict`` to ours. ``load_library_weights`` applies
it strictly (every key must match), so a converter that misses a tensor fails loudly.
No weights are downloaded: callers pass a library model or state dict they already have.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import nn

__all__ = ["register_converter", "load_library_weights", "list_converters", "converters_for", "convert_library_weights"]

StateDict = Mapping[str, torch.Tensor]
_CONVERTERS: dict[tuple[str, str], Callable[[StateDict], dict[str, torch.Tensor]]] = {}


def register_converter(model_name: str, source: str):
    """``source`` names the library model, e.g. ``"torchvision:vgg16"`` or ``"timm:inception_v3"``."""

    def deco(fn):
        key = (model_name, source)
        if key in _CONVERTERS:
            raise ValueError(f"converter {key} is registered twice")
        _CONVERTERS[key] = fn
        return fn

    return deco


def list_converters() -> list[tuple[str, str]]:
    import cnnrepro.models  # noqa: F401  (registers every family's converters)

    return sorted(_CONVERTERS)


def converters_for(model_name: str) -> list[str]:
    """The library models (``"torchvision:resnet50"``, ...) whose weights convert into ``model_name``."""
    return [s for (n, s) in list_converters() if n == model_name]


def convert_library_weights(model_name: str, source: str, weights: nn.Module | StateDict) -> dict[str, torch.Tensor]:
    """The library model ``source``'s state dict under our model's names (not yet loaded)."""
    import cnnrepro.models  # noqa: F401

    try:
        convert = _CONVERTERS[(model_name, source)]
    except KeyError:
        raise KeyError(
            f"no converter from {source!r} to {model_name!r}; available for it: {converters_for(model_name) or 'none'}"
        ) from None
    return convert(weights.state_dict() if isinstance(weights, nn.Module) else weights)


def load_library_weights(model: nn.Module, model_name: str, source: str, weights: nn.Module | StateDict) -> nn.Module:
    model.load_state_dict(convert_library_weights(model_name, source, weights), strict=True)
    return model
