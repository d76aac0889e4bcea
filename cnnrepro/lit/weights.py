"""``--weights SPEC``: released or saved weights -> our paper model, with their provenance.

SPEC is one of
  - ``torchvision:NAME[:ENUM]`` (e.g. ``torchvision:resnet50:IMAGENET1K_V1``; no ENUM: the enum's
    ``DEFAULT``), read from torch.hub's cache (``$TORCH_HOME/hub/checkpoints/<file of the url>``);
  - ``timm:NAME[.TAG]`` (no TAG: timm's default tag), read from the Hugging Face cache (or
    torch.hub's for the few configs that name a url);
  - a local ``.pth`` / ``.pt`` / ``.bin`` / ``.safetensors`` file holding a library model's state
    dict (each converter registered for the model is tried), or a Lightning ``.ckpt`` written by
    ``cnnrepro fit`` (our own tensor names; its ``arch`` must be the recipe's).

Library weights are never downloaded unless ``allow_download``: then the library's own loader
fetches them into its own cache. The library model is built by the library itself
(``torchvision.models.get_model`` / ``timm.create_model``), so every key fix-up the library applies
when it loads its weights (e.g. torchvision's DenseNet key renaming) is applied here too; its
``state_dict`` then goes through the converter of ``cnnrepro.models.interop``.

The weights' own preprocessing (``LibraryPreprocessing``) is the library's transform object
itself, taken from the weights' metadata (torchvision ``Weights.transforms()``; timm
``resolve_data_config`` + ``create_transform``), so that our inputs are the library's, bit for bit.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from cnnrepro.errors import UserError
from cnnrepro.models import interop
from cnnrepro.models.interop import (convert_library_weights, converters_for, library_input_size, library_model,
                                     list_converters)

__all__ = ["WeightsError", "LoadedWeights", "LibraryPreprocessing", "LibraryEvalViews", "WeightsNormalize",
           "load_weights", "library_preprocessing", "parse_spec", "file_sha256", "FILE_SUFFIXES"]

FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
LIBRARIES = ("torchvision", "timm")


class WeightsError(UserError):
    """A --weights SPEC that cannot be resolved or does not fit the model; one line naming the fix."""


@dataclass
class LibraryPreprocessing:
    """The weights' own evaluation transform (the library's object: PIL image -> normalised float
    tensor) and what it does, for the record."""

    library: str  # "torchvision" / "timm"
    transform: Callable
    params: dict  # resize/crop/interpolation/mean/std as the library states them

    @property
    def desc(self) -> str:
        p = self.params
        return (f"{self.library}:{p['weights']} resize {p['resize']} {p['interpolation']}, crop {p['crop']}"
                f"{', crop_mode ' + p['crop_mode'] if p.get('crop_mode') else ''}, "
                f"mean {list(p['mean'])}, std {list(p['std'])}")


@dataclass
class LoadedWeights:
    """What ``load_weights`` put into the model, and where it came from."""

    spec: str
    source: dict  # {"file": path} or {"library", "name", "weights", "file"}
    file: str
    sha256: str
    converter: str
    preprocessing: LibraryPreprocessing | None = None
    check: dict | None = None  # check_same_function's figures (None: our own checkpoint)

    def record(self, preprocessing: str) -> dict:
        """The run record's ``weights`` field; ``preprocessing`` is "library:<desc>" or "protocol:<name>"."""
        return {"spec": self.spec, "source": self.source, "sha256": self.sha256, "converter": self.converter,
                "preprocessing": preprocessing, "check": self.check}


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """("torchvision"|"timm"|"file", name or path, enum / tag or None)."""
    lib, sep, rest = spec.partition(":")
    if sep and lib in LIBRARIES:
        if not rest:
            raise WeightsError(f"--weights {spec}: name the model, e.g. torchvision:resnet50:IMAGENET1K_V1 "
                               f"or timm:inception_v3.tv_in1k")
        if lib == "torchvision":
            name, _, enum = rest.partition(":")
            return lib, name, enum or None
        name, _, tag = rest.partition(".")
        return lib, name, tag or None
    if Path(spec).suffix.lower() in FILE_SUFFIXES:
        return "file", spec, None
    raise WeightsError(f"--weights {spec}: give torchvision:NAME[:WEIGHTS_ENUM], timm:NAME[.TAG], or a local "
                       f"{'/'.join(FILE_SUFFIXES)} file")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- the libraries ----------------------------------------------------------------------------------


