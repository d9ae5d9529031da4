"""Distilled memories: learnable tensors that recall a labelled training set.

Three kinds, one small interface (``recall``, ``dataset``, ``nbytes``, ``save``/``load``):

* :class:`SyntheticImages` — ``ipc`` learnable images per class (the standard
  dataset-distillation representation, the baseline);
* :class:`QuantizedImages` — synthetic images stored as uint8 codes with one float32
  scale and offset for the whole memory (post-training quantisation of a
  :class:`SyntheticImages`; not learnable, recall dequantises);
* :class:`AddressableMemory` — K shared bases with the image's shape (optionally
  stored downsampled, bilinearly upsampled on recall) and r addressing matrices
  A_i in R^{d_y x K}; recall is Eq. 2 of "Remember the Past" (Sec. 4.1);
* :class:`QuantizedAddressable` — an addressable memory stored as uint8 codes, one
  (scale, offset) for the bases and one for the addressing matrices (post-training
  quantisation, as ``QuantizedImages``; recall dequantises and applies Eq. 2).

Both live in the network's *input* space (normalised floats), so a recalled batch
feeds a network directly; ``mean``/``std`` are kept to turn them back into pixels.

File format (``save``/``load``): one ``torch.save`` of a plain dict that loads with
``torch.load(path, weights_only=True)``::

    {"format": "memdistill.memory", "version": 1, "kind": "images" | "addressable",
     "tensors": {name: float32 tensor, ...},     # the learnable parameters
     "meta": {"image_shape": [C, H, W], "num_classes": int, "mean": [...], "std": [...],
              ... kind-specific ints ...}}

``images``: tensors ``images`` (N, C, H, W) and ``labels`` (N,) int64.
``images-uint8``: tensors ``codes`` (N, C, H, W) uint8, ``labels`` (N,) int64, ``scale`` and
``offset`` (1,) float32; an image is ``codes * scale + offset``.
``addressable``: tensors ``bases`` (K, C, H/ds, W/ds) and ``addressing`` (r, d_y, K);
meta ``downsample`` (ds).  ``addressable-uint8``: tensors ``base_codes`` and
``addressing_codes`` uint8 of those shapes, ``base_scale``, ``base_offset``,
``addressing_scale``, ``addressing_offset`` (1,) float32; meta as ``addressable``.
``nbytes`` counts the stored tensors only (what Eq. 4 budgets).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

FORMAT = "memdistill.memory"
VERSION = 1


class MemoryFileError(ValueError):
    """A file that is not a memory this version can read."""


class DistilledMemory(nn.Module):
    """What every distilled memory offers: recall by label, its bytes, a file."""

    kind = "memory"

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int,
                 mean: tuple[float, ...] = (0.0,), std: tuple[float, ...] = (1.0,)):
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_classes = int(num_classes)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    # -- recall -----------------------------------------------------------------
    def recall(self, classes) -> tuple[torch.Tensor, torch.Tensor]:
        """Every stored sample of the given classes: (images (n, C, H, W), labels (n,))."""
        raise NotImplementedError

    def dataset(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole recalled training set (all classes)."""
        return self.recall(range(self.num_classes))

    @property
    def nbytes(self) -> int:
        """Bytes of the stored tensors (float32 parameters; labels are implied by position
        for ``images`` but counted, as a buffer would count them)."""
        return sum(t.numel() * t.element_size() for t in self._stored_tensors().values())

    def to_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Input-space images back to [0, 1] pixels (for pictures)."""
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.mean, device=images.device).reshape(shape)
        std = torch.tensor(self.std, device=images.device).reshape(shape)
        return (images * std + mean).clamp(0, 1)

    # -- file format --------------------------------------------------------------
    def _stored_tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _meta(self) -> dict:
        return {"image_shape": list(self.image_shape), "num_classes": self.num_classes,
                "mean": list(self.mean), "std": list(self.std)}

    def to_file_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "kind": self.kind,
                "tensors": {k: v.detach().cpu().clone() for k, v in self._stored_tensors().items()},
                "meta": self._meta()}

    def save(self, path: str | Path) -> Path:
        from memdistill.results import atomic_torch_save
        path = Path(path)
        atomic_torch_save(self.to_file_dict(), path)
        return path

    @classmethod
    def from_file_dict(cls, data: dict) -> "DistilledMemory":
        raise NotImplementedError


class SyntheticImages(DistilledMemory):
    """Learnable images with fixed labels (``ipc`` per class, class-major order)."""

    kind = "images"

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                 mean=(0.0,), std=(1.0,)):
        super().__init__(tuple(images.shape[1:]), num_classes, mean, std)
        self.images = nn.Parameter(images.detach().float().clone())
        self.register_buffer("labels", labels.detach().long().clone())

    @classmethod
    def from_real(cls, images: torch.Tensor, labels: torch.Tensor, ipc: int, num_classes: int,
                  generator: torch.Generator, mean=(0.0,), std=(1.0,)) -> "SyntheticImages":
        """``ipc`` random real images per class (input-space floats) as the starting point."""
        picked, picked_labels = sample_per_class(images, labels, ipc, num_classes, generator)
        return cls(picked, picked_labels, num_classes, mean, std)

    @classmethod
    def random(cls, image_shape, ipc: int, num_classes: int, generator: torch.Generator,
               mean=(0.0,), std=(1.0,)) -> "SyntheticImages":
        images = torch.randn((ipc * num_classes, *image_shape), generator=generator)
        labels = torch.arange(num_classes).repeat_interleave(ipc)
        return cls(images, labels, num_classes, mean, std)

    def recall(self, classes):
        classes = torch.as_tensor(list(classes), dtype=torch.long, device=self.labels.device)
        keep = torch.isin(self.labels, classes)
        return self.images[keep], self.labels[keep]

    def _stored_tensors(self):
        return {"images": self.images, "labels": self.labels}

    @classmethod
    def from_file_dict(cls, data):
        t, m = data["tensors"], data["meta"]
        return cls(t["images"], t["labels"], m["num_classes"], m["mean"], m["std"])


def quantise_uint8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Min-max quantisation of every entry of ``x`` to 256 levels: (codes, scale, offset),
    x ~ codes * scale + offset, with an error of at most scale / 2 per entry."""
    x = x.detach().float()
    low, high = x.min(), x.max()
    scale = (high - low) / 255 if high > low else torch.ones((), device=x.device)
    codes = ((x - low) / scale).round().clamp(0, 255).to(torch.uint8)
    return codes, scale, low


