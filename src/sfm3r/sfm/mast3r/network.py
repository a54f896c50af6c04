"""The MASt3R network (Leroy et al., "Grounding Image Matching in 3D with MASt3R", 2024), inference form.

Written from ``shared/reference/MAST3R_NETWORK.md`` (our own description of the official model); it reads
in paper order:

1. configuration, parsed safely from the checkpoint's constructor string (:class:`Mast3rConfig`);
2. patch embedding (:class:`PatchEmbed`) and 2-D rotary position embedding (:class:`RoPE2D`, "RoPE100");
3. the shared ViT encoder (:class:`EncoderBlock`);
4. the two asymmetric decoders exchanging information by cross-attention (:class:`DecoderBlock`);
5. the ``catmlp+dpt`` heads: a DPT for 3-D points + confidence (:class:`DPT`) and an MLP for local
   descriptors + descriptor confidence (:class:`LocalFeatureMLP`), then the output conversions
   (:func:`postprocess`);
6. the model (:class:`Mast3rNetwork`).

Attribute names reproduce the official state-dict keys (``enc_blocks.3.attn.qkv.weight`` ...), so an
official state dict loads with ``load_state_dict(strict=True)``. Two quirks of the official layout are
reproduced on purpose: the unused ``mask_token`` parameter (a CroCo pre-training leftover), and the DPT
convolutions ``scratch.layer{i}_rn`` that are also registered as ``scratch.layer_rn.{i-1}`` (one tensor,
two keys). See :func:`sfm3r.sfm.mast3r.checkpoint.add_alias_keys` for state dicts that carry only one name.

Portrait and landscape images run in their own orientation (the official inference model,
``PatchEmbedDust3R`` with ``landscape_only=False``): every output map has the input's (H, W). The two
views of a pair may differ in size and orientation.

Tensor conventions: B batch, H x W image (multiples of the patch size 16), h = H/16, w = W/16,
N = h*w tokens in row-major order, token positions (y, x) as int64.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------------
# 1. Configuration
# ---------------------------------------------------------------------------------------------------

#: Constructor string of the released 512 catmlp+dpt metric checkpoint (its ``args.model``).
MAST3R_VITL_512_MODEL_STR = (
    "AsymmetricMASt3R(pos_embed='RoPE100', patch_embed_cls='ManyAR_PatchEmbed', img_size=(512, 512), "
    "head_type='catmlp+dpt', output_mode='pts3d+desc24', depth_mode=('exp', -inf, inf), "
    "conf_mode=('exp', 1, inf), enc_embed_dim=1024, enc_depth=24, enc_num_heads=16, dec_embed_dim=768, "
    "dec_depth=12, dec_num_heads=12, two_confs=True, desc_conf_mode=('exp', 0, inf))"
)

_MODEL_CLASSES = ("AsymmetricMASt3R",)
# Constructor keywords that only matter for training (or that the inference model overrides): accepted and
# ignored. ``patch_embed_cls`` ManyAR_PatchEmbed / landscape_only=True only transpose portrait images during
# training; the official loader replaces them by the inference form, which this module implements.
_IGNORED_KEYS = ("patch_embed_cls", "landscape_only", "freeze", "mask_ratio", "img_size")

#: Defaults of the official constructor chain (AsymmetricMASt3R -> AsymmetricCroCo3DStereo -> CroCoNet)
#: for every keyword a model string may omit; read from naver/mast3r f5209af, dust3r 3cc8c88, croco d7de0705.
#: They differ from :class:`Mast3rConfig`'s own defaults, which describe the released ViT-L checkpoint.
OFFICIAL_DEFAULTS: dict = {
    "img_size": 224,
    "patch_size": 16,
    "enc_embed_dim": 768,
    "enc_depth": 12,
    "enc_num_heads": 12,
    "dec_embed_dim": 512,
    "dec_depth": 8,
    "dec_num_heads": 16,
    "mlp_ratio": 4.0,
    "norm_im2_in_dec": True,
    "pos_embed": "cosine",
    "output_mode": "pts3d",
    "head_type": "linear",
    "depth_mode": ("exp", -math.inf, math.inf),
    "conf_mode": ("exp", 1.0, math.inf),
    "desc_mode": "norm",
    "two_confs": False,
    "desc_conf_mode": None,  # None: the official constructor uses conf_mode
}


def _omitted(key: str, given: dict) -> str:
    """' (the official default: the model string omits it)' when `key` was not given, else ''."""
    return "" if key in given else " (the official default: the model string omits it)"


@dataclass(frozen=True, kw_only=True)
class Mast3rConfig:
    """Architecture of an AsymmetricMASt3R network.

    The field defaults are the released ViT-L/ViT-B 512 checkpoint (``Mast3rConfig()``); a model string is
    read with the official constructor's defaults instead (:meth:`from_kwargs`, :data:`OFFICIAL_DEFAULTS`).
    """

    enc_embed_dim: int = 1024
    enc_depth: int = 24
    enc_num_heads: int = 16
    dec_embed_dim: int = 768
    dec_depth: int = 12  # > 9 (the DPT taps decoder layers [0, L/2, 3L/4, L])
    dec_num_heads: int = 12
    patch_size: int = 16
    mlp_ratio: float = 4.0
    rope_base: float = 100.0  # pos_embed='RoPE100'
    norm_im2_in_dec: bool = True  # LayerNorm of the other view's tokens in cross-attention (norm_y)
    desc_dim: int = 24  # output_mode='pts3d+desc24'
    desc_mode: str = "norm"
    two_confs: bool = True  # a separate descriptor-confidence channel
    depth_mode: tuple = ("exp", -math.inf, math.inf)
    conf_mode: tuple = ("exp", 1.0, math.inf)
    desc_conf_mode: tuple | None = ("exp", 0.0, math.inf)  # None: same as conf_mode (the official default)
    img_size: tuple = (512, 512)  # training resolution, informative only

    def __post_init__(self) -> None:
        if self.enc_embed_dim % self.enc_num_heads or self.dec_embed_dim % self.dec_num_heads:
            raise ValueError(
                f"embedding dims must be divisible by the head counts: enc {self.enc_embed_dim}/"
                f"{self.enc_num_heads}, dec {self.dec_embed_dim}/{self.dec_num_heads}"
            )
        for dim, heads in ((self.enc_embed_dim, self.enc_num_heads), (self.dec_embed_dim, self.dec_num_heads)):
            if (dim // heads) % 4:
                raise ValueError(f"RoPE-2D needs a head dim divisible by 4, got {dim}/{heads} = {dim // heads}")
        if self.dec_depth <= 9:
            raise ValueError(f"the catmlp+dpt head needs dec_depth > 9, got {self.dec_depth}")
        if self.desc_mode != "norm":
            raise ValueError(f"desc_mode {self.desc_mode!r} is not supported (only 'norm')")
        _check_mode("depth_mode", self.depth_mode, ("exp", "linear", "square"))
        _check_mode("conf_mode", self.conf_mode, ("exp", "sigmoid"))
        if self.desc_conf_mode is not None:
            _check_mode("desc_conf_mode", self.desc_conf_mode, ("exp", "sigmoid"))

    @property
    def dpt_hooks(self) -> tuple[int, int, int, int]:
        """Indices of the token list (0 = encoder, i = decoder block i) that feed the DPT."""
        L = self.dec_depth
        return (0, L * 2 // 4, L * 3 // 4, L)

    @classmethod
    def from_kwargs(cls, kwargs: dict) -> Mast3rConfig:
        """Config from the official constructor keywords (``pos_embed='RoPE100'``, ``output_mode=...``).

        A keyword that is absent takes the **official constructor's** default (:data:`OFFICIAL_DEFAULTS`),
        not this dataclass's (which describe the released checkpoint): a checkpoint whose model string
        omits an argument was built with the official default. Where that default is a configuration this
        module does not implement (``pos_embed='cosine'``, ``head_type='linear'``, ``output_mode='pts3d'``,
        ``dec_depth=8``), a ValueError says so; ``desc_conf_mode`` absent falls back to ``conf_mode``.
        """
        kw = {**OFFICIAL_DEFAULTS, **kwargs}
        out: dict = {}
        pos_embed = kw.pop("pos_embed")
        if not (isinstance(pos_embed, str) and pos_embed.startswith("RoPE")):
            raise ValueError(f"pos_embed={pos_embed!r}{_omitted('pos_embed', kwargs)} is not supported "
                             f"(only 'RoPE<base>', e.g. 'RoPE100')")
        out["rope_base"] = float(pos_embed[4:])
        head_type = kw.pop("head_type")
        if head_type != "catmlp+dpt":
            raise ValueError(f"head_type={head_type!r}{_omitted('head_type', kwargs)} is not supported "
                             f"(only 'catmlp+dpt', the MASt3R head)")
        output_mode = kw.pop("output_mode")
        if not (isinstance(output_mode, str) and output_mode.startswith("pts3d+desc")
                and output_mode[len("pts3d+desc"):].isdigit()):
            raise ValueError(f"output_mode={output_mode!r}{_omitted('output_mode', kwargs)} is not supported "
                             f"(expected 'pts3d+desc<D>')")
        out["desc_dim"] = int(output_mode[len("pts3d+desc"):])
        patch_embed_cls = kw.get("patch_embed_cls", "PatchEmbedDust3R")
        if patch_embed_cls not in ("PatchEmbedDust3R", "ManyAR_PatchEmbed"):
            raise ValueError(f"patch_embed_cls={patch_embed_cls!r} is not supported")
        size = kw["img_size"]
        out["img_size"] = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        for key in _IGNORED_KEYS:
            kw.pop(key, None)
        known = {f.name for f in fields(cls)} - {"rope_base", "desc_dim"}
        unknown = sorted(set(kw) - known)
        if unknown:
            raise ValueError(
                f"unknown MASt3R constructor argument(s) {unknown}; supported: "
                f"{sorted(known | {'pos_embed', 'head_type', 'output_mode', *_IGNORED_KEYS})}"
            )
        if "dec_depth" not in kwargs and kw["dec_depth"] <= 9:
            raise ValueError(f"the model string omits dec_depth, whose official default {kw['dec_depth']} is "
                             f"too shallow for the catmlp+dpt head (needs dec_depth > 9)")
        for key, value in kw.items():
            out[key] = tuple(value) if isinstance(value, list) else value
        return cls(**out)

    @classmethod
    def from_model_string(cls, model_str: str) -> Mast3rConfig:
        """Parse a checkpoint's ``args.model`` string, e.g. ``"AsymmetricMASt3R(pos_embed='RoPE100', ...)"``.

        The string is parsed with :mod:`ast`, never evaluated: only keyword arguments whose values are
        literals (numbers, strings, booleans, None, tuples/lists) and the names ``inf`` / ``-inf`` are
        accepted. Raises ValueError naming the offending part otherwise.
        """
        class_name, kwargs = parse_constructor_string(model_str)
        if class_name not in _MODEL_CLASSES:
            raise ValueError(f"model class {class_name!r} is not supported (expected one of {_MODEL_CLASSES})")
        return cls.from_kwargs(kwargs)


def _check_mode(name: str, mode, kinds: tuple[str, ...]) -> None:
    if not (isinstance(mode, tuple) and len(mode) == 3 and mode[0] in kinds):
        raise ValueError(f"{name}={mode!r} is not supported: expected (kind, vmin, vmax) with kind in {kinds}")
    if name == "depth_mode" and (mode[1] != -math.inf or mode[2] != math.inf):
        raise ValueError(f"depth_mode={mode!r}: only unbounded depth (vmin=-inf, vmax=inf) is supported")


def parse_constructor_string(text: str) -> tuple[str, dict]:
    """``"Name(a=1, b=('exp', -inf, inf))"`` -> ``("Name", {"a": 1, "b": ("exp", -inf, inf)})`` without eval."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"cannot parse model string {text!r}: {exc}") from None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise ValueError(f"model string must be a call like 'AsymmetricMASt3R(...)', got {text!r}")
    if call.args:
        raise ValueError(f"model string {text!r} has positional arguments; only keyword arguments are supported")
    kwargs = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise ValueError(f"model string {text!r} uses **kwargs expansion, which is not supported")
        kwargs[kw.arg] = _literal(kw.value, kw.arg)
    return call.func.id, kwargs