def _torchvision_weights(spec: str, name: str, enum: str | None):
    import torchvision.models as tvm

    try:
        enum_cls = tvm.get_model_weights(name)
    except ValueError:
        raise WeightsError(f"--weights {spec}: torchvision has no model {name!r} (torchvision.models.list_models() "
                           f"lists them)") from None
    if enum is None:
        return enum_cls.DEFAULT
    try:
        return enum_cls[enum]
    except KeyError:
        raise WeightsError(f"--weights {spec}: {enum_cls.__name__} has no {enum!r}; it has "
                           f"{', '.join(w.name for w in enum_cls)}") from None


def _torchvision_cache_file(weights) -> Path:
    # torch.hub.load_state_dict_from_url's cache: <hub dir>/checkpoints/<basename of the url's path>
    from urllib.parse import urlparse

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def _timm_cfg(spec: str, name: str, tag: str | None):
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(name):
        raise WeightsError(f"--weights {spec}: timm has no model {name!r} (timm.list_models() lists them)")
    full = f"{name}.{tag}" if tag else name
    cfg = get_pretrained_cfg(full, allow_unregistered=False) if tag else get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise WeightsError(f"--weights {spec}: timm has no released weights {full!r}; it has "
                           f"{', '.join(timm.list_pretrained(name + '.*')) or 'none'}")
    return cfg


def _timm_cache_file(cfg) -> tuple[Path | None, str]:
    """(the cached weight file or None, where it looked), in the order timm's loader reads them."""
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache
        from timm.models._hub import hf_split

        repo, revision = hf_split(cfg.hf_hub_id)
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for fname in names:
            hit = try_to_load_from_cache(repo, fname, revision=revision)
            if isinstance(hit, str):
                return Path(hit), f"the Hugging Face cache (HF_HOME) for {repo}"
        return None, f"the Hugging Face cache (HF_HOME) for {repo} ({' or '.join(names)})"
    from urllib.parse import urlparse

    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
    return (path if path.is_file() else None), str(path)


def library_preprocessing(spec: str) -> LibraryPreprocessing:
    """The preprocessing the library states for the weights SPEC (metadata only: nothing is loaded)."""
    lib, name, sub = parse_spec(spec)
    if lib == "torchvision":
        w = _torchvision_weights(spec, name, sub)
        t = w.transforms()
        params = {"weights": f"{type(w).__name__}.{w.name}", "resize": t.resize_size[0], "crop": t.crop_size[0],
                  "interpolation": t.interpolation.value, "antialias": t.antialias, "mean": list(t.mean),
                  "std": list(t.std)}
        return LibraryPreprocessing("torchvision", t, params)
    if lib == "timm":
        from timm.data import create_transform, resolve_data_config

        cfg = _timm_cfg(spec, name, sub)
        # resolve_data_config's default (use_test_size=False): the config a model card states and
        # timm.data.resolve_model_data_config returns; timm's validate.py prefers test_input_size
        # where a config has one (then pass --weights_preprocessing protocol and set the sizes)
        data = resolve_data_config(pretrained_cfg=cfg.to_dict())
        t = create_transform(**data, is_training=False)
        size = data["input_size"][-1]
        params = {"weights": f"{cfg.architecture}.{cfg.tag}", "resize": _timm_resize(t), "crop": size,
                  "interpolation": data["interpolation"], "crop_pct": data["crop_pct"],
                  "crop_mode": data.get("crop_mode"), "mean": list(data["mean"]), "std": list(data["std"])}
        return LibraryPreprocessing("timm", t, params)
    raise WeightsError(f"--weights_preprocessing {spec}: name library weights (torchvision:NAME[:ENUM] or "
                       f"timm:NAME[.TAG]) whose preprocessing to use")


def _timm_resize(t) -> object:
    for step in getattr(t, "transforms", []):
        if type(step).__name__ == "Resize":
            return step.size
    return None