class QuantizedImages(DistilledMemory):
    """Synthetic images kept as uint8: x = codes * scale + offset, one (scale, offset) per memory.

    ``nbytes`` = N*C*H*W (codes) + 8 N (int64 labels) + 8 (scale, offset): a quarter of the
    float32 images' bytes, for a rounding error of at most scale / 2 per pixel."""

    kind = "images-uint8"

    def __init__(self, codes: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor,
                 num_classes: int, mean=(0.0,), std=(1.0,)):
        if codes.dtype != torch.uint8:
            raise ValueError(f"codes must be uint8 (got {codes.dtype})")
        super().__init__(tuple(codes.shape[1:]), num_classes, mean, std)
        self.register_buffer("codes", codes.detach().clone())
        self.register_buffer("labels", labels.detach().long().clone())
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).reshape(1).clone())
        self.register_buffer("offset", torch.as_tensor(offset, dtype=torch.float32).reshape(1).clone())

    @classmethod
    def quantise(cls, memory: SyntheticImages) -> "QuantizedImages":
        """Min-max quantisation of every pixel of ``memory`` to 256 levels."""
        codes, scale, low = quantise_uint8(memory.images)
        return cls(codes, memory.labels, scale, low, memory.num_classes, memory.mean, memory.std)

    def images(self) -> torch.Tensor:
        """The dequantised images (input space, float32)."""
        return self.codes.float() * self.scale.reshape(1, 1, 1, 1) + self.offset.reshape(1, 1, 1, 1)

    def recall(self, classes):
        classes = torch.as_tensor(list(classes), dtype=torch.long, device=self.labels.device)
        keep = torch.isin(self.labels, classes)
        return self.images()[keep], self.labels[keep]

    def _stored_tensors(self):
        return {"codes": self.codes, "labels": self.labels, "scale": self.scale, "offset": self.offset}

    @classmethod
    def from_file_dict(cls, data):
        t, m = data["tensors"], data["meta"]
        return cls(t["codes"], t["labels"], t["scale"], t["offset"], m["num_classes"], m["mean"], m["std"])


