"""Pairwise MASt3R inference that encodes every image once.

The official pipelines run the ViT-L encoder on both images of every pair (MASt3R-SfM's symmetric
inference: encode both, decode 1->2 and 2->1). With a retrieval graph of ~10 pairs per image that repeats
each encoder pass ~20 times. :class:`PairInference` instead

1. encodes each image once (images of equal size batched together) and keeps its encoder tokens in a
   *token store* — any ``MutableMapping[str, EncodedImage]``; the default :class:`LRUTokenStore` is an
   in-memory dict bounded by a number of images, and a pipeline may pass a mapping that spills to its
   cache. Tokens missing from the store are re-encoded on demand when an ``image_source`` callback is
   given (so a bounded store never fails), else a KeyError names the image;
2. decodes pairs in batches: pairs whose images have the same (unordered) pair of token shapes share a
   decoder call, and both directions i->j and j->i are computed for every pair (stacked into one call
   when both images have the same shape);
3. runs under ``torch.inference_mode``; on CUDA optionally under bf16/fp16 autocast (the heads always run
   in float32, as in the official model); on the CPU always float32.

Results equal the plain per-pair ``model(view1, view2)`` forward up to float rounding (tested at
``|got - ref| <= 1e-4 (1 + |ref|)``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from sfm3r.sfm.mast3r.network import Mast3rNetwork

logger = logging.getLogger(__name__)

ImageInput = tuple[torch.Tensor, object]  # (img (1, 3, H, W) float32 in [-1, 1], true_shape (1, 2) (H, W) or None)
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True, eq=False)
class EncodedImage:
    """One image's encoder output, the only per-image state the decoders need."""

    tokens: torch.Tensor  # (N, C_enc) encoder output after enc_norm (float32, or the autocast dtype)
    pos: torch.Tensor  # (N, 2) int64 token positions (y, x)
    shape: tuple[int, int]  # (H, W) network input size in pixels


class LRUTokenStore(MutableMapping):
    """In-memory token store that forgets the least recently used image beyond ``max_images``.

    A 512x384 image holds 768 x 1024 float32 tokens (3 MiB).
    """

    def __init__(self, max_images: int = 512):
        if max_images < 2:
            raise ValueError(f"max_images must be >= 2 (a pair needs two images), got {max_images}")
        self.max_images = max_images
        self._items: OrderedDict[str, EncodedImage] = OrderedDict()

    def __getitem__(self, name: str) -> EncodedImage:
        item = self._items[name]
        self._items.move_to_end(name)
        return item

    def __setitem__(self, name: str, item: EncodedImage) -> None:
        self._items[name] = item
        self._items.move_to_end(name)
        while len(self._items) > self.max_images:
            evicted, _ = self._items.popitem(last=False)
            logger.debug("token store full: dropped %s", evicted)

    def __delitem__(self, name: str) -> None:
        del self._items[name]

    def __contains__(self, name: object) -> bool:  # no LRU update on membership tests
        return name in self._items

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


PairOutput = dict[str, dict[str, object]]


