"""MASt3R-SfM retrieval features: the ``*_retrieval_trainingfree.pth`` head over the MASt3R encoder.

Written from ``shared/reference/MAST3R_NETWORK.md`` §5. For one image (preprocessed at size 512) the frozen
MASt3R encoder gives tokens F (N, 1024); the retrieval head turns them into local features for ASMK:

1. pre-whitening  ``(F - m) @ p`` in float64 (``prewhiten.m`` (1, C), ``prewhiten.p`` (C, C), p on the right);
2. projector: identity, or Linear -> [LayerNorm(eps 1e-5) -> GELU -> Linear]* for ``hdims``
   (``+`` the pre-whitened input when ``residual``);
3. attention weight per token: the L2 norm of the projected feature;
4. post-whitening (same formula; only after a projector);
5. local output: the ``nfeat`` tokens with the largest weights (sorted descending; ``nfeat < 0`` keeps the
   fraction ``-nfeat`` of the N tokens); global output: the L2-normalised weighted sum.

The released "trainingfree" file is expected to hold only the pre-whitening (its ``args`` decide; every
variant of ``shared/reference/mast3r_retrieval_keys.json`` loads strictly). The backbone weights are not in
the file: they are the MASt3R network's encoder (:class:`Mast3rNetwork`), shared with pair inference, so
:meth:`RetrievalHead.forward` also accepts encoder tokens computed elsewhere.

The ASMK codebook sits beside the model as ``<model name minus its last '_' token>_codebook.pkl``, a pickle
of ``{'type': 'Codebook', 'params': {'size': nclusters}, 'state': {'centroids': ndarray (size, dim)}}``.
:func:`read_codebook` reads it with a restricted unpickler that can only rebuild plain containers, numbers,
strings and numpy arrays/dtypes/scalars (numpy 1.x ``numpy.core`` and numpy 2 ``numpy._core`` paths; plus
``_codecs.encode`` restricted to latin-1, which protocol-2 pickles use for raw bytes); any other global in the file is refused with :class:`CheckpointError`, so no code from the file runs.
"""

from __future__ import annotations

import io
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sfm3r.errors import CheckpointError
from sfm3r.sfm.mast3r.checkpoint import checkpoint_args, load_weights, read_torch_pickle
from sfm3r.sfm.mast3r.network import Mast3rNetwork

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RetrievalConfig:
    """The retrieval head's architecture, from the checkpoint's ``args`` (names as in the official args)."""

    prewhiten: bool = True
    hdims: tuple[int, ...] = ()  # projector widths; () = identity projector
    residual: bool = False
    postwhiten: bool = False
    featweights: str = "l2norm"
    nfeat: float = 300  # > 0: number of local features kept; < 0: fraction of the tokens
    imsize: int = 512
    nclusters: int | None = None  # ASMK codebook size
    pretrained: str | None = None  # path of the MASt3R checkpoint it was built on (informative)

    def __post_init__(self) -> None:
        if self.featweights != "l2norm":
            raise ValueError(f"featweights={self.featweights!r} is not supported (only 'l2norm')")
        if self.postwhiten and not self.hdims:
            raise ValueError("postwhiten needs a projector (non-empty hdims)")
        if self.nfeat < -1 or self.nfeat == 0:
            raise ValueError(f"nfeat must be > 0 (a count) or in [-1, 0) (a fraction), got {self.nfeat}")

    @classmethod
    def from_args(cls, args: dict) -> RetrievalConfig:
        """From the official args (``prewhiten``/``postwhiten`` None = off; ``hdims`` '1024_512' or a list)."""
        hdims = args.get("hdims", "")
        if isinstance(hdims, str):
            hdims = tuple(int(h) for h in hdims.split("_")) if hdims else ()
        return cls(
            prewhiten=args.get("prewhiten") is not None,
            hdims=tuple(int(h) for h in hdims),
            residual=bool(args.get("residual", False)),
            postwhiten=args.get("postwhiten") is not None,
            featweights=args.get("featweights", "l2norm"),
            nfeat=args.get("nfeat", 300),
            imsize=int(args.get("imsize", 512)),
            nclusters=args.get("nclusters"),
            pretrained=args.get("pretrained"),
        )