class AddressableMemory(DistilledMemory):
    """K bases b_k and r addressing matrices A_i (Sec. 4.1).

    Recall with a query y (one-hot label, or any vector in R^{d_y}):
    x'_i = y^T A_i [b_0; ...; b_{K-1}]^T  for i = 0..r-1   (Eq. 2),
    so each label recalls r images.  Bases are stored at (H/ds, W/ds) and
    upsampled bilinearly to (H, W) on recall (the paper's "spatial redundancies").
    """

    kind = "addressable"

    def __init__(self, bases: torch.Tensor, addressing: torch.Tensor, image_shape,
                 downsample: int = 1, mean=(0.0,), std=(1.0,)):
        r, d_y, k = addressing.shape
        if bases.shape[0] != k:
            raise ValueError(f"{bases.shape[0]} bases but addressing matrices have {k} columns")
        super().__init__(tuple(image_shape), d_y, mean, std)
        self.downsample = int(downsample)
        self.bases = nn.Parameter(bases.detach().float().clone())          # (K, C, h, w)
        self.addressing = nn.Parameter(addressing.detach().float().clone())  # (r, d_y, K)

    @property
    def num_bases(self) -> int:
        return self.bases.shape[0]

    @property
    def recalls_per_query(self) -> int:
        return self.addressing.shape[0]

    @classmethod
    def initialise(cls, image_shape, num_classes: int, num_bases: int, recalls: int,
                   downsample: int, generator: torch.Generator, mean=(0.0,), std=(1.0,)
                   ) -> "AddressableMemory":
        """Xavier-uniform bases and coefficients (as the public code initialises both)."""
        c, h, w = image_shape
        hb, wb = _stored_size(h, downsample), _stored_size(w, downsample)
        flat = c * hb * wb
        bound_b = math.sqrt(6.0 / (num_bases + flat))
        bound_a = math.sqrt(6.0 / (recalls * num_classes + num_bases))
        bases = (torch.rand((num_bases, c, hb, wb), generator=generator) * 2 - 1) * bound_b
        addressing = (torch.rand((recalls, num_classes, num_bases), generator=generator) * 2 - 1) * bound_a
        return cls(bases, addressing, image_shape, downsample, mean, std)

    @classmethod
    def from_real(cls, images: torch.Tensor, labels: torch.Tensor, num_classes: int, num_bases: int,
                  recalls: int, downsample: int, generator: torch.Generator, mean=(0.0,), std=(1.0,),
                  jitter: float = 0.01) -> "AddressableMemory":
        """Bases = random real images (input space), downsampled, assigned to classes
        round-robin (base k belongs to class k mod C); A_i routes recall i of class c to
        the (i mod n_c)-th base of c, plus uniform noise of size ``jitter``.  At the start
        every recall is a (down- then up-sampled) real image of its class — the paper's
        special case "images as bases with hard-coded 0/1 addressing" (Sec. 4.1); with
        fewer bases than classes, the classes left without one start from their mean."""
        c, h, w = images.shape[1:]
        owner = [k % num_classes for k in range(num_bases)]
        counts = [owner.count(cl) for cl in range(num_classes)]
        picked, _ = sample_per_class(images, labels, max(counts), num_classes, generator)
        per_class = picked.reshape(num_classes, max(counts), c, h, w)
        rank = [owner[:k].count(owner[k]) for k in range(num_bases)]
        bases = torch.stack([per_class[owner[k], rank[k]] for k in range(num_bases)])
        hb, wb = _stored_size(h, downsample), _stored_size(w, downsample)
        if (hb, wb) != (h, w):
            bases = F.interpolate(bases, size=(hb, wb), mode="bilinear", align_corners=False, antialias=True)
        addressing = (torch.rand((recalls, num_classes, num_bases), generator=generator) * 2 - 1) * jitter
        for cl in range(num_classes):
            mine = [k for k in range(num_bases) if owner[k] == cl]
            if not mine:          # fewer bases than classes: start from the mean of all bases
                addressing[:, cl, :] += 1.0 / num_bases
                continue
            for i in range(recalls):
                addressing[i, cl, mine[i % len(mine)]] += 1.0
        return cls(bases, addressing, (c, h, w), downsample, mean, std)

    def full_resolution_bases(self) -> torch.Tensor:
        """The bases at the image's size (bilinear upsampling when stored downsampled)."""
        if self.bases.shape[-2:] == tuple(self.image_shape[1:]):
            return self.bases
        return F.interpolate(self.bases, size=self.image_shape[1:], mode="bilinear", align_corners=False)

    def recall_queries(self, queries: torch.Tensor) -> torch.Tensor:
        """Eq. 2 for a batch of query vectors y (n, d_y): images (n, r, C, H, W).

        Coefficients v = y^T A_i (n, r, K); image = v [b_0; ...; b_{K-1}].  The linear
        combination commutes with (linear) bilinear upsampling, so it is done at the
        stored resolution and upsampled once."""
        coeffs = torch.einsum("nd,rdk->nrk", queries.to(self.addressing.dtype), self.addressing)
        stored = torch.einsum("nrk,kp->nrp", coeffs, self.bases.flatten(1))
        n, r = stored.shape[:2]
        stored = stored.reshape(n * r, *self.bases.shape[1:])
        if stored.shape[-2:] != tuple(self.image_shape[1:]):
            stored = F.interpolate(stored, size=self.image_shape[1:], mode="bilinear", align_corners=False)
        return stored.reshape(n, r, *self.image_shape)

    def coefficients(self, classes) -> torch.Tensor:
        """y^T A_i for one-hot y: (len(classes), r, K)."""
        classes = torch.as_tensor(list(classes), dtype=torch.long, device=self.addressing.device)
        return self.addressing[:, classes, :].transpose(0, 1)

    def recall(self, classes):
        classes = torch.as_tensor(list(classes), dtype=torch.long, device=self.addressing.device)
        queries = F.one_hot(classes, self.num_classes).float()
        images = self.recall_queries(queries)                       # (n, r, C, H, W)
        labels = classes.repeat_interleave(self.recalls_per_query)
        return images.flatten(0, 1), labels

    def class_similarity(self) -> torch.Tensor:
        """Cosine similarity of the mean coefficients v̄_y = (1/r) Σ_i y^T A_i between
        classes (Sec. 5.1, Fig. 2): (d_y, d_y)."""
        mean = self.addressing.detach().mean(0)                    # (d_y, K)
        mean = F.normalize(mean, dim=1)
        return mean @ mean.T

    def _stored_tensors(self):
        return {"bases": self.bases, "addressing": self.addressing}

    def _meta(self):
        return {**super()._meta(), "downsample": self.downsample}

    @classmethod
    def from_file_dict(cls, data):
        t, m = data["tensors"], data["meta"]
        return cls(t["bases"], t["addressing"], m["image_shape"], m["downsample"], m["mean"], m["std"])


