"""Gradient influence for LoRA classifiers: per-example LoRA gradients from hooks, a seeded random
projection, a damped Gauss-Newton preconditioner, and a memory-mapped float16 matrix on disk.

How one record becomes a row (all in batches; no per-example loop over the model):

1. Forward the batch with hooks on every PEFT LoRA layer: the forward hook on `lora_A` keeps its input
   x (b, T, in); the one on `lora_B` keeps its input h = A x (b, T, r) and its output, whose gradient
   g_b = dL/d(lora_B output) (b, T, out) (the LoRA scaling is already inside it) comes from one
   `torch.autograd.grad` of the summed loss.
2. Per-example gradients from the low-rank structure: dL_i/dB = sum_t gB_t h_t^T and
   dL_i/dA = sum_t (B^T gB_t) x_t^T, two einsums per layer.
3. Each parameter matrix's gradient is projected by its own seeded Gaussian block (entries N(0, 1/k_m);
   the blocks' sizes add up to `projection_dim`), so the rows are the same for the same seed on any
   machine, and the projection never needs a (total LoRA parameters x dim) matrix in memory.
4. Curvature: F = Phi^T Phi / n (the empirical Fisher / Gauss-Newton of the loss, in projected space),
   preconditioner P = (F + lambda I)^-1 with lambda = damping * trace(F) / dim.
5. Rows are stored as float16 scaled to unit max-abs (the scale kept per row in float32): the matrix is
   `grads.f16` (memory-mapped), one read per query batch.

Scores: score(q, i) = g_q^T P g_i, where g_q is the gradient of the query's loss for the label to explain
(the model's prediction when the query gives none) and g_i the gradient of record i's training loss.
Positive = training on record i lowers the query's loss (helped the prediction); negative = it pushed
against it. TracIn (`TracInEngine`) is the same with P = I. Self-influence: g_i^T P g_i.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attribution.engines.base import (
    AttributionEngine,
    AttributionResult,
    IndexBase,
    Query,
    QueryAttribution,
    Record,
    top_k_from_scores,
)

DEFAULT_PROJECTION_DIM = 256
# lambda = DEFAULT_DAMPING x the mean eigenvalue of F. Chosen by LDS in benchmarks/attribution_quality.py
# (MiniLM-L6 LoRA, 400 records): 0.1 -> 0.21, 3 -> 0.35, 10 -> 0.41 (TracIn 0.34) on seed 0, and confirmed on
# a held-out seed (1): 0.1 -> 0.19, 10 -> 0.26, 100 -> 0.18 (TracIn 0.12). A curvature estimated from a few
# hundred gradients is trustworthy only in its top directions; heavy damping keeps the rest near TracIn.
RANDOM_DAMPING = 10.0
# The default basis (see EkfacBasis): lambda = damping x the mean corrected eigenvalue. Chosen on the same
# benchmark (800 records, seed 0): LDS at k=256 with 0.1 -> 0.236, 1 -> 0.237, 3 -> 0.241, 10 -> 0.246.
EKFAC_DAMPING = 3.0
DEFAULT_DAMPING = EKFAC_DAMPING
DEFAULT_BASIS = "ekfac"
BASES = ("ekfac", "random")
# The curvature is estimated from the per-example gradients of at most this many records (a seeded
# sample), held in memory at once: at most FACTOR_BYTES of float32 gradients.
MAX_FACTOR_SAMPLES = 2048
FACTOR_BYTES = 256 << 20


@dataclass
class TextClassifier:
    """What the gradient engines call "model": a (PEFT LoRA) sequence classifier and its tokenizer.

    `labels[i]` is the name of class i; record and query labels may be names or class ids.
    """

    model: nn.Module
    tokenizer: Any
    labels: list[str]
    max_length: int = 64

    def label_id(self, label: Any) -> int:
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
            if 0 <= int(label) < len(self.labels):
                return int(label)
        elif isinstance(label, str) and label in self.labels:
            return self.labels.index(label)
        raise ValueError(f"unknown label {label!r}; the model's labels are {self.labels}")


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# --------------------------------------------------------------------------------------------------
# Per-example LoRA gradients from hooks


@dataclass
class _LoraPair:
    name: str
    lora_a: nn.Linear
    lora_b: nn.Linear
    x: torch.Tensor | None = None  # lora_A input (b, T, in)
    h: torch.Tensor | None = None  # lora_B input (b, T, r)
    out: torch.Tensor | None = None  # lora_B output (b, T, out)


def lora_pairs(model: nn.Module) -> list[_LoraPair]:
    """Every active (lora_A, lora_B) pair of a PEFT model, in module order."""
    pairs = []
    for name, module in model.named_modules():
        mod_a = getattr(module, "lora_A", None)
        mod_b = getattr(module, "lora_B", None)
        if not isinstance(mod_a, nn.ModuleDict) or not isinstance(mod_b, nn.ModuleDict):
            continue
        for adapter in getattr(module, "active_adapters", list(mod_a.keys())):
            if adapter in mod_a and isinstance(mod_a[adapter], nn.Linear):
                pairs.append(_LoraPair(f"{name}.{adapter}", mod_a[adapter], mod_b[adapter]))
    if not pairs:
        raise ValueError("the model has no LoRA Linear layers; the gradient engine needs a PEFT LoRA model")
    return pairs


class LoraGradientHooks:
    """Context manager: hooks on the LoRA layers; `per_example_grads(loss)` after a forward.

    Returns, per LoRA pair, (dL_i/dA, dL_i/dB) stacked over the batch: (b, r, in) and (b, out, r).
    `loss` must be the SUM of the per-example losses (so example i's gradient is not divided by b).
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.pairs = lora_pairs(model)
        self._handles: list = []
        self._saved_requires_grad: list[tuple[nn.Parameter, bool]] = []

    def __enter__(self) -> LoraGradientHooks:
        for pair in self.pairs:
            for p in (pair.lora_a.weight, pair.lora_b.weight):
                self._saved_requires_grad.append((p, p.requires_grad))
                p.requires_grad_(True)
            self._handles.append(pair.lora_a.register_forward_hook(self._hook_a(pair)))
            self._handles.append(pair.lora_b.register_forward_hook(self._hook_b(pair)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for p, flag in self._saved_requires_grad:
            p.requires_grad_(flag)
        self._saved_requires_grad.clear()
        self.clear()

    def clear(self) -> None:
        for pair in self.pairs:
            pair.x = pair.h = pair.out = None

    @staticmethod
    def _hook_a(pair: _LoraPair):
        def hook(module, inputs, output):
            pair.x = inputs[0].detach()

        return hook

    @staticmethod
    def _hook_b(pair: _LoraPair):
        def hook(module, inputs, output):
            pair.h = inputs[0].detach()
            pair.out = output

        return hook

    def per_example_grads(self, loss: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        outs = [pair.out for pair in self.pairs]
        if any(o is None for o in outs):
            raise RuntimeError("a LoRA layer did not run in the forward pass")
        grads_out = torch.autograd.grad(loss, outs, allow_unused=True)
        result = []
        for pair, g_b in zip(self.pairs, grads_out, strict=True):
            x, h = pair.x, pair.h
            if g_b is None:
                g_b = torch.zeros_like(pair.out)
            g_b = g_b.detach()
            if x.dim() == 2:  # (b, in): no sequence axis
                x, h, g_b = x[:, None], h[:, None], g_b[:, None]
            grad_b = torch.einsum("bto,btr->bor", g_b, h)
            g_h = g_b @ pair.lora_b.weight.detach()  # dL/dh = B^T g_b, (b, T, r)
            grad_a = torch.einsum("btr,bti->bri", g_h, x)
            result.append((grad_a, grad_b))
        self.clear()
        return result


# --------------------------------------------------------------------------------------------------
# Seeded block random projection


def _block_sizes(n_blocks: int, dim: int) -> list[int]:
    if dim < n_blocks:
        raise ValueError(f"projection_dim {dim} is smaller than the number of LoRA matrices {n_blocks}")
    base, extra = divmod(dim, n_blocks)
    return [base + (1 if i < extra else 0) for i in range(n_blocks)]


class BlockProjection:
    """Block-diagonal Gaussian projection: LoRA matrix m (flattened, d_m numbers) -> k_m numbers.

    Block m is drawn from a generator seeded with (seed, name, shape), so the same model layout and seed
    give the same projection everywhere.
    """

    def __init__(self, shapes: list[tuple[str, tuple[int, ...]]], dim: int, seed: int, device: torch.device):
        self.dim = dim
        self.seed = seed
        self.sizes = _block_sizes(len(shapes), dim)
        self.blocks: list[torch.Tensor] = []
        for (name, shape), k in zip(shapes, self.sizes, strict=True):
            digest = hashlib.sha256(f"{seed}|{name}|{shape}".encode()).digest()
            gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
            d = int(np.prod(shape))
            block = torch.randn(d, k, generator=gen, dtype=torch.float32) / math.sqrt(k)
            self.blocks.append(block.to(device))

    def __call__(self, grads: list[torch.Tensor]) -> torch.Tensor:
        parts = [g.reshape(g.shape[0], -1).float() @ block for g, block in zip(grads, self.blocks, strict=True)]
        return torch.cat(parts, dim=1)


class EkfacBasis:
    """EK-FAC eigenbasis features: the default way a LoRA gradient becomes a row.

    Per LoRA matrix m with per-example gradients G (out x in): the Kronecker factors C_out = E[G G^T] and
    C_in = E[G^T G] (empirical Fisher over a seeded sample of training records), their eigenvectors
    Q_out, Q_in, and the corrected eigenvalues Lambda = E[(Q_out^T G Q_in)^2] (EK-FAC's correction: the
    exact second moment in that basis). The curvature is then H = sum_j Lambda_j u_j u_j^T over the rotated
    coordinates u_j of all matrices, and H + lambda I (lambda = damping x mean Lambda) is inverted exactly.

    A row keeps the `dim` rotated coordinates with the largest Lambda (over all matrices), each divided by
    sqrt(Lambda + lambda). The dot product of two rows is then g_q^T (H + lambda I)^-1 g_i restricted to the
    top curvature directions: unlike a random projection, this truncation adds no noise to the scores (on
    the quality benchmark a random 256-dim projection of EK-FAC-preconditioned gradients lost most of
    their LDS, 0.25 -> 0.08; these features keep 0.24).
    """

    def __init__(self, q_out: list[torch.Tensor], q_in: list[torch.Tensor], keep: torch.Tensor,
                 weight: torch.Tensor, inv: torch.Tensor, shift: float | None = None):
        self.q_out, self.q_in, self.shift = q_out, q_in, shift
        self.keep, self.weight, self.inv = keep, weight, inv  # (k,), (k,), (D,) = 1 / (Lambda + lambda)

    @property
    def dim(self) -> int:
        return int(self.keep.numel())

    def rotate(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """(b, D): every matrix's gradient in its Kronecker eigenbasis, flattened and concatenated."""
        parts = [(qo.T @ g.float() @ qi).reshape(g.shape[0], -1)
                 for qo, qi, g in zip(self.q_out, self.q_in, grads, strict=True)]
        return torch.cat(parts, dim=1)

    def __call__(self, grads: list[torch.Tensor]) -> torch.Tensor:
        return self.rotate(grads)[:, self.keep] * self.weight

    def self_influence(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """g^T (H + lambda I)^-1 g over all coordinates (not only the kept ones)."""
        r = self.rotate(grads)
        return (r * r * self.inv).sum(dim=1)

    @classmethod
    def fit(cls, grads: list[torch.Tensor], dim: int, damping: float) -> EkfacBasis:
        """From per-matrix per-example gradients [(N, out, in), ...] (float32, any device)."""
        q_out, q_in, lams = [], [], []
        for g in grads:
            # Factors as single float32 GEMMs on g's device; only the small eigenproblems in float64
            # (on the CPU, where they are cheap and exact enough for the whole spectrum).
            g = g.float()
            n, o, i = g.shape
            rows_o = g.reshape(n * o, i)
            rows_i = g.transpose(1, 2).reshape(n * i, o)
            c_in = (rows_o.T @ rows_o).double().cpu() / n
            c_out = (rows_i.T @ rows_i).double().cpu() / n
            qo = torch.linalg.eigh(c_out).eigenvectors.float().to(g.device)
            qi = torch.linalg.eigh(c_in).eigenvectors.float().to(g.device)
            rotated = qo.T @ g @ qi
            lams.append((rotated * rotated).mean(dim=0).reshape(-1).double().cpu())
            q_out.append(qo)
            q_in.append(qi)
        lam = torch.cat(lams)
        shift = damping * float(lam.mean())
        if shift <= 0:
            shift = damping
        inv = 1.0 / (lam + shift)
        k = min(int(dim), lam.numel())
        keep = torch.argsort(-lam, stable=True)[:k]
        return cls(q_out, q_in, keep, inv[keep].sqrt().float(), inv.float(), shift)

    def to(self, device: torch.device) -> EkfacBasis:
        return EkfacBasis([q.to(device) for q in self.q_out], [q.to(device) for q in self.q_in],
                          self.keep.to(device), self.weight.to(device), self.inv.to(device), self.shift)

    def save(self, directory: Path) -> None:
        arrays = {"keep": self.keep.cpu().numpy(), "weight": self.weight.cpu().numpy(), "inv": self.inv.cpu().numpy()}
        for m, (qo, qi) in enumerate(zip(self.q_out, self.q_in, strict=True)):
            arrays[f"q_out_{m}"] = qo.cpu().numpy()
            arrays[f"q_in_{m}"] = qi.cpu().numpy()
        np.savez(directory / "ekfac.npz", **arrays)

    @classmethod
    def load(cls, directory: Path) -> EkfacBasis:
        with np.load(directory / "ekfac.npz") as z:
            n = sum(1 for key in z.files if key.startswith("q_out_"))
            t = lambda key: torch.from_numpy(z[key].copy())  # noqa: E731
            return cls([t(f"q_out_{m}") for m in range(n)], [t(f"q_in_{m}") for m in range(n)],
                       t("keep"), t("weight"), t("inv"))


# --------------------------------------------------------------------------------------------------
# The index


@dataclass
class GradientIndex(IndexBase):
    """Projected gradients (float16 memmap, unit max-abs rows + per-row scale) and the preconditioner."""

    grads: np.ndarray | None = field(default=None, repr=False)  # (n, k) float16, usually a np.memmap
    row_scale: np.ndarray | None = field(default=None, repr=False)  # (n,) float32
    preconditioner: np.ndarray | None = field(default=None, repr=False)  # (k, k) float32
    self_influence_gn: np.ndarray | None = field(default=None, repr=False)  # (n,) g P g
    self_influence_dot: np.ndarray | None = field(default=None, repr=False)  # (n,) g g
    directory: Path | None = None
    basis: EkfacBasis | None = field(default=None, repr=False)  # the features' basis (None: random projection)
    # Device copies made on first use: "rows:<device>" (GradientEngine._resident_rows) and
    # "basis:<device>" (query_vectors).
    _resident: dict = field(default_factory=dict, repr=False, compare=False)

    def _save_payload(self, directory: Path) -> None:
        target = directory / "grads.f16"
        if self.directory is None or Path(self.directory).resolve() != directory.resolve():
            mm = np.lib.format.open_memmap(target, mode="w+", dtype=np.float16, shape=self.grads.shape)
            step = 65536
            for i in range(0, self.grads.shape[0], step):
                mm[i : i + step] = self.grads[i : i + step]
            mm.flush()
            del mm
        np.save(directory / "row_scale.npy", self.row_scale)
        np.save(directory / "preconditioner.npy", self.preconditioner)
        np.save(directory / "self_influence_gn.npy", self.self_influence_gn)
        np.save(directory / "self_influence_dot.npy", self.self_influence_dot)
        if self.basis is not None:
            self.basis.save(directory)

    @classmethod
    def load(cls, directory: str | os.PathLike, *, model: Any = None) -> GradientIndex:
        directory = Path(directory)
        header = cls.read_header(directory)
        if header.get("meta", {}).get("kind") != "gradient":
            raise ValueError(f"{directory} does not hold a gradient index")
        grads = np.load(directory / "grads.f16", mmap_mode="r")
        return cls(
            method=header["method"],
            record_ids=header["record_ids"],
            contributors=header["contributors"],
            labels=header["labels"],
            meta=header["meta"],
            model=model,
            grads=grads,
            row_scale=np.load(directory / "row_scale.npy"),
            preconditioner=np.load(directory / "preconditioner.npy"),
            self_influence_gn=np.load(directory / "self_influence_gn.npy"),
            self_influence_dot=np.load(directory / "self_influence_dot.npy"),
            directory=directory,
            basis=EkfacBasis.load(directory) if header["meta"].get("basis") == "ekfac" else None,
        )

    def disk_bytes(self) -> int:
        if self.directory is None:
            return 0
        return sum(p.stat().st_size for p in Path(self.directory).iterdir() if p.is_file())


# --------------------------------------------------------------------------------------------------
# The engines


def _readonly_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor view of a (read-only, memory-mapped) array without a copy; it is only ever read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.ascontiguousarray(array))


@dataclass
class _Rows:
    """What `fit` writes per record: the float16 rows (memmap when the index has a directory), their
    scales, and the two self-influences."""

    grads: np.ndarray
    row_scale: np.ndarray
    self_gn: np.ndarray
    sq_norm: np.ndarray

    @classmethod
    def allocate(cls, n: int, k: int, directory: Path | None) -> _Rows:
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            grads = np.lib.format.open_memmap(directory / "grads.f16", mode="w+", dtype=np.float16, shape=(n, k))
        else:
            grads = np.zeros((n, k), dtype=np.float16)
        return cls(grads, np.zeros(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.float64))

    def store(self, rows: np.ndarray, block: np.ndarray) -> None:
        scale = np.abs(block).max(axis=1)
        scale[scale == 0] = 1.0
        self.row_scale[rows] = scale
        self.grads[rows] = (block / scale[:, None]).astype(np.float16)


class GradientEngine(AttributionEngine):
    """Gauss-Newton-preconditioned gradient influence on the LoRA parameters (see module docstring)."""

    name = "gradient"
    precondition = True

    def __init__(
        self,
        *,
        projection_dim: int = DEFAULT_PROJECTION_DIM,
        damping: float | None = None,
        seed: int = 0,
        basis: str | None = None,
        batch_size: int = 32,
        chunk_rows: int = 262_144,
        device: str | None = "auto",
        directory: str | os.PathLike | None = None,
        resident_bytes: int = 8 << 30,
    ):
        if projection_dim < 1:
            raise ValueError("projection_dim must be positive")
        self.basis = basis or (DEFAULT_BASIS if self.precondition else "random")
        if self.basis not in BASES:
            raise ValueError(f"basis must be one of {BASES}")
        if damping is None:
            damping = EKFAC_DAMPING if self.basis == "ekfac" else RANDOM_DAMPING
        if damping <= 0:
            raise ValueError("damping must be positive")
        self.projection_dim = int(projection_dim)
        self.damping = float(damping)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.chunk_rows = int(chunk_rows)
        self.device = resolve_device(device)
        self.directory = Path(directory) if directory is not None else None
        self.resident_bytes = int(resident_bytes)
        self.timings: dict[str, float] = {}

    # ---- gradients

    @staticmethod
    def _shapes(hooks: LoraGradientHooks, meta: dict | None = None) -> list[tuple[str, tuple[int, ...]]]:
        shapes: list[tuple[str, tuple[int, ...]]] = []
        for pair in hooks.pairs:
            shapes.append((pair.name + ".A", tuple(pair.lora_a.weight.shape)))
            shapes.append((pair.name + ".B", tuple(pair.lora_b.weight.shape)))
        if meta is not None and meta.get("shapes") not in (None, [[n, list(s)] for n, s in shapes]):
            raise ValueError("the model's LoRA layout differs from the one this index was fitted with")
        return shapes

    def _projection(self, classifier: TextClassifier, hooks: LoraGradientHooks, meta: dict | None = None):
        shapes = self._shapes(hooks, meta)
        return BlockProjection(shapes, self.projection_dim, self.seed, self.device), shapes

    def _gradient_batches(self, classifier: TextClassifier, texts: Sequence[str], labels, rows=None):
        """Yields (rows, per-matrix per-example gradients [(b, out, in), ...]) in length-sorted batches.

        A label None = the model's own prediction. `rows` limits the pass to those positions of `texts`."""
        model = classifier.model
        was_training = model.training
        model.eval()
        model.to(self.device)
        rows = range(len(texts)) if rows is None else rows
        order = sorted(rows, key=lambda i: (len(texts[i]), i))  # less padding per batch
        try:
            with LoraGradientHooks(model) as hooks:
                for start in range(0, len(order), self.batch_size):
                    batch = order[start : start + self.batch_size]
                    enc = classifier.tokenizer(
                        [texts[i] for i in batch],
                        padding=True,
                        truncation=True,
                        max_length=classifier.max_length,
                        return_tensors="pt",
                    ).to(self.device)
                    logits = model(**enc).logits
                    target = logits.detach().argmax(dim=-1)
                    if labels is not None:
                        given = torch.tensor([-1 if labels[i] is None else labels[i] for i in batch], device=self.device)
                        target = torch.where(given >= 0, given, target)
                    loss = nn.functional.cross_entropy(logits.float(), target, reduction="sum")
                    grads = hooks.per_example_grads(loss)
                    yield np.asarray(batch), [g.detach() for pair in grads for g in pair]
        finally:
            model.train(was_training)

    def projected_gradients(
        self,
        classifier: TextClassifier,
        texts: Sequence[str],
        labels: Sequence[int | None] | None,
        *,
        sink=None,
        meta: dict | None = None,
        featurize=None,
    ) -> np.ndarray | None:
        """(n, k) float32 gradient features: `featurize(grads)` (default: the seeded random projection).

        With `sink(rows, block)` the rows are handed over batch by batch instead of returned.
        """
        if featurize is None:
            featurize, _ = self._projection(classifier, LoraGradientHooks(classifier.model), meta)
        out = None
        for rows, grads in self._gradient_batches(classifier, texts, labels):
            block = featurize(grads).cpu().numpy()
            if sink is not None:
                sink(rows, block)
            else:
                if out is None:
                    out = np.zeros((len(texts), block.shape[1]), dtype=np.float32)
                out[rows] = block
        return out

    # ---- fit

    def _fit_basis(self, model: TextClassifier, texts: list[str], labels: list[int], params: int):
        """The EK-FAC basis (on the engine's device) from a seeded sample of records, the seconds its
        algebra took, and the sample's rows and gradients (kept in memory, so those records are not run
        through the model twice)."""
        n = len(texts)
        cap = max(1, min(n, MAX_FACTOR_SAMPLES, FACTOR_BYTES // (4 * params)))
        rows = np.arange(n) if cap >= n else np.sort(np.random.default_rng(self.seed).choice(n, cap, replace=False))
        order, parts = [], []
        for batch_rows, grads in self._gradient_batches(model, texts, labels, rows=rows.tolist()):
            order.append(batch_rows)
            parts.append([g.float().cpu() for g in grads])
        grads = [torch.cat([p[m] for p in parts]) for m in range(len(parts[0]))]
        t0 = time.perf_counter()
        basis = EkfacBasis.fit([g.to(self.device) for g in grads], self.projection_dim, self.damping)
        return basis, time.perf_counter() - t0, np.concatenate(order), grads

    def _rows_ekfac(self, model, texts, labels, params: int, rows: _Rows) -> tuple[EkfacBasis, float, int]:
        """Rows in the EK-FAC basis: the sample's from its kept gradients, the others in one more pass.
        Returns the basis, the seconds of its algebra and the sample's size."""
        basis, algebra_s, sample_rows, sample_grads = self._fit_basis(model, texts, labels, params)

        def write(batch: np.ndarray, g: list[torch.Tensor]) -> None:
            rows.store(batch, basis(g).cpu().numpy())
            rows.self_gn[batch] = basis.self_influence(g).cpu().numpy()
            rows.sq_norm[batch] = sum(x.double().pow(2).sum(dim=(1, 2)) for x in g).cpu().numpy()

        for s in range(0, len(sample_rows), self.batch_size):
            write(sample_rows[s : s + self.batch_size], [x[s : s + self.batch_size].to(self.device) for x in sample_grads])
        sampled = set(sample_rows.tolist())
        rest = [i for i in range(len(texts)) if i not in sampled]
        if rest:
            for batch, g in self._gradient_batches(model, texts, labels, rows=rest):
                write(batch, g)
        return basis, algebra_s, len(sample_rows)

    def _rows_random(self, model, texts, labels, rows: _Rows) -> tuple[np.ndarray, float, float]:
        """Rows of the seeded random projection; returns the Gauss-Newton preconditioner P, lambda and
        the seconds of the curvature's algebra."""
        n, k = len(texts), self.projection_dim
        fisher = torch.zeros(k, k, dtype=torch.float64)

        def sink(batch: np.ndarray, block: np.ndarray) -> None:
            nonlocal fisher
            b = torch.from_numpy(block).double()
            fisher += b.T @ b
            rows.sq_norm[batch] = (b * b).sum(dim=1).numpy()
            rows.store(batch, block)

        self.projected_gradients(model, texts, labels, sink=sink)
        t0 = time.perf_counter()
        fisher /= n
        lam = self.damping * float(torch.trace(fisher)) / k
        if lam <= 0:
            lam = self.damping
        precond = torch.linalg.inv(fisher + lam * torch.eye(k, dtype=torch.float64)).float().numpy()
        precond = (precond + precond.T) / 2
        for i in range(0, n, self.chunk_rows):
            block = np.asarray(rows.grads[i : i + self.chunk_rows], dtype=np.float32) * rows.row_scale[i : i + self.chunk_rows, None]
            rows.self_gn[i : i + len(block)] = np.einsum("nk,kj,nj->n", block, precond, block)
        return precond, lam, time.perf_counter() - t0

    def fit(self, model: TextClassifier, train_dataset: Sequence[Record]) -> GradientIndex:
        if not isinstance(model, TextClassifier):
            raise TypeError("the gradient engine's model is a TextClassifier(model, tokenizer, labels)")
        records = list(train_dataset)
        if not records:
            raise ValueError("cannot fit an attribution index on no records")
        ids = [str(r.id) for r in records]
        if len(set(ids)) != len(ids):
            raise ValueError("record ids must be unique")
        labels = [model.label_id(r.label) for r in records]
        texts = [r.text for r in records]
        t0 = time.perf_counter()
        n = len(records)
        hooks = LoraGradientHooks(model.model)
        shapes = self._shapes(hooks)
        _block_sizes(2 * len(hooks.pairs), self.projection_dim)  # at least one dimension per LoRA matrix
        params = sum(int(np.prod(shape)) for _, shape in shapes)
        k = min(self.projection_dim, params) if self.basis == "ekfac" else self.projection_dim
        rows = _Rows.allocate(n, k, self.directory)
        basis, factor_samples = None, None
        if self.basis == "ekfac":
            basis, curvature_s, factor_samples = self._rows_ekfac(model, texts, labels, params, rows)
            basis = basis.to(torch.device("cpu"))
            precond = np.eye(k, dtype=np.float32)  # the rows are already preconditioned
            lam = basis.shift
        else:
            precond, lam, curvature_s = self._rows_random(model, texts, labels, rows)
        gradients_s = time.perf_counter() - t0 - curvature_s
        if isinstance(rows.grads, np.memmap):
            rows.grads.flush()
        # gradients_s: every gradient pass (and the rows); curvature_s: the curvature's own algebra
        self.timings = {"gradients_s": gradients_s, "curvature_s": curvature_s}
        index = GradientIndex(
            method=self.name,
            record_ids=ids,
            contributors=[r.contributor for r in records],
            labels=[model.labels[i] for i in labels],
            meta={
                "kind": "gradient",
                "basis": self.basis,
                "projection_dim": k,
                "damping": self.damping,
                "lambda": lam,
                "seed": self.seed,
                "max_length": model.max_length,
                "label_names": list(model.labels),
                "shapes": [[name, list(shape)] for name, shape in shapes],
                "factor_samples": factor_samples,
            },
            model=model,
            grads=rows.grads,
            row_scale=rows.row_scale,
            preconditioner=precond.astype(np.float32),
            self_influence_gn=rows.self_gn,
            self_influence_dot=rows.sq_norm.astype(np.float32),
            directory=self.directory,
            basis=basis,
        )
        if self.directory is not None:
            index.save(self.directory)
        return index

    def load_index(self, directory: str | os.PathLike, *, model: Any = None) -> GradientIndex:
        index = GradientIndex.load(directory, model=model)
        if index.meta["projection_dim"] != self.projection_dim or index.meta["seed"] != self.seed:
            # The index's own settings win: queries must be projected the way its rows were.
            self.projection_dim = int(index.meta["projection_dim"])
            self.seed = int(index.meta["seed"])
        return index

    # ---- queries

    def query_vectors(self, index: GradientIndex, queries: Sequence[Query]) -> np.ndarray:
        """(m, k) float32 query gradient features, preconditioned when this engine preconditions.

        The index decides how a gradient becomes a row (its EK-FAC basis, or the seeded projection), so
        an engine answers for any index it loads."""
        classifier = index.model
        if not isinstance(classifier, TextClassifier):
            raise ValueError("this index has no model bound; load it with load_index(dir, model=TextClassifier(...))")
        queries = [q if isinstance(q, Query) else Query(text=str(q)) for q in queries]
        labels = [None if q.label is None else classifier.label_id(q.label) for q in queries]
        texts = [q.text for q in queries]
        if index.basis is not None:
            if not self.precondition:
                raise ValueError("an EK-FAC index holds preconditioned rows; TracIn needs its own index "
                                 "(TracInEngine().fit)")
            self._shapes(LoraGradientHooks(classifier.model), index.meta)
            key = f"basis:{self.device}"
            if key not in index._resident:
                index._resident[key] = index.basis.to(self.device)
            return self.projected_gradients(classifier, texts, labels, featurize=index._resident[key])
        if self.projection_dim != index.meta["projection_dim"] or self.seed != index.meta["seed"]:
            raise ValueError("engine projection settings differ from the index's; use engine.load_index")
        vectors = self.projected_gradients(classifier, texts, labels, meta=index.meta)
        if self.precondition:
            vectors = vectors @ index.preconditioner
        return vectors

    def score_vectors(
        self, index: GradientIndex, vectors: np.ndarray, *, top_k: int = 10, return_matrix: bool = False
    ) -> tuple[list, np.ndarray | None]:
        """Scores of (m, k) query vectors against every row, in chunks of `chunk_rows` rows.

        Returns (per-query top-k as (rows, scores) arrays, full matrix or None). The float16 rows are
        multiplied in float16 (torch's CPU kernel accumulates in float32) with each query scaled to unit
        max-abs, then rescaled by the query and row scales.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        m, n = vectors.shape[0], len(index)
        q_scale = np.abs(vectors).max(axis=1)
        q_scale[q_scale == 0] = 1.0
        qt = torch.from_numpy(vectors / q_scale[:, None]).to(self.device).half()
        matrix = np.empty((m, n), dtype=np.float32) if return_matrix else None
        k = max(0, min(int(top_k), n))
        # Scores, scales and the running top-k stay on the device; only the top-k (or the asked-for
        # matrix) comes back, so a GPU query moves kilobytes, not the score row.
        best_scores = torch.full((m, 0), -math.inf, device=self.device)
        best_rows = torch.zeros((m, 0), dtype=torch.long, device=self.device)
        q_scale_t = torch.from_numpy(q_scale)[:, None].to(self.device)
        resident = self._resident_rows(index)
        for start in range(0, n, self.chunk_rows):
            if resident is not None:
                chunk = resident[start : start + self.chunk_rows]
            else:
                chunk = _readonly_tensor(index.grads[start : start + self.chunk_rows]).to(self.device)
            part = (qt @ chunk.T).float()
            scale = torch.from_numpy(index.row_scale[start : start + chunk.shape[0]]).to(self.device)
            part *= q_scale_t * scale[None, :]
            if matrix is not None:
                matrix[:, start : start + chunk.shape[0]] = part.cpu().numpy()
            if k:
                kk = min(k, part.shape[1])
                s, r = torch.topk(part, kk, dim=1)
                best_scores = torch.cat([best_scores, s], dim=1)
                best_rows = torch.cat([best_rows, r + start], dim=1)
                if best_scores.shape[1] > k:
                    s, pos = torch.topk(best_scores, k, dim=1)
                    best_scores, best_rows = s, torch.gather(best_rows, 1, pos)
        best_scores, best_rows = best_scores.cpu(), best_rows.cpu()
        tops = []
        for qi in range(m):
            s = best_scores[qi].numpy()
            r = best_rows[qi].numpy()
            order = np.lexsort((r, -s))
            tops.append((r[order], s[order]))
        return tops, matrix

    def _resident_rows(self, index: GradientIndex) -> torch.Tensor | None:
        """The index rows held on the accelerator, copied there on first use.

        Streaming a memory-mapped matrix over PCIe for every query would cost more than the product
        itself; on the CPU the page cache already keeps the rows resident, so nothing is copied there.
        Rows that do not fit in `resident_bytes` are streamed in chunks as on the CPU."""
        if self.device.type == "cpu" or index.grads is None:
            return None
        key = f"rows:{self.device}"
        if key not in index._resident:
            nbytes = index.grads.size * 2
            if nbytes > self.resident_bytes:
                index._resident[key] = None
            else:
                index._resident[key] = _readonly_tensor(index.grads).to(self.device)
        return index._resident[key]

    def attribute(
        self,
        index: GradientIndex,
        queries: Sequence[Query],
        *,
        top_k: int = 10,
        return_matrix: bool = False,
    ) -> AttributionResult:
        if not isinstance(index, GradientIndex):
            raise TypeError("the gradient engine answers from a GradientIndex")
        vectors = self.query_vectors(index, queries)
        return self.attribute_vectors(index, vectors, top_k=top_k, return_matrix=return_matrix)

    def attribute_vectors(
        self, index: GradientIndex, vectors: np.ndarray, *, top_k: int = 10, return_matrix: bool = False
    ) -> AttributionResult:
        tops, matrix = self.score_vectors(index, vectors, top_k=top_k, return_matrix=return_matrix)
        results = [
            QueryAttribution(
                rows=[int(i) for i in rows],
                record_ids=[index.record_ids[int(i)] for i in rows],
                scores=[float(s) for s in scores],
            )
            for rows, scores in tops
        ]
        return AttributionResult(method=self.name, queries=results, matrix=matrix)

    def self_influence(self, index: GradientIndex) -> np.ndarray:
        return np.asarray(index.self_influence_gn if self.precondition else index.self_influence_dot)


class TracInEngine(GradientEngine):
    """TracIn-style baseline: the plain dot product of projected gradients (final checkpoint, no curvature).

    It reads the same index as `GradientEngine` (the preconditioner is simply not applied).
    """

    name = "tracin"
    precondition = False


class RandomEngine(AttributionEngine):
    """Baseline: seeded random scores (deterministic per query text), for calibrating the others."""

    name = "random"

    def __init__(self, *, seed: int = 0):
        self.seed = int(seed)

    def fit(self, model: Any, train_dataset: Sequence[Record]) -> IndexBase:
        records = list(train_dataset)
        return IndexBase(
            method=self.name,
            record_ids=[str(r.id) for r in records],
            contributors=[r.contributor for r in records],
            labels=[r.label for r in records],
            meta={"kind": "random", "seed": self.seed},
            model=model,
        )

    def _rng(self, text: str) -> np.random.Generator:
        digest = hashlib.sha256(f"{self.seed}|{text}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def attribute(self, index, queries, *, top_k=10, return_matrix=False) -> AttributionResult:
        queries = [q if isinstance(q, Query) else Query(text=str(q)) for q in queries]
        matrix = (
            np.stack([self._rng(q.text).standard_normal(len(index)).astype(np.float32) for q in queries])
            if queries
            else np.zeros((0, len(index)), np.float32)
        )
        return AttributionResult(
            method=self.name,
            queries=top_k_from_scores(matrix, index.record_ids, top_k),
            matrix=matrix if return_matrix else None,
        )

    def self_influence(self, index) -> np.ndarray:
        return self._rng("__self__").standard_normal(len(index)).astype(np.float32)

    def load_index(self, directory, *, model=None) -> IndexBase:
        header = IndexBase.read_header(directory)
        return IndexBase(
            method=header["method"],
            record_ids=header["record_ids"],
            contributors=header["contributors"],
            labels=header["labels"],
            meta=header["meta"],
            model=model,
        )