class Whitener(nn.Module):
    """``(x - m) @ p`` computed in float64 (m (1, C), p (C_in, C_out), both float64 parameters)."""

    def __init__(self, dim: int):
        super().__init__()
        self.m = nn.Parameter(torch.zeros(1, dim, dtype=torch.float64), requires_grad=False)
        self.p = nn.Parameter(torch.eye(dim, dtype=torch.float64), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            flat = x.reshape(-1, x.shape[-1]).to(torch.float64)
            return ((flat - self.m) @ self.p).reshape(x.shape).to(x.dtype)


def _projector(in_dim: int, hdims: tuple[int, ...]) -> nn.Module:
    if not hdims:
        return nn.Identity()
    layers: list[nn.Module] = []
    d = in_dim
    for h in hdims[:-1]:
        layers += [nn.Linear(d, h), nn.LayerNorm(h), nn.GELU()]
        d = h
    layers.append(nn.Linear(d, hdims[-1]))
    return nn.Sequential(*layers)


class RetrievalHead(nn.Module):
    """Whitening + projector over encoder tokens; its state dict is the retrieval checkpoint's ``model``."""

    def __init__(self, cfg: RetrievalConfig, backbone_dim: int = 1024):
        super().__init__()
        self.cfg = cfg
        self.backbone_dim = backbone_dim
        self.dim = cfg.hdims[-1] if cfg.hdims else backbone_dim  # output feature dim
        if cfg.residual and self.dim != backbone_dim:
            raise ValueError(f"residual projector needs hdims[-1] == {backbone_dim}, got {self.dim}")
        self.prewhiten = Whitener(backbone_dim) if cfg.prewhiten else nn.Identity()
        self.projector = _projector(backbone_dim, cfg.hdims)
        self.postwhiten = Whitener(self.dim) if cfg.postwhiten else nn.Identity()

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder tokens (B, N, C_enc) -> features (B, N, D) (post-whitened) and weights (B, N)."""
        x = self.prewhiten(tokens)
        proj = self.projector(x)
        if self.cfg.residual:
            proj = proj + x
        attn = proj.norm(dim=-1)  # before post-whitening
        return self.postwhiten(proj), attn


def select_local(feat: torch.Tensor, attn: torch.Tensor, nfeat: float):
    """The top-``nfeat`` tokens by weight: features (B, k, D), weights (B, k) descending, indices (B, k)."""
    n = feat.shape[1]
    k = int(-nfeat * n) if nfeat < 0 else int(nfeat)
    top_attn, top_idx = torch.topk(attn, min(k, n), dim=1)
    top_feat = torch.gather(feat, 1, top_idx.unsqueeze(-1).expand(-1, -1, feat.shape[2]))
    return top_feat, top_attn, top_idx


def global_descriptor(feat: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """(B, N, D), (B, N) -> (B, D): L2-normalised attention-weighted sum of the features."""
    return nn.functional.normalize((feat * attn[:, :, None]).sum(dim=1), dim=1)


@dataclass(frozen=True, eq=False)
class LocalFeatures:
    """One image's retrieval features for ASMK."""

    feat: np.ndarray  # (k, D) float32 local features
    attn: np.ndarray  # (k,) float32 weights, descending
    token_idx: np.ndarray  # (k,) int64 token indices (row-major on the h x w grid)


class RetrievalModel:
    """The MASt3R encoder (shared) + a :class:`RetrievalHead`. Not an nn.Module: it owns no backbone weights."""

    def __init__(self, backbone: Mast3rNetwork, head: RetrievalHead):
        if head.backbone_dim != backbone.cfg.enc_embed_dim:
            raise ValueError(
                f"retrieval head expects {head.backbone_dim}-d encoder tokens, the backbone gives "
                f"{backbone.cfg.enc_embed_dim}"
            )
        self.backbone = backbone
        self.head = head

    @property
    def device(self) -> torch.device:
        return self.backbone.patch_embed.proj.weight.device

    @torch.inference_mode()
    def features(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """img (B, 3, H, W) in [-1, 1] -> all token features (B, N, D) float32, weights (B, N)."""
        tokens, _ = self.backbone.encode(img.to(self.device, torch.float32))
        return self.head(tokens.float())

    @torch.inference_mode()
    def local_features(self, img: torch.Tensor, tokens: torch.Tensor | None = None) -> LocalFeatures:
        """One image (1, 3, H, W) -> its top-``nfeat`` local features (or pass its encoder tokens (N, C))."""
        if tokens is None:
            feat, attn = self.features(img)
        else:
            feat, attn = self.head(tokens.to(self.device).float().reshape(1, -1, tokens.shape[-1]))
        f, a, i = select_local(feat, attn, self.head.cfg.nfeat)
        return LocalFeatures(feat=f[0].cpu().numpy().astype(np.float32, copy=False),
                             attn=a[0].cpu().numpy().astype(np.float32, copy=False),
                             token_idx=i[0].cpu().numpy().astype(np.int64, copy=False))

    @torch.inference_mode()
    def global_descriptor(self, img: torch.Tensor) -> torch.Tensor:
        """img (B, 3, H, W) -> (B, D) L2-normalised global descriptors."""
        return global_descriptor(*self.features(img))


def load_retrieval(path: str | Path, backbone: Mast3rNetwork) -> RetrievalModel:
    """Load a retrieval checkpoint (``torch.save`` of {'model', 'args'}) on top of ``backbone``'s encoder.

    The head is built from ``args`` and loaded strictly (CheckpointError lists missing/unexpected keys).
    """
    ckpt = read_torch_pickle(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict) or "args" not in ckpt:
        raise CheckpointError(f"{path} is not a MASt3R retrieval checkpoint (expected a dict with 'model' and 'args')")
    args = checkpoint_args(ckpt["args"])
    try:
        cfg = RetrievalConfig.from_args(args)
        head = RetrievalHead(cfg, backbone.cfg.enc_embed_dim)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"retrieval checkpoint {path}: unsupported configuration: {exc}") from None
    state_dict = {k: v for k, v in ckpt["model"].items() if not k.startswith("backbone.")}
    load_weights(head, state_dict, str(path))
    return RetrievalModel(backbone, head.to(backbone.patch_embed.proj.weight.device).eval())


# ---------------------------------------------------------------------------------------------------
# ASMK codebook
# ---------------------------------------------------------------------------------------------------


def codebook_path(model_path: str | Path) -> Path:
    """``.../X_retrieval_trainingfree.pth`` -> ``.../X_retrieval_codebook.pkl`` (the official naming)."""
    model_path = Path(model_path)
    return model_path.with_name("_".join(model_path.name.split("_")[:-1]) + "_codebook.pkl")


_NUMPY_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
}


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"codec {encoding!r} is not allowed")
    return text.encode("latin1")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only; every other global is refused."""

    def find_class(self, module: str, name: str):
        if module.startswith("numpy.core"):  # numpy 1.x pickles; numpy 2 moved these to numpy._core
            module = "numpy._core" + module[len("numpy.core"):]
        if (module, name) in _NUMPY_GLOBALS:
            return getattr(__import__(module, fromlist=[name]), name)
        if (module, name) == ("_codecs", "encode"):  # protocol-2 pickles store bytes as latin-1 text
            return _latin1_encode
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def read_codebook(path: str | Path, nclusters: int | None = None) -> np.ndarray:
    """The ASMK centroids (size, dim) float32 from a ``*_codebook.pkl`` file, read without running code.

    ``nclusters`` (the retrieval args' value), when given, must equal the file's ``params['size']``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ASMK codebook {path} does not exist: it must sit beside the retrieval model")
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes())).load()
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"refusing to read codebook {path}: {exc} (only numpy arrays are accepted)") from None
    except Exception as exc:  # EOFError, ValueError ... of a truncated or foreign file
        raise CheckpointError(f"cannot read codebook {path}: {type(exc).__name__}: {exc}; download it again") from None
    try:
        centroids = obj["state"]["centroids"]
        size = obj["params"]["size"]
    except (TypeError, KeyError):
        raise CheckpointError(
            f"codebook {path} is not an ASMK Codebook pickle ({{'type', 'params': {{'size'}}, 'state': {{'centroids'}}}})"
        ) from None
    if not isinstance(centroids, np.ndarray) or centroids.ndim != 2:
        raise CheckpointError(f"codebook {path}: centroids must be a 2-D array, got {type(centroids).__name__}")
    if nclusters is not None and size != nclusters:
        raise CheckpointError(f"codebook {path} has size {size} but the retrieval model expects {nclusters}")
    return np.ascontiguousarray(centroids, dtype=np.float32)