class QuantizedAddressable(DistilledMemory):
    """An :class:`AddressableMemory` kept as uint8: bases = base_codes * base_scale + base_offset,
    A = addressing_codes * addressing_scale + addressing_offset (one pair per tensor).

    ``nbytes`` = K*C*(H/ds)*(W/ds) + r*d_y*K + 16: a quarter of the float32 memory's, so at
    equal bytes it holds four times the values (``fit_addressable(..., quantize="uint8")``)."""

    kind = "addressable-uint8"
    SCALES = ("base_scale", "base_offset", "addressing_scale", "addressing_offset")

    def __init__(self, base_codes: torch.Tensor, addressing_codes: torch.Tensor, scales: dict[str, torch.Tensor],
                 image_shape, downsample: int = 1, mean=(0.0,), std=(1.0,)):
        if base_codes.dtype != torch.uint8 or addressing_codes.dtype != torch.uint8:
            raise ValueError(f"codes must be uint8 (got {base_codes.dtype}, {addressing_codes.dtype})")
        if base_codes.shape[0] != addressing_codes.shape[2]:
            raise ValueError(f"{base_codes.shape[0]} bases but addressing matrices have "
                             f"{addressing_codes.shape[2]} columns")
        super().__init__(tuple(image_shape), addressing_codes.shape[1], mean, std)
        self.downsample = int(downsample)
        self.register_buffer("base_codes", base_codes.detach().clone())
        self.register_buffer("addressing_codes", addressing_codes.detach().clone())
        for name in self.SCALES:
            self.register_buffer(name, torch.as_tensor(scales[name], dtype=torch.float32).reshape(1).clone())

    @classmethod
    def quantise(cls, memory: AddressableMemory) -> "QuantizedAddressable":
        base_codes, base_scale, base_offset = quantise_uint8(memory.bases)
        addressing_codes, addressing_scale, addressing_offset = quantise_uint8(memory.addressing)
        scales = {"base_scale": base_scale, "base_offset": base_offset,
                  "addressing_scale": addressing_scale, "addressing_offset": addressing_offset}
        return cls(base_codes, addressing_codes, scales, memory.image_shape, memory.downsample,
                   memory.mean, memory.std)

    def dequantised(self) -> AddressableMemory:
        """The float32 memory the codes stand for (recall, pictures)."""
        bases = self.base_codes.float() * self.base_scale + self.base_offset
        addressing = self.addressing_codes.float() * self.addressing_scale + self.addressing_offset
        return AddressableMemory(bases, addressing, self.image_shape, self.downsample, self.mean, self.std)

    @property
    def num_bases(self) -> int:
        return self.base_codes.shape[0]

    @property
    def recalls_per_query(self) -> int:
        return self.addressing_codes.shape[0]

    def recall(self, classes):
        with torch.no_grad():
            return self.dequantised().recall(classes)

    def class_similarity(self) -> torch.Tensor:
        return self.dequantised().class_similarity()

    def _stored_tensors(self):
        return {"base_codes": self.base_codes, "addressing_codes": self.addressing_codes,
                **{name: getattr(self, name) for name in self.SCALES}}

    def _meta(self):
        return {**super()._meta(), "downsample": self.downsample}

    @classmethod
    def from_file_dict(cls, data):
        t, m = data["tensors"], data["meta"]
        return cls(t["base_codes"], t["addressing_codes"], {n: t[n] for n in cls.SCALES}, m["image_shape"],
                   m["downsample"], m["mean"], m["std"])


