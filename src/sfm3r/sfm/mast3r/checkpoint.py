"""Reading MASt3R checkpoints safely (no arbitrary code runs) and building the network from them.

Two file formats are accepted:

* **Official ``.pth``** (``MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric.pth``): a ``torch.save`` pickle of
  a dict with ``model`` (the state dict) and ``args`` (an ``argparse.Namespace`` or dict whose ``model``
  attribute is the constructor string, e.g. ``"AsymmetricMASt3R(pos_embed='RoPE100', ...)"``); other
  entries (epoch, optimizer, ...) are ignored. It is read with ``torch.load(weights_only=True)``, which only
  rebuilds tensors and plain containers; the one extra class the official files need,
  ``argparse.Namespace``, is allow-listed for that call only (a Namespace is a plain attribute bag: loading
  it runs no user code). A file that needs any other class is refused with :class:`CheckpointError`.
  A bare state dict (no ``model``/``args``) is accepted when ``model_str`` is given.
* **safetensors** (``*.safetensors``): tensors only. The constructor string comes from, in this order:
  the ``model_str`` argument; the file's metadata entry ``"model"`` (what :func:`save_safetensors` writes);
  a sidecar ``config.json`` in the same folder (the Hugging Face hub layout), holding either ``"model"`` /
  ``"model_str"`` (a constructor string) or the constructor keywords themselves (``inf`` may be written as
  ``Infinity`` or ``"inf"``).

The DPT convolutions have two official names each (``scratch.layer{i}_rn`` and ``scratch.layer_rn.{i-1}``);
files that store only one of them (safetensors drops shared tensors) get the other added by
:func:`add_alias_keys`. A state dict with ``module.`` prefixes (DataParallel) is unwrapped, and a
DUSt3R-era state dict without ``dec_blocks2`` gets it from ``dec_blocks`` (the official loader does the
same). Everything else must match exactly: missing or unexpected keys and wrong shapes raise
:class:`CheckpointError` listing the first few and the counts.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sfm3r.errors import CheckpointError
from sfm3r.sfm.mast3r.network import Mast3rConfig, Mast3rNetwork

logger = logging.getLogger(__name__)

_SHOW = 5  # how many offending keys an error message lists


@dataclass(frozen=True, eq=False)
class Mast3rCheckpoint:
    """The contents of a MASt3R checkpoint, before a network is built from it."""

    path: Path
    model_str: str  # constructor string, e.g. "AsymmetricMASt3R(pos_embed='RoPE100', ...)"
    config: Mast3rConfig
    state_dict: dict[str, torch.Tensor]  # official key names, aliases completed
    args: dict = field(default_factory=dict)  # the training args of a .pth file (plain dict), else {}


# ---------------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------------


def read_torch_pickle(path: str | Path) -> object:
    """``torch.load`` a checkpoint with ``weights_only=True`` (+ ``argparse.Namespace``), tensors on CPU.

    Zip-format files are memory-mapped, so the tensors stay in the page cache until copied into a model.
    Raises CheckpointError for a missing, truncated or foreign file, or one that pickles other classes.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: check the path (or download the weights)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty: the download failed, fetch it again")
    mmap = zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises RuntimeError / UnpicklingError / EOFError / ValueError ...
        text = str(exc)
        if "Unsupported global" in text or "weights_only" in text.split("\n", 1)[0]:
            first = next((line.strip() for line in text.splitlines() if "Unsupported global" in line), text[:200])
            raise CheckpointError(
                f"checkpoint {path} contains pickled objects other than tensors and argparse.Namespace "
                f"({first}); refusing to load it because unpickling them could run arbitrary code. Use the "
                f"official MASt3R file, or re-save only its 'model' state dict and 'args'."
            ) from None
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(exc).__name__}: {text.splitlines()[0] if text else ''} "
            f"-- the file is truncated or not a PyTorch checkpoint; download it again"
        ) from None