class PairInference:
    """Encode-once, batched, two-direction MASt3R pair inference.

    Args:
        model: the network (moved to ``device`` and set to eval mode).
        device: where to compute.
        batch_size: pairs per decoder call (both directions of each pair are computed in that call).
        amp: ``"bf16"`` / ``"fp16"`` autocast for encoder and decoders on CUDA; ignored (float32) on CPU.
        store: token store (default: ``LRUTokenStore(max_images)``).
        image_source: ``name -> (img, true_shape)``, used to (re-)encode images missing from the store.
        output: ``"numpy"`` (float32 arrays on the CPU) or ``"torch"`` (tensors on ``device``).
        view2_points: True (default): the full official output. False: each direction's ``view2`` holds
            only ``desc`` and ``desc_conf`` (no ``pts3d_in_other_view``, no ``conf``) and the DPT of the
            second head is skipped — all that matching/SfM reads from view 2, for 2 of the 4 DPT
            evaluations per pair less. Every output still produced is unchanged.
    """

    def __init__(
        self,
        model: Mast3rNetwork,
        device: str | torch.device = "cpu",
        batch_size: int = 4,
        amp: Literal["bf16", "fp16"] | None = None,
        *,
        store: MutableMapping[str, EncodedImage] | None = None,
        max_images: int = 512,
        image_source: Callable[[str], ImageInput] | None = None,
        output: Literal["numpy", "torch"] = "numpy",
        view2_points: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if amp not in (None, *AMP_DTYPES):
            raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
        if output not in ("numpy", "torch"):
            raise ValueError(f"output must be 'numpy' or 'torch', got {output!r}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.amp_dtype = AMP_DTYPES[amp] if (amp and self.device.type == "cuda") else None
        if amp and self.amp_dtype is None:
            logger.info("amp=%s ignored on %s: computing in float32", amp, self.device)
        self.store = LRUTokenStore(max_images) if store is None else store
        self.image_source = image_source
        self.output = output
        self.view2_points = view2_points
        self.num_encoded = 0  # encoder passes run so far (images)

    # -- encoding -----------------------------------------------------------------------------------

    def encode(self, images: Mapping[str, ImageInput]) -> dict[str, EncodedImage]:
        """Encode every image not yet in the store (images of equal size share encoder calls).

        images: name -> (img (1, 3, H, W) float32 in [-1, 1], true_shape (1, 2) int (H, W) or None).
        Returns the newly encoded images (they are also put in the store).
        """
        todo: dict[tuple[int, int], list[tuple[str, torch.Tensor]]] = {}
        for name, (img, true_shape) in images.items():
            if name in self.store:
                continue
            img = torch.as_tensor(img)
            if img.ndim != 4 or img.shape[0] != 1 or img.shape[1] != 3:
                raise ValueError(f"image {name!r}: expected a (1, 3, H, W) tensor, got {tuple(img.shape)}")
            shape = (int(img.shape[2]), int(img.shape[3]))
            if true_shape is not None and [int(v) for v in torch.as_tensor(true_shape).reshape(-1)] != list(shape):
                raise ValueError(f"image {name!r}: true_shape {true_shape} does not match the image size {shape}")
            todo.setdefault(shape, []).append((name, img))
        encoded = {}
        chunk = 2 * self.batch_size
        for shape, items in todo.items():
            for start in range(0, len(items), chunk):
                names, imgs = zip(*items[start : start + chunk])
                batch = torch.cat(imgs).to(self.device, torch.float32)
                with self._context():
                    tokens, pos = self.model.encode(batch)
                for k, name in enumerate(names):
                    encoded[name] = EncodedImage(tokens=tokens[k], pos=pos[k], shape=shape)
                    self.store[name] = encoded[name]
                self.num_encoded += len(names)
        return encoded

    def _encoded(self, names: Sequence[str]) -> list[EncodedImage]:
        found = {n: self.store[n] for n in dict.fromkeys(names) if n in self.store}
        missing = [n for n in dict.fromkeys(names) if n not in found]
        if missing:
            if self.image_source is None:
                raise KeyError(
                    f"no encoder tokens for {missing[:5]} ({len(missing)} image(s)): call encode() first, or "
                    f"give PairInference an image_source to re-encode images the token store dropped"
                )
            found.update(self.encode({n: self.image_source(n) for n in missing}))
        return [found[n] for n in names]

    # -- decoding -----------------------------------------------------------------------------------

    def run_pairs(self, pairs: Sequence[tuple[str, str]]) -> Iterator[tuple[str, str, PairOutput, PairOutput]]:
        """Decode every pair in both directions.

        Yields ``(name_i, name_j, out_ij, out_ji)`` once per input pair (batches are formed from pairs of
        equal shapes, so the order can differ from the input order). ``out_ij`` is the forward i -> j
        (view1 = image i, view2 = image j), ``out_ji`` the forward j -> i (view1 = j, view2 = i)::

            out_ij["view1"] = {"pts3d": (H_i, W_i, 3)  points of i in i's camera frame,
                               "conf": (H_i, W_i) >= 1, "desc": (H_i, W_i, D) unit norm,
                               "desc_conf": (H_i, W_i) > 0}
            out_ij["view2"] = {"pts3d_in_other_view": (H_j, W_j, 3)  points of j in i's camera frame,
                               "conf": (H_j, W_j), "desc": (H_j, W_j, D), "desc_conf": (H_j, W_j)}

        With ``view2_points=False``, ``view2`` has only ``desc`` and ``desc_conf``.

        All float32 (numpy on the CPU, or tensors on the device with ``output="torch"``); (H, W) is each
        image's network input size. Images are encoded on first use if they are not in the store.
        """
        buckets: dict[tuple, list[tuple[str, str, bool]]] = {}
        for name_i, name_j in pairs:
            if name_i == name_j:
                raise ValueError(f"pair ({name_i!r}, {name_j!r}) links an image to itself")
            enc_i, enc_j = self._encoded([name_i, name_j])
            key = tuple(sorted([enc_i.shape, enc_j.shape]))
            bucket = buckets.setdefault(key, [])
            # orient (a, b) so that a has the bucket's first shape; remember whether that swapped i and j
            swapped = enc_i.shape != key[0]
            bucket.append((name_j, name_i, True) if swapped else (name_i, name_j, False))
            if len(bucket) == self.batch_size:
                yield from self._decode_batch(buckets.pop(key))
        for bucket in buckets.values():
            yield from self._decode_batch(bucket)

    def _decode_batch(self, oriented: list[tuple[str, str, bool]]) -> Iterator:
        """Pairs (a, b, swapped): all a share one shape, all b another. Computes a->b and b->a."""
        a_enc = self._encoded([a for a, _, _ in oriented])
        b_enc = self._encoded([b for _, b, _ in oriented])
        dev = self.device  # a spilling store may hand tokens back on the CPU
        tok_a, pos_a = torch.stack([e.tokens for e in a_enc]).to(dev), torch.stack([e.pos for e in a_enc]).to(dev)
        tok_b, pos_b = torch.stack([e.tokens for e in b_enc]).to(dev), torch.stack([e.pos for e in b_enc]).to(dev)
        shape_a, shape_b = a_enc[0].shape, b_enc[0].shape
        n = len(oriented)
        with self._context():
            if shape_a == shape_b:  # one call for both directions
                v1, v2 = self.model.decode_and_heads(
                    torch.cat([tok_a, tok_b]), torch.cat([pos_a, pos_b]), shape_a,
                    torch.cat([tok_b, tok_a]), torch.cat([pos_b, pos_a]), shape_b,
                    view2_points=self.view2_points,
                )
                ab = ({k: v[:n] for k, v in v1.items()}, {k: v[:n] for k, v in v2.items()})
                ba = ({k: v[n:] for k, v in v1.items()}, {k: v[n:] for k, v in v2.items()})
            else:
                v2p = self.view2_points
                ab = self.model.decode_and_heads(tok_a, pos_a, shape_a, tok_b, pos_b, shape_b, view2_points=v2p)
                ba = self.model.decode_and_heads(tok_b, pos_b, shape_b, tok_a, pos_a, shape_a, view2_points=v2p)
        for k, (a, b, swapped) in enumerate(oriented):
            out_ab, out_ba = self._pair_output(ab, k), self._pair_output(ba, k)
            yield (b, a, out_ba, out_ab) if swapped else (a, b, out_ab, out_ba)

    def _pair_output(self, res: tuple[dict, dict], k: int) -> PairOutput:
        res1, res2 = res
        view1 = {key: self._convert(res1[key][k]) for key in ("pts3d", "conf", "desc", "desc_conf")}
        view2 = {"pts3d_in_other_view": self._convert(res2["pts3d"][k])} if "pts3d" in res2 else {}
        view2.update({key: self._convert(res2[key][k]) for key in ("conf", "desc", "desc_conf") if key in res2})
        return {"view1": view1, "view2": view2}

    def _convert(self, t: torch.Tensor):
        return t.float().cpu().numpy() if self.output == "numpy" else t

    def _context(self):
        return _InferenceContext(self.device.type, self.amp_dtype)


class _InferenceContext:
    """torch.inference_mode plus (on CUDA, if asked) autocast."""

    def __init__(self, device_type: str, amp_dtype: torch.dtype | None):
        self._modes = [torch.inference_mode()]
        if amp_dtype is not None:
            self._modes.append(torch.autocast(device_type, dtype=amp_dtype))

    def __enter__(self):
        for m in self._modes:
            m.__enter__()

    def __exit__(self, *exc):
        for m in reversed(self._modes):
            m.__exit__(*exc)
        return False