def _library_state_dict(spec: str, lib: str, name: str, sub: str | None, allow_download: bool):
    """(library model with the weights, converter source, provenance, weight file)."""
    if lib == "torchvision":
        import torchvision.models as tvm

        w = _torchvision_weights(spec, name, sub)
        cached = _torchvision_cache_file(w)
        if not cached.is_file() and not allow_download:
            raise WeightsError(f"--weights {spec}: {type(w).__name__}.{w.name} is not in torch.hub's cache "
                               f"(looked for {cached}); pass --allow-download to let torchvision download it, or "
                               f"place the file there (TORCH_HOME sets the cache)")
        # torchvision builds its model and loads the file itself (get_state_dict: torch.hub's
        # load_state_dict_from_url, which reads the cached file without any network access)
        lib_model = tvm.get_model(name, weights=w)
        return (lib_model, f"torchvision:{name}",
                {"library": "torchvision", "name": name, "weights": f"{type(w).__name__}.{w.name}", "url": w.url,
                 "file": str(cached)}, cached)
    import timm

    cfg = _timm_cfg(spec, name, sub)
    cached, looked = _timm_cache_file(cfg)
    if cached is None and not allow_download:
        raise WeightsError(f"--weights {spec}: {cfg.architecture}.{cfg.tag} is not cached (looked in {looked}); "
                           f"pass --allow-download to let timm download it")
    full = f"{cfg.architecture}.{cfg.tag}"
    if cached is None:
        lib_model = timm.create_model(full, pretrained=True)
        cached, _ = _timm_cache_file(cfg)
    else:
        # the cached file itself, so that nothing asks the hub whether a newer revision exists
        lib_model = timm.create_model(full, pretrained=True, pretrained_cfg_overlay={"file": str(cached)})
    return (lib_model, f"timm:{name}",
            {"library": "timm", "name": name, "weights": full, "hf_hub_id": cfg.hf_hub_id or None,
             "url": cfg.url or None, "file": str(cached) if cached else None}, cached)


# -- local files ----------------------------------------------------------------------------------


def _read_file(spec: str, path: Path) -> dict:
    if not path.is_file():
        raise WeightsError(f"--weights {spec}: no such file")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path), device="cpu"))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (any unreadable file is the same one-line refusal)
        raise WeightsError(f"--weights {spec}: cannot read it as {path.suffix} weights "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # a Lightning checkpoint, or a training script's {"state_dict": ...}
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"--weights {spec}: holds no state dict (a mapping of tensor names to tensors)")
    return obj


def _ckpt_state_dict(spec: str, path: Path, arch: str) -> dict:
    from .checkpoint_io import read_checkpoint_hparams

    if not path.is_file():
        raise WeightsError(f"--weights {spec}: no such file")
    try:
        arch_ckpt = read_checkpoint_hparams(str(path)).get("arch")
    except UserError as e:  # its message names --ckpt_path, the other flag that reads checkpoints
        raise WeightsError(str(e).replace("--ckpt_path", "--weights", 1)) from None
    if arch_ckpt is not None and arch_ckpt != arch:
        raise WeightsError(f"--weights {spec}: a checkpoint of {arch_ckpt!r}, this run's model is {arch!r}; use "
                           f"the recipe it was trained with")
    sd = _read_file(spec, path)
    # ClassifierModule keeps the network under `model.`; the metrics hold no tensors in the state dict
    return {k.removeprefix("model."): v for k, v in sd.items() if k.startswith("model.")}


# -- fitting a state dict to the model ---------------------------------------------------------------


def first_mismatch(expected: dict, got: dict) -> str | None:
    """The first tensor (in the model's order) in which ``got`` does not fit ``expected``."""
    for k, v in expected.items():
        if k not in got:
            return f"{k} (expected {tuple(v.shape)}, got no such tensor)"
        if tuple(got[k].shape) != tuple(v.shape):
            return f"{k} (expected {tuple(v.shape)}, got {tuple(got[k].shape)})"
    extra = [k for k in got if k not in expected]
    if extra:
        return f"{extra[0]} (expected no such tensor, got {tuple(got[extra[0]].shape)})"
    return None


def _convert(arch: str, source: str, sd: dict) -> dict | str:
    """Our state dict, or why the converter refused (its exception's first line)."""
    try:
        return convert_library_weights(arch, source, sd)
    except (KeyError, ValueError, RuntimeError) as e:
        return f"{type(e).__name__}: {str(e).strip(chr(39))[:200]}"


def _library_model_with(source: str, state_dict: dict, num_classes: int, spec: str) -> nn.Module:
    m = library_model(source, num_classes)
    try:
        m.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        # e.g. a file saved from a library model built with other options (an auxiliary head)
        raise WeightsError(f"--weights {spec}: converter {source} reads the file, but {source}'s own default model "
                           f"does not load it ({str(e).splitlines()[1].strip()[:160] if chr(10) in str(e) else e}), "
                           f"so the conversion cannot be checked; save the file from the library's default "
                           f"model") from None
    return m


def check_same_function(ours: nn.Module, library, size: int, converter: str, spec: str) -> dict:
    """models/interop.py's check of a conversion (the one ``load_library_weights`` runs), as the
    one-line refusal of ``--weights``."""
    try:
        return interop.check_same_function(ours, library, size, converter)
    except interop.ConversionError as e:
        raise WeightsError(f"--weights {spec}: {e}; refusing to evaluate them") from None