# Memories that can be learned (``memdistill distill --memory``) ...
MEMORIES: dict[str, type[DistilledMemory]] = {"images": SyntheticImages, "addressable": AddressableMemory}
# ... and every kind a memory file (or a checkpoint) may hold.
STORED_KINDS: dict[str, type[DistilledMemory]] = {**MEMORIES, "images-uint8": QuantizedImages,
                                                   "addressable-uint8": QuantizedAddressable}


def load_memory(path: str | Path, map_location="cpu") -> DistilledMemory:
    """Read a memory file written by ``DistilledMemory.save`` (no pickled code)."""
    try:
        data = torch.load(Path(path), map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise MemoryFileError(f"{path}: not a readable memory file ({e.__class__.__name__}: {e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise MemoryFileError(f"{path}: not a memdistill memory file")
    if data.get("version") != VERSION:
        raise MemoryFileError(f"{path}: memory file version {data.get('version')}; this reads {VERSION}")
    kind = data.get("kind")
    if kind not in STORED_KINDS:
        raise MemoryFileError(f"{path}: unknown memory kind {kind!r}; known: {', '.join(STORED_KINDS)}")
    return STORED_KINDS[kind].from_file_dict(data)


# -- budgets (Eq. 4) --------------------------------------------------------------

@dataclass(frozen=True)
class AddressableBudget:
    num_bases: int       # K
    recalls: int         # r, images recalled per label
    downsample: int
    floats: int          # size(bases) + size(addressing), in stored values
    budget_floats: int   # size(images) at the given images per class, in stored values
    quantize: str | None = None   # None: float32 values; "uint8": one byte each + 16 (QuantizedAddressable)

    @property
    def nbytes(self) -> int:
        return self.floats + 16 if self.quantize == "uint8" else 4 * self.floats


def _stored_size(n: int, downsample: int) -> int:
    return max(1, n // downsample)


def addressable_budget(ipc: int, num_classes: int, image_shape, num_bases: int,
                       downsample: int = 1) -> AddressableBudget:
    """K and r such that size(bases) + size(addressing) <= size(images) (Eq. 4).

    size(images) = ipc * num_classes * C*H*W floats; bases take K * C*(H/ds)*(W/ds);
    each of the r addressing matrices takes d_y * K with d_y = num_classes, so
    r = floor((size(images) - size(bases)) / (d_y * K)) — the largest r that fits,
    leaving less than one addressing matrix of the budget unused.
    """
    if ipc < 1:
        raise ValueError("ipc must be >= 1")
    c, h, w = image_shape
    return fit_addressable(ipc * num_classes * c * h * w, num_classes, image_shape, num_bases, downsample,
                           what=f"{ipc} image(s) per class")


def fit_addressable(budget_floats: int, num_classes: int, image_shape, num_bases: int,
                    downsample: int = 1, what: str | None = None, quantize: str | None = None) -> AddressableBudget:
    """The largest r for K bases within ``budget_floats`` stored values (Eq. 4 with any
    budget); ``quantize`` only says how the values will be stored (``nbytes``)."""
    if num_classes < 1 or num_bases < 1 or downsample < 1:
        raise ValueError("num_classes, num_bases and downsample must all be >= 1")
    c, h, w = image_shape
    base_floats = c * _stored_size(h, downsample) * _stored_size(w, downsample)
    recalls = (budget_floats - num_bases * base_floats) // (num_classes * num_bases)
    if recalls < 1:
        most = budget_floats // (base_floats + num_classes)
        raise ValueError(f"{num_bases} bases (downsample {downsample}) leave no room for an addressing "
                         f"matrix in {what or f'{budget_floats} floats'}; use at most {most} bases "
                         f"or a larger downsample")
    return AddressableBudget(num_bases, int(recalls), downsample,
                             int(num_bases * base_floats + recalls * num_classes * num_bases), int(budget_floats),
                             quantize)


def image_memory_bytes(ipc: int, num_classes: int, image_shape, quantize: str | None = None) -> int:
    """Bytes of ``ipc`` synthetic images per class: float32 pixels (or uint8 codes plus one
    float32 scale and offset) and one int64 label per image — what ``nbytes`` counts."""
    c, h, w = image_shape
    n = ipc * num_classes
    if quantize == "uint8":
        return n * (c * h * w + 8) + 8
    return n * (4 * c * h * w + 8)


def fit_images(budget_bytes: int, num_classes: int, image_shape, quantize: str | None = None) -> int:
    """The largest images per class whose ``image_memory_bytes`` fit in ``budget_bytes`` (0 if none)."""
    one = image_memory_bytes(1, num_classes, image_shape, quantize)
    fixed = 8 if quantize == "uint8" else 0
    return max(0, (budget_bytes - fixed) // (one - fixed))


def sample_per_class(images: torch.Tensor, labels: torch.Tensor, n: int, num_classes: int,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random samples of each class (class-major order)."""
    picked = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < n:
            raise ValueError(f"class {c} has {len(idx)} samples, fewer than {n}")
        picked.append(idx[torch.randperm(len(idx), generator=generator)[:n].to(idx.device)])
    idx = torch.cat(picked)
    return images[idx], labels[idx]
