"""Loading torchvision / timm weights into our models where the architecture is identical.

Each family module registers a converter with ``@register_converter(model_name, source)``: a
function mapping the library model's ``state_dict`` to ours. ``load_library_weights`` applies
it strictly (every key must match), so a converter that misses a tensor fails loudly, and then
runs both models on one random input (``check_same_function``): tensors that fit but feed
another function (ReLU6 where we have ReLU, a stride elsewhere) are refused too. `cnnrepro
validate --weights` (cnnrepro/lit/weights.py) runs the same check.
No weights are downloaded: callers pass a library model or state dict they already have.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

__all__ = ["register_converter", "load_library_weights", "list_converters", "converters_for", "convert_library_weights",
           "ConversionError", "check_same_function", "library_model", "library_input_size", "CHECK_RTOL"]

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


class ConversionError(ValueError):
    """Converted weights that do not make our model compute the library model's function."""


def library_model(source: str, num_classes: int) -> nn.Module:
    """The library's own model ``source`` (``"torchvision:NAME"`` / ``"timm:NAME"``), randomly
    initialised: nothing is downloaded."""
    lib, name = source.split(":", 1)
    if lib == "torchvision":
        import torchvision.models as tvm

        return tvm.get_model(name, weights=None, num_classes=num_classes)
    import timm

    return timm.create_model(name, pretrained=False, num_classes=num_classes)


def library_input_size(source: str) -> int:
    """The input size the library evaluates the model at (its default weights' metadata)."""
    lib, name = source.split(":", 1)
    if lib == "torchvision":
        import torchvision.models as tvm

        return tvm.get_model_weights(name).DEFAULT.transforms().crop_size[0]
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    return cfg.input_size[-1] if cfg is not None else 224


# logits of the converted model may differ from the library model's by float32 rounding of a
# different operation order; a converter that maps the tensors of a different function (ReLU6
# vs ReLU, a stride elsewhere) differs by far more once real weights drive the activations
CHECK_RTOL = 1e-3


def _logits(out) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def check_same_function(ours: nn.Module, library: nn.Module | Callable[[int], nn.Module], size: int,
                        source: str) -> dict:
    """Run both models, in eval mode, on one fixed random ``2 x 3 x size x size`` input;
    ConversionError if their logits differ beyond float rounding. ``library`` is the library model,
    or a function of the number of classes that builds it. Returns the figures (for a record)."""
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))

    def run(m: nn.Module) -> torch.Tensor:
        was = m.training
        m.eval()
        try:
            return _logits(m(x.to(next(m.parameters()).device))).float().cpu()
        finally:
            m.train(was)  # the caller's model comes back in the mode it was given in

    a = run(ours)
    b = run(library if isinstance(library, nn.Module) else library(a.shape[-1]))
    diff, scale = (a - b).abs().max().item(), b.abs().max().item()
    if not diff <= CHECK_RTOL * max(1.0, scale):  # a NaN is a difference too
        raise ConversionError(f"converter {source} loads these tensors, but the model then computes another function "
                              f"than {source}'s own (logits differ by {diff:.3g}, largest |logit| {scale:.3g}, on a "
                              f"random 2x3x{size}x{size} input)")
    return {"input": [2, 3, size, size], "max_abs_diff": diff, "max_abs_logit": scale}


def load_library_weights(model: nn.Module, model_name: str, source: str, weights: nn.Module | StateDict, *,
                         check_size: int | None = None) -> nn.Module:
    """Load the library model ``source``'s weights (its module, or its state dict) into ``model``
    (our ``model_name``), strictly, and check that ``model`` then gives the library model's logits
    (``check_same_function`` at ``check_size``, default the library's own input size; a state dict
    is loaded into the library's default model for the check). ConversionError if it does not,
    with ``model`` left as it was."""
    converted = convert_library_weights(model_name, source, weights)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(converted, strict=True)
    if isinstance(weights, nn.Module):
        library = weights
    else:
        def library(num_classes: int) -> nn.Module:
            m = library_model(source, num_classes)
            try:
                m.load_state_dict(dict(weights), strict=True)
            except RuntimeError as e:
                raise ConversionError(f"{source}'s own default model does not load this state dict, so converter "
                                      f"{source} cannot be checked; pass the library model itself "
                                      f"({str(e).splitlines()[0][:160]})") from None
            return m
    try:
        check_same_function(model, library, check_size or library_input_size(source), source)
    except ConversionError:
        model.load_state_dict(before, strict=True)
        raise
    return model