def checkpoint_args(args: object) -> dict:
    """``ckpt['args']`` (an argparse.Namespace or a dict) as a plain dict ({} when absent)."""
    if args is None:
        return {}
    if isinstance(args, argparse.Namespace):
        return dict(vars(args))
    if isinstance(args, dict):
        return dict(args)
    raise CheckpointError(f"checkpoint 'args' has an unexpected type {type(args).__name__} (expected a Namespace)")


def read_checkpoint(path: str | Path, *, model_str: str | None = None) -> Mast3rCheckpoint:
    """Read a MASt3R checkpoint (.pth or .safetensors) without building the network.

    Args:
        path: the checkpoint file.
        model_str: constructor string overriding the one stored with the weights (required for a bare
            state dict or a safetensors file without config).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        state_dict, stored_str = _read_safetensors(path)
        args = {}
    else:
        ckpt = read_torch_pickle(path)
        state_dict, stored_str, args = _unpack_torch_checkpoint(ckpt, path)
    model_str = model_str or stored_str
    if not model_str:
        raise CheckpointError(
            f"checkpoint {path} does not say which network it holds (no args.model, metadata 'model' or "
            f"config.json): pass the constructor string explicitly (model_str=...)"
        )
    try:
        config = Mast3rConfig.from_model_string(model_str)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path}: unsupported network configuration: {exc}") from None
    state_dict = upgrade_state_dict(state_dict, config)
    return Mast3rCheckpoint(path=path, model_str=model_str, config=config, state_dict=state_dict, args=args)


def _unpack_torch_checkpoint(ckpt: object, path: Path) -> tuple[dict, str | None, dict]:
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(ckpt).__name__}, not a dict with 'model' and 'args': "
            f"is it a MASt3R checkpoint?"
        )
    if "model" in ckpt and isinstance(ckpt["model"], dict):
        args = checkpoint_args(ckpt.get("args"))
        model_str = args.get("model")
        if model_str is not None and not isinstance(model_str, str):
            raise CheckpointError(f"checkpoint {path}: args.model is a {type(model_str).__name__}, not a string")
        state_dict = ckpt["model"]
    elif ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        args, model_str, state_dict = {}, None, ckpt  # a bare state dict
    else:
        raise CheckpointError(
            f"checkpoint {path} has no 'model' state dict (top-level entries: {sorted(map(str, ckpt))[:_SHOW]}): "
            f"is it a MASt3R checkpoint?"
        )
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint {path}: state dict entries that are not tensors: {bad[:_SHOW]}")
    return dict(state_dict), model_str, args


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: check the path (or download the weights)")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state_dict = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"cannot read safetensors checkpoint {path}: {exc} -- the file is truncated or not a safetensors "
            f"file; download it again"
        ) from None
    model_str = metadata.get("model")
    if model_str is None:
        model_str = _sidecar_model_string(path.parent / "config.json")
    return state_dict, model_str


def _sidecar_model_string(config_path: Path) -> str | None:
    """A constructor string from a Hugging-Face-style config.json beside the weights, if there is one."""
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {config_path}: {exc}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path} must hold a JSON object")
    for key in ("model", "model_str"):
        if isinstance(config.get(key), str):
            return config[key]
    kwargs = config.get("kwargs", config)
    return "AsymmetricMASt3R(" + ", ".join(f"{k}={_py_literal(v)}" for k, v in kwargs.items()) + ")"


def _py_literal(value) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + "".join(_py_literal(v) + ", " for v in value) + ")"
    if isinstance(value, str) and value in ("inf", "-inf", "Infinity", "-Infinity"):
        return "-inf" if value.startswith("-") else "inf"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)


# ---------------------------------------------------------------------------------------------------
# State dict fix-ups and strict loading
# ---------------------------------------------------------------------------------------------------


def add_alias_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Complete the DPT alias pairs ``…scratch.layer{i}_rn.weight`` <-> ``…scratch.layer_rn.{i-1}.weight``."""
    out = dict(state_dict)
    for key, value in state_dict.items():
        for i in range(1, 5):
            a, b = f"scratch.layer{i}_rn.", f"scratch.layer_rn.{i - 1}."
            if a in key:
                out.setdefault(key.replace(a, b), value)
            elif b in key:
                out.setdefault(key.replace(b, a), value)
    return out