def load_weights(model: nn.Module, arch: str, spec: str, *, allow_download: bool = False) -> LoadedWeights:
    """Load the weights SPEC into ``model`` (our ``arch``), strictly; one-line WeightsError if they do
    not fit. Library weights are then checked to give the library model's logits (``check_same_function``)."""
    lib, name, sub = parse_spec(spec)
    expected = model.state_dict()
    lib_model, sd = None, None
    if lib == "file":
        path = Path(name).expanduser()
        if path.suffix.lower() == ".ckpt":
            candidates = [("cnnrepro checkpoint", _ckpt_state_dict(spec, path, arch))]
        else:
            sd = _read_file(spec, path)
            sources = converters_for(arch)
            if not sources:
                raise WeightsError(f"--weights {spec}: no converter into {arch!r} is registered, so a library's "
                                   f"weights cannot be read into it; cnnrepro's own weights are its Lightning .ckpt")
            candidates = [(s, _convert(arch, s, sd)) for s in sources]
        source = {"file": str(path.resolve())}
        wfile, preprocessing = path, None
    else:
        if f"{lib}:{name}" not in converters_for(arch):  # before anything is read
            takers = [n for (n, s) in list_converters() if s == f"{lib}:{name}"]
            raise WeightsError(f"--weights {spec}: no converter from {lib}:{name} into {arch!r} (into it: "
                               f"{', '.join(converters_for(arch)) or 'none'}); {lib}:{name}'s weights go into "
                               f"{', '.join(takers) or 'none of our models'}: use that recipe")
        lib_model, conv, source, wfile = _library_state_dict(spec, lib, name, sub, allow_download)
        candidates = [(conv, _convert(arch, conv, lib_model.state_dict()))]
        preprocessing = library_preprocessing(spec)
    why = []
    for conv, ours in candidates:
        if isinstance(ours, str):
            why.append(f"converter {conv}: {ours}")
            continue
        bad = first_mismatch(expected, ours)
        if bad is None:
            model.load_state_dict(ours, strict=True)
            check = None
            if conv != "cnnrepro checkpoint":
                # a file: the library's own model holding the same tensors, built for the check
                library = lib_model if lib_model is not None else partial(_library_model_with, conv, sd, spec=spec)
                size = preprocessing.params["crop"] if preprocessing is not None else library_input_size(conv)
                try:
                    check = check_same_function(model, library, size, conv, spec)
                except WeightsError as e:
                    if len(candidates) == 1:
                        raise
                    # a file read by two converters (e.g. torchvision's and timm's inception_v3):
                    # the one whose library model computes our function is the file's library
                    why.append(str(e).removeprefix(f"--weights {spec}: "))
                    continue
            return LoadedWeights(spec=spec, source=source, file=str(wfile), sha256=file_sha256(wfile),
                                 converter=conv, preprocessing=preprocessing, check=check)
        why.append(f"converter {conv}: first mismatching tensor {bad}")
    raise WeightsError(f"--weights {spec} does not fit {arch}: " + "; ".join(why))


# -- the library's preprocessing in the loader and on the device ----------------------------------


class LibraryEvalViews:
    """One view per image, made by the library's own transform object on a PIL decode (as the
    library's ImageFolder loader: ``Image.open(...).convert("RGB")``, full size): a
    ``1 x 3 x H x W`` float tensor, already normalised with the library's arithmetic.

    Not our uint8 path: our normalisation (x - 255 m) / (255 s) differs from the library's
    (x / 255 - m) / s by up to ~5e-7, and the outputs must be the library's bit for bit; the
    price is float32 instead of uint8 from the workers to the device.
    """

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, data: bytes, rng=None) -> torch.Tensor:
        with Image.open(io.BytesIO(data)) as im:
            img = im.convert("RGB")
        return self.transform(img).unsqueeze(0)


class WeightsNormalize(nn.Module):
    """The device-side step of released weights: uint8 protocol views -> the library's
    ``convert_image_dtype`` (x / 255) and ``normalize`` ((x - mean) / std, mean/std in 0..1
    units); views the library's transform already normalised in the loader pass through."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.mean, self.std = list(mean), list(std)

    def forward(self, x: torch.Tensor, train: bool = False) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        if x.is_floating_point():  # LibraryEvalViews: the library's own output
            return x
        return TF.normalize(TF.convert_image_dtype(x, torch.float), mean=self.mean, std=self.std)