def _literal(node: ast.AST, key: str):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, ast.Name) and node.id == "inf":
        return math.inf
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand, key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_literal(e, key) for e in node.elts)
    raise ValueError(f"value of {key!r} in the model string is not a literal: {ast.unparse(node)!r}")


# ---------------------------------------------------------------------------------------------------
# 2. Patch embedding and RoPE-2D
# ---------------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Non-overlapping 16x16 patches -> tokens, plus their (y, x) grid positions. No absolute position."""

    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """img (B, 3, H, W) in [-1, 1] -> tokens (B, N, C), positions (B, N, 2) int64 (row, col)."""
        B, _, H, W = img.shape
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f"image size {H}x{W} (HxW) is not a multiple of the patch size {p}")
        x = self.proj(img).flatten(2).transpose(1, 2)
        pos = patch_positions(H // p, W // p, img.device).unsqueeze(0).expand(B, -1, -1)
        return x, pos


def patch_positions(h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(h*w, 2) int64 token positions (y, x) in row-major token order."""
    ys = torch.arange(h, device=device).repeat_interleave(w)
    xs = torch.arange(w, device=device).repeat(h)
    return torch.stack([ys, xs], dim=-1)


class RoPE2D(nn.Module):
    """2-D rotary position embedding: the first half of a head vector turns with the token's row, the
    second half with its column, each by the "rotate-half" rule with frequencies 1 / base^(2j/m)."""

    def __init__(self, head_dim: int, base: float = 100.0):
        super().__init__()
        self.head_dim, self.base = head_dim, base
        self.register_buffer("inv_freq", self._frequencies(), persistent=False)  # (head_dim / 4,)

    def _frequencies(self, device=None) -> torch.Tensor:
        m = self.head_dim // 2  # size of each (y or x) half
        # Always computed on the CPU (also when the model is built on the meta device), then moved.
        inv_freq = 1.0 / (self.base ** (torch.arange(0, m, 2, device="cpu").float() / m))
        return inv_freq if device is None else inv_freq.to(device)

    def reset_constants(self) -> None:
        """Recompute the frequencies in place (after ``Module.to_empty``, which leaves buffers undefined)."""
        self.inv_freq = self._frequencies(self.inv_freq.device)

    def forward(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pos (B, N, 2) int64 (y, x) -> cos, sin (B, 1, N, head_dim) float32 to pass to :func:`apply_rope`."""
        angles = pos.to(self.inv_freq.dtype).unsqueeze(-1) * self.inv_freq  # (B, N, 2, m/2)
        angles = torch.cat([angles, angles], dim=-1)  # (B, N, 2, m): [θ, θ] per half
        angles = angles.flatten(-2).unsqueeze(1)  # (B, 1, N, 2m) = [y half | x half]
        return angles.cos(), angles.sin()


def apply_rope(t: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate t (B, heads, N, d) with (cos, sin) (B, 1, N, d) from :class:`RoPE2D`."""
    cos, sin = rope
    q0, q1, q2, q3 = t.chunk(4, dim=-1)  # y half = [q0, q1], x half = [q2, q3]
    rotated = torch.cat([-q1, q0, -q3, q2], dim=-1)
    return t * cos.to(t.dtype) + rotated * sin.to(t.dtype)


# ---------------------------------------------------------------------------------------------------
# 3. Transformer blocks: encoder (self-attention) and decoder (self + cross-attention)
# ---------------------------------------------------------------------------------------------------


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2."""

    def __init__(self, dim: int, hidden: int, out: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SelfAttention(nn.Module):
    """Multi-head self-attention with RoPE on q and k; one fused ``qkv`` projection laid out [q | k | v]."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(apply_rope(q, rope), apply_rope(k, rope), v)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class CrossAttention(nn.Module):
    """Queries from one view, keys/values from the other; q turns with its own positions, k with the other's."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.projq = nn.Linear(dim, dim)
        self.projk = nn.Linear(dim, dim)
        self.projv = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, y, rope_x, rope_y) -> torch.Tensor:
        """x (B, Nx, C) queries, y (B, Ny, C) keys and values."""
        B, Nx, C = x.shape
        Ny = y.shape[1]
        H, d = self.num_heads, C // self.num_heads
        q = self.projq(x).reshape(B, Nx, H, d).transpose(1, 2)
        k = self.projk(y).reshape(B, Ny, H, d).transpose(1, 2)
        v = self.projv(y).reshape(B, Ny, H, d).transpose(1, 2)
        out = F.scaled_dot_product_attention(apply_rope(q, rope_x), apply_rope(k, rope_y), v)
        return self.proj(out.transpose(1, 2).reshape(B, Nx, C))


class EncoderBlock(nn.Module):
    """Pre-norm ViT block: x + attn(LN(x)); x + mlp(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, rope) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """Self-attention on the own view, cross-attention to the other view (normalised by ``norm_y``), MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, norm_other: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_y = nn.LayerNorm(dim, eps=1e-6) if norm_other else nn.Identity()

    def forward(self, x, y, rope_x, rope_y) -> torch.Tensor:
        """x (B, Nx, C) own tokens, y (B, Ny, C) the other view's tokens (from the previous layer)."""
        x = x + self.attn(self.norm1(x), rope_x)
        x = x + self.cross_attn(self.norm2(x), self.norm_y(y), rope_x, rope_y)
        return x + self.mlp(self.norm3(x))


# ---------------------------------------------------------------------------------------------------
# 4. Heads: DPT (points + confidence) and local-feature MLP (descriptors + descriptor confidence)
# ---------------------------------------------------------------------------------------------------

DPT_LAYER_DIMS = (96, 192, 384, 768)  # fixed by the official head, whatever the transformer widths
DPT_FEATURE_DIM = 256
DPT_LAST_DIM = 128


class ResidualConvUnit(nn.Module):
    """t + conv2(relu(conv1(relu(t))))."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return t + self.conv2(F.relu(self.conv1(F.relu(t))))


class FusionBlock(nn.Module):
    """out_conv(up2(RCU2(coarse + RCU1(skip)))); without a skip: out_conv(up2(RCU2(coarse)))."""

    def __init__(self, ch: int):
        super().__init__()
        self.out_conv = nn.Conv2d(ch, ch, 1)  # registered first, as in the official key order
        self.resConfUnit1 = ResidualConvUnit(ch)
        self.resConfUnit2 = ResidualConvUnit(ch)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            coarse = coarse + self.resConfUnit1(skip)
        out = self.resConfUnit2(coarse)
        out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(out)


class DPTScratch(nn.Module):
    """Per-level 3x3 projections to 256 channels and the four fusion blocks.

    ``layer{i}_rn`` and ``layer_rn[i-1]`` are the same convolution under two names (official layout).
    """

    def __init__(self):
        super().__init__()
        convs = [nn.Conv2d(c, DPT_FEATURE_DIM, 3, padding=1, bias=False) for c in DPT_LAYER_DIMS]
        self.layer1_rn, self.layer2_rn, self.layer3_rn, self.layer4_rn = convs
        self.layer_rn = nn.ModuleList(convs)
        self.refinenet1 = FusionBlock(DPT_FEATURE_DIM)
        self.refinenet2 = FusionBlock(DPT_FEATURE_DIM)
        self.refinenet3 = FusionBlock(DPT_FEATURE_DIM)
        self.refinenet4 = FusionBlock(DPT_FEATURE_DIM)


class DPT(nn.Module):
    """Dense prediction from four token maps (encoder + decoder layers 6, 9, 12) -> (B, 4, H, W)."""

    def __init__(self, token_dims: tuple[int, int, int, int], hooks: tuple[int, ...], patch_size: int,
                 num_channels: int = 4):
        super().__init__()
        self.hooks = hooks
        self.patch_size = patch_size
        self.scratch = DPTScratch()
        self.head = nn.Sequential(
            nn.Conv2d(DPT_FEATURE_DIM, DPT_FEATURE_DIM // 2, 3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(DPT_FEATURE_DIM // 2, DPT_LAST_DIM, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(DPT_LAST_DIM, num_channels, 1),
        )
        d0, d1, d2, d3 = DPT_LAYER_DIMS
        self.act_postprocess = nn.ModuleList([
            nn.Sequential(nn.Conv2d(token_dims[0], d0, 1), nn.ConvTranspose2d(d0, d0, 4, stride=4)),  # 4h x 4w
            nn.Sequential(nn.Conv2d(token_dims[1], d1, 1), nn.ConvTranspose2d(d1, d1, 2, stride=2)),  # 2h x 2w
            nn.Sequential(nn.Conv2d(token_dims[2], d2, 1)),  # h x w
            nn.Sequential(nn.Conv2d(token_dims[3], d3, 1), nn.Conv2d(d3, d3, 3, stride=2, padding=1)),  # h/2
        ])

    def forward(self, tokens: list[torch.Tensor], H: int, W: int) -> torch.Tensor:
        h, w = H // self.patch_size, W // self.patch_size
        levels = []
        for i, hook in enumerate(self.hooks):
            t = tokens[hook]
            # (B, N, C) -> (B, C, h, w) as a strided view (channels-last memory), like the official code.
            t = t.reshape(t.shape[0], h, w, t.shape[-1]).permute(0, 3, 1, 2)
            levels.append(self.scratch.layer_rn[i](self.act_postprocess[i](t)))
        l1, l2, l3, l4 = levels
        p4 = self.scratch.refinenet4(l4)[:, :, : l3.shape[2], : l3.shape[3]]  # odd h or w: crop
        p3 = self.scratch.refinenet3(p4, l3)
        p2 = self.scratch.refinenet2(p3, l2)
        p1 = self.scratch.refinenet1(p2, l1)
        return self.head(p1)


class LocalFeatureMLP(Mlp):
    """Per token: [encoder | last decoder] features -> a 16x16 patch of (desc_dim + 1) channels."""


class Mast3rHead(nn.Module):
    """``catmlp+dpt`` head of one view: DPT (x, y, z, conf) + MLP (desc, desc_conf), then conversions."""

    def __init__(self, cfg: Mast3rConfig):
        super().__init__()
        self.cfg = cfg
        dec = cfg.dec_embed_dim
        self.dpt = DPT((cfg.enc_embed_dim, dec, dec, dec), cfg.dpt_hooks, cfg.patch_size)
        cat_dim = cfg.enc_embed_dim + dec
        out_dim = (cfg.desc_dim + int(cfg.two_confs)) * cfg.patch_size**2
        self.head_local_features = LocalFeatureMLP(cat_dim, 4 * cat_dim, out_dim)

    def forward(self, tokens: list[torch.Tensor], H: int, W: int, points: bool = True) -> dict[str, torch.Tensor]:
        """tokens: the view's 13-entry list [encoder, decoder 1..L-1, dec_norm(decoder L)] (B, N, C_i).

        ``points=False`` returns only ``desc`` and ``desc_conf`` and skips the DPT (the costly half of the
        head) — unless ``two_confs`` is False, where ``desc_conf`` is the DPT's ``conf`` and the DPT runs.
        """
        B = tokens[0].shape[0]
        p = self.cfg.patch_size
        local = self.head_local_features(torch.cat([tokens[0], tokens[-1]], dim=-1))  # (B, N, (D+1)*p*p)
        local = F.pixel_shuffle(local.transpose(-1, -2).reshape(B, -1, H // p, W // p), p)  # (B, D+1, H, W)
        if not points and self.cfg.two_confs:
            return postprocess_local(local, self.cfg)
        dpt = self.dpt(tokens, H, W)  # (B, 4, H, W)
        res = postprocess(torch.cat([dpt, local], dim=1), self.cfg)
        return res if points else {"desc": res["desc"], "desc_conf": res["desc_conf"]}


def postprocess(out: torch.Tensor, cfg: Mast3rConfig) -> dict[str, torch.Tensor]:
    """Raw head map (B, 4 + D + two_confs, H, W) -> the output dict (see :meth:`Mast3rNetwork.forward`)."""
    fmap = out.permute(0, 2, 3, 1)
    res = {"pts3d": _dense_depth(fmap[..., 0:3], cfg.depth_mode), "conf": _dense_conf(fmap[..., 3], cfg.conf_mode)}
    if cfg.two_confs:
        res.update(postprocess_local(out[:, 4:], cfg))
    else:  # one confidence for both
        desc = fmap[..., 4:]
        res["desc"] = desc / desc.norm(dim=-1, keepdim=True)
        res["desc_conf"] = res["conf"].clone()
    return res


def postprocess_local(local: torch.Tensor, cfg: Mast3rConfig) -> dict[str, torch.Tensor]:
    """Raw local-feature map (B, D + 1, H, W) of a ``two_confs`` head -> ``desc`` (B, H, W, D) unit norm,
    ``desc_conf`` (B, H, W)."""
    fmap = local.permute(0, 2, 3, 1)
    D = cfg.desc_dim
    desc = fmap[..., :D]
    return {
        "desc": desc / desc.norm(dim=-1, keepdim=True),
        "desc_conf": _dense_conf(fmap[..., D], cfg.desc_conf_mode or cfg.conf_mode),
    }


def _dense_depth(xyz: torch.Tensor, mode: tuple) -> torch.Tensor:
    """Keep the direction, map the norm r: 'exp' -> expm1(r), 'square' -> r^2, 'linear' -> r."""
    if mode[0] == "linear":
        return xyz
    r = xyz.norm(dim=-1, keepdim=True)
    xyz = xyz / r.clip(min=1e-8)
    return xyz * (torch.expm1(r) if mode[0] == "exp" else r.square())


def _dense_conf(x: torch.Tensor, mode: tuple) -> torch.Tensor:
    kind, vmin, vmax = mode
    if kind == "exp":
        return vmin + x.exp().clip(max=vmax - vmin)
    return (vmax - vmin) * torch.sigmoid(x) + vmin  # 'sigmoid'


# ---------------------------------------------------------------------------------------------------
# 5. The network
# ---------------------------------------------------------------------------------------------------


class Mast3rNetwork(nn.Module):
    """AsymmetricMASt3R: shared ViT encoder, two cross-attending decoders, one catmlp+dpt head per view.

    The forward can also be run in pieces, which :mod:`sfm3r.sfm.mast3r.inference` uses to encode each
    image once: :meth:`encode` -> :meth:`decode` -> :meth:`heads`.
    """

    def __init__(self, cfg: Mast3rConfig | None = None):
        super().__init__()
        cfg = cfg or Mast3rConfig()
        self.cfg = cfg
        enc, dec = cfg.enc_embed_dim, cfg.dec_embed_dim
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec))  # unused at inference; in the checkpoint
        self.patch_embed = PatchEmbed(cfg.patch_size, enc)
        self.enc_blocks = nn.ModuleList(
            [EncoderBlock(enc, cfg.enc_num_heads, cfg.mlp_ratio) for _ in range(cfg.enc_depth)]
        )
        self.enc_norm = nn.LayerNorm(enc, eps=1e-6)
        self.decoder_embed = nn.Linear(enc, dec)
        self.dec_blocks = nn.ModuleList(
            [DecoderBlock(dec, cfg.dec_num_heads, cfg.mlp_ratio, cfg.norm_im2_in_dec) for _ in range(cfg.dec_depth)]
        )
        self.dec_norm = nn.LayerNorm(dec, eps=1e-6)
        self.dec_blocks2 = nn.ModuleList(
            [DecoderBlock(dec, cfg.dec_num_heads, cfg.mlp_ratio, cfg.norm_im2_in_dec) for _ in range(cfg.dec_depth)]
        )
        self.downstream_head1 = Mast3rHead(cfg)
        self.downstream_head2 = Mast3rHead(cfg)
        self.rope_enc = RoPE2D(enc // cfg.enc_num_heads, cfg.rope_base)
        self.rope_dec = RoPE2D(dec // cfg.dec_num_heads, cfg.rope_base)

    @classmethod
    def from_model_string(cls, model_str: str) -> Mast3rNetwork:
        return cls(Mast3rConfig.from_model_string(model_str))

    def reset_constants(self) -> None:
        """Recompute the non-persistent buffers (RoPE frequencies), e.g. after building on the ``meta``
        device and ``to_empty``: the fast way to make a model whose weights come from a checkpoint."""
        for module in self.modules():
            if isinstance(module, RoPE2D):
                module.reset_constants()

    # -- pieces -------------------------------------------------------------------------------------

    def encode(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """img (B, 3, H, W) -> encoder tokens (B, N, C_enc) after enc_norm, positions (B, N, 2) int64."""
        x, pos = self.patch_embed(img)
        rope = self.rope_enc(pos)
        for blk in self.enc_blocks:
            x = blk(x, rope)
        return self.enc_norm(x), pos

    def decode(self, enc1, pos1, enc2, pos2) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Encoder tokens of both views -> the two token lists handed to the heads.

        Each list has dec_depth + 1 entries: [encoder output, decoder blocks 1..L-1, dec_norm(block L)].
        View 1 runs ``dec_blocks``, view 2 ``dec_blocks2``; layer i reads both views' layer i-1 tokens.
        """
        rope1, rope2 = self.rope_dec(pos1), self.rope_dec(pos2)
        x1, x2 = self.decoder_embed(enc1), self.decoder_embed(enc2)
        out1, out2 = [enc1], [enc2]
        for blk1, blk2 in zip(self.dec_blocks, self.dec_blocks2):
            x1, x2 = blk1(x1, x2, rope1, rope2), blk2(x2, x1, rope2, rope1)
            out1.append(x1)
            out2.append(x2)
        out1[-1], out2[-1] = self.dec_norm(out1[-1]), self.dec_norm(out2[-1])
        return out1, out2

    def heads(self, tokens1, tokens2, shape1: tuple[int, int], shape2: tuple[int, int], *,
              view2_points: bool = True):
        """Token lists -> (res1, res2) raw head outputs (both with key ``pts3d``), always in float32.

        ``view2_points=False``: res2 holds only ``desc`` and ``desc_conf`` (no ``pts3d``/``conf``), and the
        DPT of head 2 (most of the head's cost) is skipped — what matching and SfM need.
        """
        with torch.autocast(tokens1[0].device.type, enabled=False):
            res1 = self.downstream_head1([t.float() for t in tokens1], *shape1)
            if view2_points or not self.cfg.two_confs:
                tokens2 = [t.float() for t in tokens2]
            else:  # no DPT: the MLP reads only the encoder and last decoder tokens
                tokens2 = [tokens2[0].float(), *tokens2[1:-1], tokens2[-1].float()]
            res2 = self.downstream_head2(tokens2, *shape2, points=view2_points)
        return res1, res2

    def decode_and_heads(self, enc1, pos1, shape1, enc2, pos2, shape2, *, view2_points: bool = True):
        """Encoder tokens of view 1 and view 2 -> (res1, res2); res2 keeps the key ``pts3d`` (in view 1's
        frame), as in MASt3R-SfM's symmetric inference. ``view2_points=False``: see :meth:`heads`."""
        tokens1, tokens2 = self.decode(enc1, pos1, enc2, pos2)
        return self.heads(tokens1, tokens2, shape1, shape2, view2_points=view2_points)

    # -- full forward -------------------------------------------------------------------------------

    def forward(self, view1: dict, view2: dict) -> tuple[dict, dict]:
        """Official-compatible forward.

        Args:
            view1, view2: dicts with ``img`` (B, 3, H_v, W_v) float32 in [-1, 1] and optionally
                ``true_shape`` (B, 2) int (H, W) per sample, which must equal the image size.
        Returns:
            res1: ``pts3d`` (B, H1, W1, 3) view-1 points in view-1's camera frame; ``conf`` (B, H1, W1) >= 1;
                ``desc`` (B, H1, W1, D) unit norm; ``desc_conf`` (B, H1, W1) > 0.
            res2: ``conf``, ``desc``, ``desc_conf`` as above at (H2, W2), and ``pts3d_in_other_view``
                (B, H2, W2, 3): view-2 points in view-1's camera frame.
        """
        shape1, shape2 = _view_shape(view1, "view1"), _view_shape(view2, "view2")
        img1, img2 = view1["img"], view2["img"]
        if shape1 == shape2:  # one encoder pass on the stacked views (same numbers, fewer launches)
            enc, pos = self.encode(torch.cat([img1, img2]))
            B = img1.shape[0]
            (enc1, enc2), (pos1, pos2) = enc.split(B), pos.split(B)
        else:
            (enc1, pos1), (enc2, pos2) = self.encode(img1), self.encode(img2)
        res1, res2 = self.decode_and_heads(enc1, pos1, shape1, enc2, pos2, shape2)
        res2["pts3d_in_other_view"] = res2.pop("pts3d")
        return res1, res2


def _view_shape(view: dict, name: str) -> tuple[int, int]:
    img = view["img"]
    if img.ndim != 4 or img.shape[1] != 3:
        raise ValueError(f"{name}['img'] must be (B, 3, H, W), got {tuple(img.shape)}")
    H, W = int(img.shape[2]), int(img.shape[3])
    true_shape = view.get("true_shape")
    if true_shape is not None:
        ts = torch.as_tensor(true_shape).reshape(-1, 2)
        if not bool((ts[:, 0] == H).all() and (ts[:, 1] == W).all()):
            raise ValueError(
                f"{name}['true_shape'] {ts.tolist()} must equal the image size ({H}, {W}) for every sample"
            )
    return H, W