def upgrade_state_dict(state_dict: dict[str, torch.Tensor], config: Mast3rConfig) -> dict[str, torch.Tensor]:
    """The explicit legacy fix-ups (see the module docstring); returns a new dict."""
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if any(k.startswith("dec_blocks.") for k in sd) and not any(k.startswith("dec_blocks2.") for k in sd):
        logger.info("checkpoint has no dec_blocks2: copying dec_blocks (DUSt3R-era layout)")
        sd.update({"dec_blocks2." + k[len("dec_blocks."):]: v for k, v in list(sd.items()) if k.startswith("dec_blocks.")})
    return add_alias_keys(sd)


def load_weights(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(strict=True)`` with errors that list the offending keys (CheckpointError)."""
    check_fit(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True)


def check_fit(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError listing missing, unexpected and wrongly shaped keys of `state_dict` for `model`."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                more = f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
                parts.append(f"{len(items)} {label} key(s): {', '.join(items[:_SHOW])}{more}")
        raise CheckpointError(
            f"checkpoint {source} does not fit the {type(model).__name__} it describes: " + "; ".join(parts)
            + ". Is it the right file (e.g. MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric.pth)?"
        )


def check_checkpoint(path: str | Path) -> None:
    """Open `path` and check its keys and shapes against the network it describes, without loading weights.

    Cheap enough to run before any work: a .pth is memory-mapped (zip format), a .safetensors file is
    read for its header only; the network is built on the meta device. Raises CheckpointError.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist: check the path (or download the weights)")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = f.metadata() or {}
                shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"cannot read safetensors checkpoint {path}: {exc} -- the file is truncated or not a safetensors "
                f"file; download it again"
            ) from None
        model_str = metadata.get("model") or _sidecar_model_string(path.parent / "config.json")
        if not model_str:
            raise CheckpointError(f"checkpoint {path} does not say which network it holds (no metadata 'model')")
        try:
            config = Mast3rConfig.from_model_string(model_str)
        except ValueError as exc:
            raise CheckpointError(f"checkpoint {path}: unsupported network configuration: {exc}") from None
        state_dict = upgrade_state_dict({k: torch.empty(s, device="meta") for k, s in shapes.items()}, config)
    else:
        ckpt = read_checkpoint(path)
        config, state_dict = ckpt.config, ckpt.state_dict
    with torch.device("meta"):
        model = Mast3rNetwork(config)
    check_fit(model, state_dict, str(path))


def build_model(ckpt: Mast3rCheckpoint, device: str | torch.device = "cpu") -> Mast3rNetwork:
    """The network of a checkpoint with its weights, in eval mode on `device` (no random init is spent)."""
    with torch.device("meta"):
        model = Mast3rNetwork(ckpt.config)
    model = model.to_empty(device=device)
    model.reset_constants()
    load_weights(model, ckpt.state_dict, str(ckpt.path))
    return model.eval()


def load_mast3r(path: str | Path, *, device: str | torch.device = "cpu", model_str: str | None = None) -> Mast3rNetwork:
    """Read a MASt3R checkpoint (.pth or .safetensors) and return the network, eval mode, on `device`."""
    ckpt = read_checkpoint(path, model_str=model_str)
    model = build_model(ckpt, device)
    logger.info("loaded %s (%d tensors) on %s", ckpt.path.name, len(ckpt.state_dict), device)
    return model


def save_safetensors(model: Mast3rNetwork, path: str | Path, model_str: str) -> None:
    """Write `model`'s weights as safetensors with its constructor string in the metadata entry ``model``.

    Only the primary ``scratch.layer{i}_rn`` names are stored (safetensors refuses shared tensors);
    :func:`read_checkpoint` adds the aliases back.
    """
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items() if ".scratch.layer_rn." not in k}
    save_file(sd, str(path), metadata={"model": model_str})
