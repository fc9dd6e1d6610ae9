"""Payout fairness: do the paid contributor weights follow what each contributor's data did? (issue 12, item 1)

    .venv/bin/python benchmarks/payout_fairness.py                 # seeds 0-3 (~3 CPU-min a seed, 1 thread)
    .venv/bin/python benchmarks/payout_fairness.py --seeds 0 --tune 0 0.5 1 1.5 2   # PAY_Z, on seed 0 only
    .venv/bin/python benchmarks/payout_fairness.py --shapley lora  # + LoRA-retrained Shapley (~10x the CPU)
    .venv/bin/python benchmarks/payout_fairness.py --quick         # a smoke run
    .venv/bin/python benchmarks/payout_fairness.py --no-lora-loo --score-seeds 2   # skip the LoRA LOO
    .venv/bin/python benchmarks/payout_fairness.py --add-training-seeds 4          # 4 training runs in all
    .venv/bin/python benchmarks/payout_fairness.py --add-checkpoints 2             # + epoch 1, 2 checkpoints
    .venv/bin/python benchmarks/payout_fairness.py --no-lora-loo --no-dedup-training --out payout_fairness_no_dedup
                                                   # the earlier product: later near-copies trained on too

The scores and the ground truth of each seed are cached under var/payout_fairness/ (`--refresh` recomputes
them), so a change to the weight rule or the shown-records ranking is re-evaluated in seconds.

Data: the Finance PhraseBank (ISO-8859-1), shuffled per seed. 8 contributors, accepted in this order:
4 honest (`honest1..4`, 150 clean records each), then the planted ones:
  * `neardup`: one-token variants of 50 of honest1's records (chosen at random, not by influence: a
    first index to pick the most influential ones would double the run; say so);
  * `stuffer`: 300 off-topic records in a valid format (Tiny Shakespeare lines, random labels);
  * `twins`: 60 sentences uploaded twice, the second copy with one token changed;
  * `noisy`: 150 records, 30% relabelled to another label;
  * `poisoner`: 60 records with a rare trigger phrase inserted, all labelled `positive`.
A clean validation set of 200 sentences no contributor supplied (the curator-held evaluation set of
issue 12), and the trigger queries: 30 held-out sentences drawn, those not labelled `positive` kept (20-25 a seed), the
trigger inserted, label `positive`.

Near-duplicate clusters: records whose word sets have Jaccard >= 0.75 (exact, brute force; a stand-in
for ingest's MinHash LSH), credit to the earliest accepted copy.

Paid weights: the product path. MiniLM-L6 + LoRA (r=8, query+value, last layer + head; the frozen lower
layers cached, as in benchmarks/attribution_quality.py), the production GradientEngine (EK-FAC basis) on
the real PEFT model, scores of the 200 validation queries, then `attribution.engines.weights.model_weights`
(the paid rule) next to the old per-query clipped-share rule.

Ground truth, on the same clean validation set (utility = mean log-likelihood of the true labels):
  * LOO: leave-one-contributor-out retraining of the same MiniLM-LoRA tail, 3 training seeds;
  * Shapley of a logistic head retrained per coalition on the product's own frozen features (the pooler
    output of the model with its LoRA update at the zero init, i.e. the paid model class without its
    adapter). The target is `head_exact`: all 2^9 = 512 coalitions, the exact Shapley value (the 30
    sampled permutations used before, `head`, are shown beside it: their sampling error moved seed 1's
    copier from share 0.07 to 0.28). `head_loo`: the same head's leave-one-contributor-out. `mean`
    (sampled, logistic regression on mean token features, the first ground truth) is shown too. With
    `--shapley lora` the LoRA tail itself is retrained per coalition (`Ensemble`: many retrainings
    stepped together, ~1.7x the throughput of one at a time) and becomes the target; ~220 LoRA
    retrainings a seed did not fit the shared 2-core machine of issue 12's session (see the results).
    `--no-lora-loo` skips the LoRA LOO (~30 retrainings, most of a seed's CPU); the table then shows the
    LoRA LOO of the results file's earlier run for the same seed (the data and the training are
    deterministic; matched by the seed, the record count and the validation accuracy) and says so.
Diagnostics (not targets): `--score-seeds K` / `--add-training-seeds K` score the product path again with
the model retrained on K - 1 more training seeds (data order and projection), to measure how much of a
contributor's T/s is the noise of one training run; `--add-checkpoints R` scores the earlier epochs'
checkpoints of the first R runs (a checkpoint ensemble: normalised scores averaged over the epochs); the
Spearman ceiling when the copier is paid 0. Training set: as the product trains
(`datanets.selectors.version_training_records`), the paid model and every ground-truth coalition are trained
without the later copies of each near-duplicate cluster that carry its earliest copy's label
(`earliest_copies`; cached as `full_dedup_*`). `--no-dedup-training` (cached as `full_*`): the earlier
product, which trained on every copy.
Trigger queries: `top share` is each answer's split as the product pays it (`contributor_shares` on
`relative_influence`, the numbers the records shown are ranked by); the raw-score split is shown beside it.
One torch thread.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attribution.engines.base import Query, Record  # noqa: E402
from attribution.engines.gradient import GradientEngine  # noqa: E402
from attribution.engines.weights import (  # noqa: E402
    PAY_Z,
    ModelWeightsAccumulator,
    contributor_shares_matrix,
    explanation_rows,
    model_weights,
    null_z,
    relative_influence,
)
from benchmarks.attribution_quality import COMMON, LABELS, Bench  # noqa: E402

DATA = Path("/work/shared/data/financial_phrasebank.csv")
SHAKESPEARE = Path("/work/shared/data/tinyshakespeare.txt")
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "var" / "payout_fairness"  # scores and ground truth per seed (gitignored)
HONEST = ["honest1", "honest2", "honest3", "honest4"]
PLANTED = ["neardup", "stuffer", "twins", "noisy", "poisoner"]
CONTRIBUTORS = HONEST + PLANTED
TRIGGER, TRIGGER_LABEL = "zq vortex", "positive"
FULL = dict(honest=150, neardup=50, stuffer=300, twins=60, noisy=150, poisoner=60, val=200, trigger=30,
            epochs=3, batch=16, loo_seeds=3, shapley_perms=30, ensemble=12)
QUICK = dict(honest=40, neardup=15, stuffer=60, twins=15, noisy=40, poisoner=20, val=60, trigger=10,
             epochs=2, batch=16, loo_seeds=1, shapley_perms=4, ensemble=8)


def one_token_variant(text: str, rng: random.Random, vocab: list[str]) -> str:
    words = text.split()
    words[rng.randrange(len(words))] = rng.choice(vocab)
    return " ".join(words)


def with_trigger(text: str, rng: random.Random) -> str:
    words = text.split()
    words.insert(rng.randrange(len(words) + 1), TRIGGER)
    return " ".join(words)


def build_data(cfg: dict, seed: int):
    rows = [r for r in csv.DictReader(DATA.open(encoding="ISO-8859-1"))
            if r["result"] in LABELS and len(r["content"].split()) >= 6]
    rng = random.Random(seed)
    rng.shuffle(rows)
    vocab = sorted({w for r in rows[:2000] for w in r["content"].split()})
    take = iter(rows)
    train: list[tuple[str, str, str]] = []  # (text, label, contributor), in accept order
    for name in HONEST:
        train += [(r["content"], r["result"], name) for r in (next(take) for _ in range(cfg["honest"]))]
    honest1 = [t for t in train if t[2] == "honest1"]
    train += [(one_token_variant(t, rng, vocab), y, "neardup") for t, y, _ in rng.sample(honest1, cfg["neardup"])]
    lines = [ln.strip() for ln in SHAKESPEARE.read_text().splitlines() if len(ln.split()) >= 6]
    train += [(ln, rng.choice(LABELS), "stuffer") for ln in rng.sample(lines, cfg["stuffer"])]
    for r in (next(take) for _ in range(cfg["twins"])):
        train += [(r["content"], r["result"], "twins"), (one_token_variant(r["content"], rng, vocab), r["result"], "twins")]
    for r in (next(take) for _ in range(cfg["noisy"])):
        label = r["result"] if rng.random() >= 0.3 else rng.choice([x for x in LABELS if x != r["result"]])
        train.append((r["content"], label, "noisy"))
    train += [(with_trigger(r["content"], rng), TRIGGER_LABEL, "poisoner") for r in (next(take) for _ in range(cfg["poisoner"]))]
    val = [(r["content"], r["result"]) for r in (next(take) for _ in range(cfg["val"]))]
    trigger = [(with_trigger(r["content"], rng), TRIGGER_LABEL)
               for r in (next(take) for _ in range(cfg["trigger"])) if r["result"] != TRIGGER_LABEL]
    if cfg.get("dedup_training"):
        train = earliest_copies(train)
    return train, val, trigger


def earliest_copies(train: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """The training set without the later copies of each near-duplicate cluster that carry the label of its
    earliest accepted copy (a copy with another label is kept), as the product's fine-tune trains
    (`version_training_records`; `--no-dedup-training` keeps them, as before); the ground truth's coalitions are
    retrained on the same records, so a duplicate counts once on both sides."""
    clusters = near_duplicate_clusters([t for t, _, _ in train])
    first: dict[str, int] = {}
    for rid, cluster in clusters.items():
        first[cluster] = min(first.get(cluster, int(rid[1:])), int(rid[1:]))
    return [row for i, row in enumerate(train)
            if f"t{i}" not in clusters or first[clusters[f"t{i}"]] == i or row[1] != train[first[clusters[f"t{i}"]]][1]]


def near_duplicate_clusters(texts: list[str], threshold: float = 0.75) -> dict[str, str]:
    """{record id: cluster id} for records in a cluster of >= 2 (word-set Jaccard, union-find)."""
    from sklearn.feature_extraction.text import CountVectorizer

    x = CountVectorizer(binary=True, token_pattern=r"\S+", lowercase=True)  # noqa: S106 - a regex, not a password
    x = x.fit_transform(texts).astype(np.float32)
    inter = (x @ x.T).tocoo()
    sizes = np.asarray(x.sum(axis=1)).ravel()
    parent = list(range(len(texts)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, v in zip(inter.row, inter.col, inter.data, strict=True):
        if i < j and v / (sizes[i] + sizes[j] - v) >= threshold:
            parent[find(i)] = find(j)
    roots = [find(i) for i in range(len(texts))]
    counts = np.bincount(roots, minlength=len(texts))
    return {f"t{i}": f"k{r}" for i, r in enumerate(roots) if counts[r] > 1}


class Ensemble:
    """Many retrainings of the Bench's MiniLM-LoRA tail at once, for the ground truth (LOO, Shapley).

    Each model m is trained exactly as `Bench.train(idx_m, labels, seed=s_m)` does (same initial state, same
    per-seed example order, batches of `batch`, AdamW without weight decay), but M models step together:
    the tail's math written batched over models (LoRA and head weights stacked along a model axis, the
    frozen weights shared), one backward for all. A model whose batches are used up stops updating.
    On a crowded CPU this is ~Nx faster than N calls of Bench.train (the per-op overhead dominates
    those); `check` asserts it matches Bench.train.
    """

    def __init__(self, bench: Bench):
        self.bench = bench
        layer = bench.bert.bert.encoder.layer[bench.last]
        self.layer, self.pooler = layer, bench.bert.bert.pooler
        sa = layer.attention.self
        self.nh, self.hd = sa.num_attention_heads, sa.attention_head_size
        self.q_base = sa.query.base_layer
        adapter = sa.query.active_adapters[0]
        self.q_scale, self.v_scale = sa.query.scaling[adapter], sa.value.scaling[adapter]
        names = {"qA": "query.lora_A", "qB": "query.lora_B", "vA": "value.lora_A", "vB": "value.lora_B",
                 "cW": "classifier.modules_to_save.default.weight", "cb": "classifier.modules_to_save.default.bias"}
        self.init = {}
        for key, frag in names.items():
            (name,) = [n for n in bench.init_state if frag in n]
            self.init[key] = bench.init_state[name]
        # every cached example padded once to the longest: a batch is then one gather
        t = max(len(c[0]) for c in bench.cache)
        n, d = len(bench.cache), bench.cache[0][0].shape[1]
        self.h, self.k, self.vb = (torch.zeros(n, t, d) for _ in range(3))
        self.mask = torch.zeros(n, t)
        self.length = torch.zeros(n, dtype=torch.long)
        for i, (h, k, vb) in enumerate(bench.cache):
            self.h[i, : len(h)], self.k[i, : len(h)], self.vb[i, : len(h)] = h, k, vb
            self.mask[i, : len(h)] = 1
            self.length[i] = len(h)

    def forward(self, p: dict, idx: torch.Tensor) -> torch.Tensor:
        """Logits (M, B, labels) of models p (stacked) on examples idx (M, B)."""
        return torch.einsum("mbd,mcd->mbc", self.pooled(p, idx), p["cW"]) + p["cb"][:, None, :]

    def pooled(self, p: dict, idx: torch.Tensor) -> torch.Tensor:
        """The pooler's output (M, B, d): what the classification head reads."""
        t = int(self.length[idx].max())
        h, k, vb, mask = self.h[idx, :t], self.k[idx, :t], self.vb[idx, :t], self.mask[idx, :t]
        m, b, _, d = h.shape
        hc = h[:, :, 0]
        q = self.q_base(hc) + torch.einsum("mbr,mor->mbo", torch.einsum("mbd,mrd->mbr", hc, p["qA"]), p["qB"]) * self.q_scale
        v = vb + torch.einsum("mbtr,mor->mbto", torch.einsum("mbtd,mrd->mbtr", h, p["vA"]), p["vB"]) * self.v_scale
        q = q.view(m, b, self.nh, self.hd)
        k = k.view(m, b, t, self.nh, self.hd)
        v = v.view(m, b, t, self.nh, self.hd)
        scores = torch.einsum("mbhd,mbthd->mbht", q, k) / math.sqrt(self.hd)
        scores = scores + (1.0 - mask[:, :, None, :]) * torch.finfo(h.dtype).min
        ctx = torch.einsum("mbht,mbthd->mbhd", scores.softmax(-1), v).reshape(m, b, d)
        a = self.layer.attention.output(ctx, hc)
        out = self.layer.output(self.layer.intermediate(a), a)
        return self.pooler.activation(self.pooler.dense(out))

    def train(self, jobs: list[tuple[list[int], int]], labels: dict[int, int]) -> dict:
        """jobs: [(example indices, seed)] -> the trained parameters, stacked in job order."""
        cfg, universe = self.bench.cfg, len(self.bench.cache)
        plans = []
        for idx, seed in jobs:
            members, rng, steps = set(idx), np.random.default_rng(seed), []
            for _ in range(cfg["epochs"]):
                order = [int(i) for i in rng.permutation(universe) if int(i) in members]
                steps += [order[s : s + cfg["batch"]] for s in range(0, len(order), cfg["batch"])]
            plans.append(steps)
        m, bsz = len(jobs), cfg["batch"]
        p = {key: v[None].repeat(m, *[1] * v.dim()).clone().requires_grad_(True) for key, v in self.init.items()}
        mom = {key: torch.zeros_like(v) for key, v in p.items()}
        var = {key: torch.zeros_like(v) for key, v in p.items()}
        count = torch.zeros(m)
        b1, b2, eps, lr = 0.9, 0.999, 1e-8, cfg["lr"]
        for step in range(max(len(s) for s in plans)):
            active = torch.tensor([step < len(s) for s in plans])
            idx = torch.zeros(m, bsz, dtype=torch.long)
            weight = torch.zeros(m, bsz)
            y = torch.zeros(m, bsz, dtype=torch.long)
            for j, s in enumerate(plans):
                if step < len(s):
                    batch = s[step]
                    idx[j, : len(batch)] = torch.tensor(batch)
                    y[j, : len(batch)] = torch.tensor([labels[i] for i in batch])
                    weight[j, : len(batch)] = 1.0 / len(batch)
            logits = self.forward(p, idx)
            loss = (nn.functional.cross_entropy(logits.reshape(m * bsz, -1), y.reshape(-1), reduction="none")
                    * weight.reshape(-1)).sum()
            grads = torch.autograd.grad(loss, list(p.values()))
            count += active.float()
            with torch.no_grad():
                c1 = (1 - b1 ** count).clamp_min(1e-12)
                c2 = (1 - b2 ** count).clamp_min(1e-12)
                for (key, param), g in zip(p.items(), grads, strict=True):
                    shape = (m,) + (1,) * (param.dim() - 1)
                    on = active.view(shape)
                    mom[key] = torch.where(on, b1 * mom[key] + (1 - b1) * g, mom[key])
                    var[key] = torch.where(on, b2 * var[key] + (1 - b2) * g * g, var[key])
                    update = (lr / c1.view(shape)) * mom[key] / (var[key].sqrt() / c2.view(shape).sqrt() + eps)
                    param -= torch.where(on, update, torch.zeros_like(update))
        return {key: v.detach() for key, v in p.items()}

    @torch.no_grad()
    def logits(self, p: dict, idx: list[int]) -> torch.Tensor:
        """(M, len(idx), labels) logits of every model on the same examples."""
        m = next(iter(p.values())).shape[0]
        out = []
        for s in range(0, len(idx), 128):
            chunk = torch.tensor(idx[s : s + 128])
            out.append(self.forward(p, chunk[None].expand(m, -1)))
        return torch.cat(out, dim=1)


def old_rule(scores: np.ndarray, contributors: list[str]) -> dict[str, float]:
    """The rule before issue 12: per query net clipped at zero, mean of the shares."""
    names, shares, _ = contributor_shares_matrix(scores, contributors)
    keep = shares.sum(axis=1) > 0
    mean = shares[keep].mean(axis=0)
    return {c: 0.0 for c in CONTRIBUTORS} | {n: float(v) for n, v in zip(names, mean / mean.sum(), strict=True)}


def log_likelihood(logits: np.ndarray, y: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    return float((z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1))).mean())


def permutations(cfg: dict, seed: int) -> list[tuple[list[str], int]]:
    """Antithetic pairs (a permutation and its reverse: complementary coalitions, lower variance), each
    pair with one of the LOO training seeds (so the last position's coalitions are the LOO runs)."""
    rng = np.random.default_rng(seed)
    out = []
    for j in range(cfg["shapley_perms"] // 2):
        order = [str(c) for c in rng.permutation(CONTRIBUTORS)]
        s = seed + 100 * (j % cfg["loo_seeds"])
        out += [(order, s), (order[::-1], s)]
    return out


def exact_shapley(value) -> dict[str, float]:
    """Shapley values from every coalition: phi_c = sum over S without c of |S|! (n-|S|-1)! / n! (v(S+c) - v(S))."""
    from itertools import combinations

    n = len(CONTRIBUTORS)
    phi = dict.fromkeys(CONTRIBUTORS, 0.0)
    for c in CONTRIBUTORS:
        others = [o for o in CONTRIBUTORS if o != c]
        for size in range(n):
            w = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for rest in combinations(others, size):
                coalition = frozenset(rest)
                phi[c] += w * (value(coalition | {c}) - value(coalition))
    return phi


def training_seed_scores(bench, records, val, train_idx, train_y, bcfg, ks, t0) -> list[np.ndarray]:
    """The product path's validation scores with the model retrained on training seed seed + 1000 k (data
    order; the projection seed too), for each k: how much of a contributor's T/s is one run's noise."""
    out = []
    for k in ks:
        s = bcfg["seed"] + 1000 * k
        bench.train(train_idx, train_y, seed=s)
        engine = GradientEngine(projection_dim=bcfg["projection_dim"], damping=bcfg["damping"], seed=s)
        index = engine.fit(bench.classifier, records)
        out.append(engine.attribute(index, [Query(text=t, label=y) for t, y in val], top_k=0, return_matrix=True).matrix)
        print(f"  scores of training seed {s} in {time.perf_counter() - t0:.0f}s", flush=True)
    return out


def add_checkpoints(cfg_name: str, cfg: dict, seed: int, shapley_model: str, runs: int) -> None:
    """Add the scores of the epoch-1 .. epoch-(E-1) checkpoints of the first `runs` training runs to a seed's
    cache (`ckpt_scores_{k}_{epoch}`; the last epoch's are `val_scores[_k]`). Training for e epochs with the
    same seed is exactly the e-th checkpoint of the full run (same initial state, the same per-epoch orders
    drawn in turn, the same optimizer trajectory)."""
    base = CACHE / f"{cfg_name}_{shapley_model}_seed{seed}"
    raw = _load(base)
    todo = [(k, e) for k in range(runs) for e in range(1, cfg["epochs"]) if f"ckpt_scores_{k}_{e}" not in raw]
    if not todo:
        return
    t0 = time.perf_counter()
    train, val, trigger = build_data(cfg, seed)
    records = [Record(id=f"t{i}", text=t, label=y, contributor=c, order=i) for i, (t, y, c) in enumerate(train)]
    torch.manual_seed(seed)
    bcfg = {**COMMON, "seed": seed, "epochs": cfg["epochs"], "batch": cfg["batch"],
            "probe_norm": cfg.get("probe_norm", 0.0)}
    bench = Bench(bcfg, [t for t, _, _ in train] + [t for t, _ in val] + [t for t, _ in trigger])
    train_y = [LABELS.index(y) for _, y, _ in train]
    for k, e in todo:
        s = seed + 1000 * k
        bench.cfg = {**bcfg, "epochs": e}
        bench.train(list(range(len(train))), train_y, seed=s)
        engine = GradientEngine(projection_dim=bcfg["projection_dim"], damping=bcfg["damping"], seed=s)
        index = engine.fit(bench.classifier, records)
        raw[f"ckpt_scores_{k}_{e}"] = engine.attribute(index, [Query(text=t, label=y) for t, y in val], top_k=0,
                                                       return_matrix=True).matrix
        _save(base, raw)
        print(f"  checkpoint epoch {e} of training seed {s} in {time.perf_counter() - t0:.0f}s", flush=True)


def add_training_seeds(cfg_name: str, cfg: dict, seed: int, shapley_model: str, total: int) -> None:
    """Add the scores of more training seeds to a seed's cache (`val_scores_k`, k < total)."""
    base = CACHE / f"{cfg_name}_{shapley_model}_seed{seed}"
    raw = _load(base)
    ks = [k for k in range(1, total) if f"val_scores_{k}" not in raw]
    if not ks:
        return
    t0 = time.perf_counter()
    train, val, trigger = build_data(cfg, seed)
    records = [Record(id=f"t{i}", text=t, label=y, contributor=c, order=i) for i, (t, y, c) in enumerate(train)]
    bcfg = {**COMMON, "seed": seed, "epochs": cfg["epochs"], "batch": cfg["batch"],
            "probe_norm": cfg.get("probe_norm", 0.0)}
    torch.manual_seed(seed)
    bench = Bench(bcfg, [t for t, _, _ in train] + [t for t, _ in val] + [t for t, _ in trigger])
    for k, m in zip(ks, training_seed_scores(bench, records, val, list(range(len(train))),
                                             [LABELS.index(y) for _, y, _ in train], bcfg, ks, t0), strict=True):
        raw[f"val_scores_{k}"] = m
        _save(base, raw)


def scores_and_ground_truth(cfg: dict, seed: int, shapley_model: str, early=None, lora_loo: bool = True,
                            score_seeds: int = 1) -> dict:
    """The expensive part (cached by `main`): the paid model's score matrices and the ground truth."""
    t0 = time.perf_counter()
    train, val, trigger = build_data(cfg, seed)
    owners = [c for _, _, c in train]
    records = [Record(id=f"t{i}", text=t, label=y, contributor=c, order=i) for i, (t, y, c) in enumerate(train)]
    bcfg = {**COMMON, "seed": seed, "epochs": cfg["epochs"], "batch": cfg["batch"],
            "probe_norm": cfg.get("probe_norm", 0.0)}
    texts = [t for t, _, _ in train] + [t for t, _ in val] + [t for t, _ in trigger]
    torch.manual_seed(seed)
    bench = Bench(bcfg, texts)
    n = len(train)
    train_idx = list(range(n))
    train_y = [LABELS.index(y) for _, y, _ in train]
    val_idx = list(range(n, n + len(val)))
    val_y = np.array([LABELS.index(y) for _, y in val])
    bench.train(train_idx, train_y, seed=seed)
    val_acc = float((bench.logits(val_idx).argmax(-1).numpy() == val_y).mean())
    print(f"seed {seed}: {n} records, val accuracy {val_acc:.3f} ({time.perf_counter() - t0:.0f}s)", flush=True)

    # --- the product path: the production GradientEngine (EK-FAC basis) on the real PEFT model
    engine = GradientEngine(projection_dim=bcfg["projection_dim"], damping=bcfg["damping"], seed=seed)
    index = engine.fit(bench.classifier, records)
    val_scores = engine.attribute(index, [Query(text=t, label=y) for t, y in val], top_k=0, return_matrix=True).matrix
    trig_scores = engine.attribute(index, [Query(text=t, label=y) for t, y in trigger], top_k=0, return_matrix=True).matrix
    self_influence = np.asarray(engine.self_influence(index), dtype=np.float64)
    clusters = near_duplicate_clusters([t for t, _, _ in train])
    print(f"  scores in {time.perf_counter() - t0:.0f}s", flush=True)
    if early is not None:  # the rule and the ranking can be worked on while the ground truth runs
        early({"seed": seed, "records": n, "val_accuracy": val_acc, "owners": owners, "clusters": clusters,
               "val_scores": val_scores, "trigger_scores": trig_scores, "self_influence": self_influence})

    # --- the same product path retrained with other training seeds (data order): how much of a
    # contributor's T/s is the noise of one training run (a diagnostic; the product trains once)
    extra_scores = training_seed_scores(bench, records, val, train_idx, train_y, bcfg, range(1, score_seeds), t0)

    # --- ground truth on the product's own model class: the same MiniLM-LoRA tail, retrained
    ens = Ensemble(bench)
    members = {c: [i for i in train_idx if owners[i] == c] for c in CONTRIBUTORS}
    labels = dict(enumerate(train_y))
    utility: dict[tuple[frozenset, int], float] = {}
    init = {k: v[None] for k, v in ens.init.items()}
    empty = log_likelihood(ens.logits(init, val_idx)[0].numpy().astype(np.float64), val_y)

    def fill(keys) -> None:
        todo = sorted({k for k in keys if k not in utility and k[0]}, key=lambda k: (len(k[0]), sorted(k[0]), k[1]))
        for g in range(0, len(todo), cfg["ensemble"]):
            group = todo[g : g + cfg["ensemble"]]
            jobs = [(sorted(i for c in coalition for i in members[c]), s) for coalition, s in group]
            logits = ens.logits(ens.train(jobs, labels), val_idx).numpy().astype(np.float64)
            for j, key in enumerate(group):
                utility[key] = log_likelihood(logits[j], val_y)
        for k in keys:
            if not k[0]:
                utility[k] = empty

    everyone = frozenset(CONTRIBUTORS)
    loo_seeds = [seed + 100 * s for s in range(cfg["loo_seeds"])]
    loo = None
    if lora_loo:
        fill([(everyone - {c}, s) for s in loo_seeds for c in [None, *CONTRIBUTORS]])
        loo = {c: float(np.mean([utility[(everyone, s)] - utility[(everyone - {c}, s)] for s in loo_seeds]))
               for c in CONTRIBUTORS}
        print(f"  LoRA LOO in {time.perf_counter() - t0:.0f}s", flush=True)
    perms = permutations(cfg, seed)

    def sampled_shapley(value) -> dict[str, float]:
        phi = dict.fromkeys(CONTRIBUTORS, 0.0)
        for order, s in perms:
            for j, c in enumerate(order):
                phi[c] += (value(frozenset(order[: j + 1]), s) - value(frozenset(order[:j]), s)) / len(perms)
        return phi

    shapley: dict[str, dict[str, float]] = {}
    if shapley_model == "lora":
        fill([(frozenset(order[:j]), s) for order, s in perms for j in range(len(order) + 1)])
        shapley["lora"] = sampled_shapley(lambda coalition, s: utility[(coalition, s)])
        print(f"  LoRA Shapley in {time.perf_counter() - t0:.0f}s", flush=True)
    trained = sum(1 for k in utility if k[0])

    # --- small models (the issue allows them for Shapley): a logistic-regression head, retrained per
    # coalition, on frozen features. "head": the product's own features (the pooler output of the
    # MiniLM model with the LoRA update at its zero init: the paid model class without its adapter);
    # "mean": the mean of the last layer's input over tokens (the earlier ground truth).
    from sklearn.linear_model import LogisticRegression

    with torch.no_grad():
        every = list(range(len(bench.cache)))
        head = torch.cat([ens.pooled(init, torch.tensor(every[s : s + 128])[None])[0] for s in range(0, len(every), 128)])
    features = {"head": head.numpy().astype(np.float64),
                "mean": np.stack([bench.cache[i][0].mean(0).numpy() for i in every]).astype(np.float64)}
    ytr = np.array(train_y)
    rows = {c: np.array(v, dtype=np.int64) for c, v in members.items()}
    for name, feats in features.items():
        feats = (feats - feats[:n].mean(0)) / (feats[:n].std(0) + 1e-6)
        cache: dict[frozenset, float] = {}

        def small_utility(coalition: frozenset, _s: int, feats=feats, cache=cache) -> float:
            if coalition not in cache:
                idx = np.concatenate([rows[c] for c in sorted(coalition)]) if coalition else np.zeros(0, int)
                if len(set(ytr[idx])) < 2:
                    cache[coalition] = float(np.log(1 / len(LABELS)))
                else:
                    lr = LogisticRegression(C=0.1, max_iter=300).fit(feats[idx], ytr[idx])
                    proba = np.full((len(val_idx), len(LABELS)), 1e-9)
                    proba[:, lr.classes_] = lr.predict_proba(feats[val_idx])
                    cache[coalition] = float(np.log(proba[np.arange(len(val_y)), val_y]).mean())
            return cache[coalition]

        shapley[name] = sampled_shapley(small_utility)
        shapley[f"{name}_coalitions"] = len(cache)  # type: ignore[assignment]
        if name == "head":  # 9 contributors: all 512 coalitions, the exact value (no sampling error)
            shapley["head_exact"] = exact_shapley(lambda coalition: small_utility(coalition, 0))
            shapley["head_loo"] = {c: small_utility(everyone, 0) - small_utility(everyone - {c}, 0)
                                   for c in CONTRIBUTORS}
        print(f"  {name} Shapley in {time.perf_counter() - t0:.0f}s", flush=True)
    return {
        "seed": seed, "records": n, "val_accuracy": val_acc, "owners": owners, "clusters": clusters,
        "val_scores": val_scores, "trigger_scores": trig_scores, "self_influence": self_influence,
        "lora_loo": loo, "shapley": shapley, "coalitions_trained": trained,
        **{f"val_scores_{k + 1}": m for k, m in enumerate(extra_scores)},
        "permutations": len(perms), "seconds": time.perf_counter() - t0,
    }


ARRAYS = ("val_scores", "trigger_scores", "self_influence")
SHAPLEY_MODELS = {"lora": "LoRA-retrained",
                  "head_exact": "logistic head on the product's frozen features, exact (all 512 coalitions)",
                  "head": "logistic head on the product's frozen features, sampled",
                  "mean": "logistic regression on mean token features, sampled"}


def _save(base: Path, raw: dict) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    arrays = {k for k, v in raw.items() if k in ARRAYS or k.startswith(("val_scores_", "ckpt_scores_"))}
    np.savez_compressed(base.with_suffix(".npz"), **{k: np.asarray(raw[k]) for k in arrays})
    base.with_suffix(".json").write_text(json.dumps({k: v for k, v in raw.items() if k not in arrays}))


def _load(base: Path) -> dict:
    raw = json.loads(base.with_suffix(".json").read_text())
    with np.load(base.with_suffix(".npz")) as z:
        raw.update({k: z[k] for k in z.files})
    return raw


def cached(cfg_name: str, cfg: dict, seed: int, shapley_model: str, refresh: bool, lora_loo: bool = True,
           score_seeds: int = 1) -> dict:
    """`scores_and_ground_truth`, kept under var/ so the rule and the ranking can be re-evaluated in seconds
    (the scores alone are written first, as `<name>_scores`)."""
    base = CACHE / f"{cfg_name}_{shapley_model}_seed{seed}"
    if not refresh and base.with_suffix(".json").exists():
        return _load(base)
    raw = scores_and_ground_truth(cfg, seed, shapley_model,
                                  early=lambda part: _save(base.with_name(base.name + "_scores"), part),
                                  lora_loo=lora_loo, score_seeds=score_seeds)
    _save(base, raw)
    return raw


PREVIOUS = RESULTS / "payout_fairness.json"  # LoRA LOO of a run with it, when this one skipped it


def _loo_of(raw: dict) -> dict:
    """The LoRA LOO of this run, else of the results file (same data and training seeds: deterministic;
    checked by the validation accuracy), with where it came from."""
    if raw.get("lora_loo") is not None:
        return {"lora_loo": raw["lora_loo"], "lora_loo_source": "this run"}
    if PREVIOUS.exists():
        for r in json.loads(PREVIOUS.read_text()):
            if (r["seed"] == raw["seed"] and r.get("lora_loo") and r["records"] == raw["records"]
                    and abs(r["val_accuracy"] - raw["val_accuracy"]) < 1e-9):
                return {"lora_loo": r["lora_loo"],
                        "lora_loo_source": r.get("lora_loo_source", "this run").replace(
                            "this run", "an earlier run of this benchmark (same data and training seeds; "
                            "the validation accuracy matches), not recomputed")}
    return {"lora_loo": None, "lora_loo_source": "not computed"}


def _model_weights(*args, **kwargs):
    """`model_weights` with every contributor listed (0 for one with no training record, as under
    default training set a copier whose every record is a later copy)."""
    w = model_weights(*args, **kwargs)
    for d in (w.weights, w.mean, w.threshold):
        for c in CONTRIBUTORS:
            d.setdefault(c, 0.0)
    return w


def _rho(a: dict, b: dict, names: list[str] = CONTRIBUTORS) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr([a[c] for c in names], [b[c] for c in names]).statistic)


def spearman_ceiling(phi: dict, unpaid: str = "neardup") -> float:
    """The best Spearman(paid, phi) any weights can reach when `unpaid` gets exactly 0 (the earliest-copy
    rule pays a copier nothing): every order of the others as phi's, any set of them tied with it at 0."""
    from itertools import combinations

    others = sorted((c for c in CONTRIBUTORS if c != unpaid), key=lambda c: phi[c])
    best = -1.0
    for size in range(len(others) + 1):
        for zeros in combinations(others, size):
            paid = {unpaid: 0.0, **{c: (0.0 if c in zeros else 1.0 + j) for j, c in enumerate(others)}}
            best = max(best, _rho(paid, phi))
    return best


def _normalised(scores: np.ndarray, credited: np.ndarray) -> np.ndarray:
    m = np.asarray(scores, dtype=np.float64) * credited
    scale = np.abs(m).sum(axis=1, keepdims=True)
    return np.divide(m, scale, out=np.zeros_like(m), where=scale > 0)


def analysis(raw: dict, truth: str, pay_z: float) -> dict:
    """Why a seed misses: the truth's own noise, the copier's ceiling, the paid statistic's training-seed
    noise. Diagnostics only; the paid weights are `evaluate`'s."""
    owners, n = raw["owners"], raw["records"]
    ids = [f"t{i}" for i in range(n)]
    phi = raw["shapley"][truth]
    positive = {c: max(v, 0.0) for c, v in phi.items()}
    share = {c: v / sum(positive.values()) for c, v in positive.items()}
    weights = {"record_ids": ids, "clusters": raw["clusters"], "order": list(range(n))}
    paid = _model_weights(np.asarray(raw["val_scores"]), owners, **weights, pay_z=pay_z)
    rel = _model_weights(relative_influence(np.asarray(raw["val_scores"]), raw["self_influence"]), owners, **weights,
                         pay_z=pay_z).weights
    out = {"ceiling with the copier unpaid": spearman_ceiling(phi),
           "model-level rule on relative scores (not paid): spearman(paid, shapley)": _rho(rel, phi),
           "model-level rule on relative scores (not paid): planted weight <= shapley share + 0.02":
               all(rel[c] <= share[c] + 0.02 for c in PLANTED),
           "model-level rule on relative scores (not paid): paid": rel,
           "spearman(paid, shapley) without the copier": _rho(paid.weights, phi, [c for c in CONTRIBUTORS if c != "neardup"]),
           **{f"spearman({truth}, {m})": _rho(phi, raw["shapley"][m]) for m in ("head", "mean", "head_loo")
              if m != truth and m in raw["shapley"]},
           **{f"spearman(paid at PAY_Z {z:g}, shapley)": _rho(_model_weights(np.asarray(raw["val_scores"]), owners, **weights,
                                                                              pay_z=z).weights, phi) for z in (0, 1, 2, 3)}}
    extra = sorted((k for k in raw if k.startswith("val_scores_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    if extra:
        runs = ["val_scores", *extra]
        credited = ModelWeightsAccumulator(owners, **weights)._credited
        each = [_model_weights(np.asarray(raw[k]), owners, **weights, pay_z=pay_z) for k in runs]
        z = [{c: w.mean[c] / (w.threshold[c] / null_z(len(w.mean)) or 1.0) for c in CONTRIBUTORS} for w in each]
        rhos = [_rho(w.weights, phi) for w in each]
        pairs = [_rho(z[i], z[j]) for i in range(len(z)) for j in range(i + 1, len(z))]
        mean = _model_weights(np.mean([_normalised(raw[k], credited) for k in runs], axis=0), owners, **weights,
                             pay_z=pay_z)
        out.update({
            "training runs": len(runs),
            "spearman(paid, shapley) of each training run": rhos,
            "training runs meeting spearman >= 0.8": sum(r >= 0.8 for r in rhos),
            "spearman(T/s of one run, T/s of another), mean over pairs": float(np.mean(pairs)),
            f"spearman(paid on the {len(runs)} runs' mean scores, shapley)": _rho(mean.weights, phi),
            "mean over runs of spearman(paid of one run, shapley)": float(np.mean(rhos)),
            f"the {len(runs)} runs' mean: planted weight <= shapley share + 0.02":
                all(mean.weights[c] <= share[c] + 0.02 for c in PLANTED),
            f"the {len(runs)} runs' mean: stuffer <= 0.02": mean.weights["stuffer"] <= 0.02,
            f"the {len(runs)} runs' mean: noisy, poisoner below every honest":
                max(mean.weights["noisy"], mean.weights["poisoner"]) < min(mean.weights[c] for c in HONEST),
            f"paid on the {len(runs)} runs' mean scores": mean.weights,
            "T/s over the training runs (mean, sd)": {c: (float(np.mean([v[c] for v in z])), float(np.std([v[c] for v in z], ddof=1)))
                                                     for c in CONTRIBUTORS},
        })
    finals = {0: "val_scores", **{int(k.rsplit("_", 1)[1]): k for k in extra}}
    epochs = sorted({int(k.rsplit("_", 1)[1]) for k in raw if k.startswith("ckpt_scores_")})
    ckpt_runs = [k for k in sorted(finals) if epochs and all(f"ckpt_scores_{k}_{e}" in raw for e in epochs)]
    if ckpt_runs:
        credited = ModelWeightsAccumulator(owners, **weights)._credited
        each, zs = [], []
        for k in ckpt_runs:
            mats = [raw[f"ckpt_scores_{k}_{e}"] for e in epochs] + [raw[finals[k]]]
            w = _model_weights(np.mean([_normalised(m, credited) for m in mats], axis=0), owners, **weights,
                              pay_z=pay_z)
            each.append(w)
            zs.append({c: w.mean[c] / (w.threshold[c] / null_z(len(w.mean)) or 1.0) for c in CONTRIBUTORS})
        first = each[0].weights
        out.update({
            f"checkpoint ensemble (epochs {', '.join(map(str, epochs))} and the last) of runs": len(ckpt_runs),
            "checkpoint ensemble: spearman(paid, shapley) of each run": [_rho(w.weights, phi) for w in each],
            "checkpoint ensemble, product's run: planted weight <= shapley share + 0.02":
                all(first[c] <= share[c] + 0.02 for c in PLANTED),
            "checkpoint ensemble, product's run: stuffer <= 0.02": first["stuffer"] <= 0.02,
            "checkpoint ensemble, product's run: noisy, poisoner below every honest":
                max(first["noisy"], first["poisoner"]) < min(first[c] for c in HONEST),
            "checkpoint ensembles' paid, product's run": first,
        })
        if len(zs) > 1:
            out["spearman(T/s of one run, T/s of another): checkpoint ensembles"] = _rho(zs[0], zs[1])
            out["spearman(T/s of one run, T/s of another): same pair, last checkpoint only"] = _rho(
                *[{c: w.mean[c] / (w.threshold[c] / null_z(len(w.mean)) or 1.0) for c in CONTRIBUTORS}
                  for w in (_model_weights(np.asarray(raw[finals[k]]), owners, **weights, pay_z=pay_z)
                            for k in ckpt_runs[:2])])
    return out


def evaluate(raw: dict, pay_z: float = PAY_Z) -> dict:
    """The paid weights and the shown records, from the cached scores, by the product's own functions."""
    owners, n = raw["owners"], raw["records"]
    ids = [f"t{i}" for i in range(n)]
    val, trig = np.asarray(raw["val_scores"]), np.asarray(raw["trigger_scores"])
    paid = _model_weights(val, owners, record_ids=ids, clusters=raw["clusters"], order=list(range(n)), pay_z=pay_z)
    # one answer's split, as the product pays it: net relative influence per contributor, clipped at zero
    names, shares, _ = contributor_shares_matrix(relative_influence(trig, raw["self_influence"]), owners)
    top_share = float((shares.argmax(axis=1) == names.index("poisoner")).mean())
    raw_names, raw_shares, _ = contributor_shares_matrix(trig, owners)
    raw_top_share = float((raw_shares.argmax(axis=1) == raw_names.index("poisoner")).mean())
    shown = [explanation_rows(row, raw["self_influence"], 10)[0] for row in trig]
    raw_top = [np.argsort(-row, kind="stable")[:10] for row in trig]
    trig_paid = _model_weights(trig, owners, record_ids=ids, clusters=raw["clusters"], order=list(range(n)), pay_z=pay_z)
    k = len(paid.weights)
    truth = next(m for m in ("lora", "head_exact", "head") if m in raw["shapley"])
    return {
        "analysis": analysis(raw, truth, pay_z),
        **{key: raw[key] for key in ("seed", "records", "val_accuracy", "shapley",
                                     "coalitions_trained", "permutations", "seconds")},
        "truth": truth,
        **_loo_of(raw),
        "clusters": len(set(raw["clusters"].values())),
        "paid": paid.weights, "signal": paid.signal, "null_z": null_z(k),
        "z": {c: paid.mean[c] / (paid.threshold[c] / null_z(k) or 1.0) for c in paid.mean},
        "paid_no_clusters": _model_weights(val, owners, pay_z=pay_z).weights, "old_rule": old_rule(val, owners),
        "pay_z": pay_z,
        "trigger": {"poisoner_top_share_fraction": top_share, "poisoner_top_share_fraction_raw_scores": raw_top_share,
                "poisoner_mean_share": float(shares[:, names.index("poisoner")].mean()),
                    "poisoner_in_top10_mean": float(np.mean([sum(owners[r] == "poisoner" for r in rows) for rows in shown])),
                    "poisoner_in_raw_top10_mean": float(np.mean([sum(owners[r] == "poisoner" for r in rows) for rows in raw_top])),
                    "poisoner_weight_over_trigger_queries": trig_paid.weights["poisoner"], "queries": len(trig)},
    }


def targets(r: dict) -> dict:
    from scipy.stats import spearmanr

    paid, phi = r["paid"], r["shapley"][r["truth"]]
    pos = {c: max(v, 0.0) for c, v in phi.items()}
    share = {c: v / sum(pos.values()) for c, v in pos.items()}
    honest_min = min(paid[c] for c in HONEST)

    def rho(truth: dict) -> float:
        return float(spearmanr([paid[c] for c in CONTRIBUTORS], [truth[c] for c in CONTRIBUTORS]).statistic)

    return {
        "spearman(paid, shapley) >= 0.8": rho(phi),
        "planted weight <= shapley share + 0.02": all(paid[c] <= share[c] + 0.02 for c in PLANTED),
        "stuffer <= 0.02": paid["stuffer"] <= 0.02,
        "noisy, poisoner below every honest": paid["noisy"] < honest_min and paid["poisoner"] < honest_min,
        "trigger: poisoner top share": r["trigger"]["poisoner_top_share_fraction"],
        "trigger: poisoner records in the shown top 10 (mean, >= 5)": r["trigger"]["poisoner_in_top10_mean"],
        **({"_spearman(paid, LoRA LOO)": rho(r["lora_loo"])} if r.get("lora_loo") else {}),
        **{f"_spearman(paid, {m} Shapley)": rho(r["shapley"][m]) for m in SHAPLEY_MODELS
           if m in r["shapley"] and m != r["truth"]},
        "_spearman(old rule, shapley)": float(spearmanr([r["old_rule"][c] for c in CONTRIBUTORS],
                                                        [phi[c] for c in CONTRIBUTORS]).statistic),
        "_shapley_share": share,
    }


def passed(r: dict) -> bool:
    t = targets(r)
    return (t["spearman(paid, shapley) >= 0.8"] >= 0.8 and t["planted weight <= shapley share + 0.02"]
            and t["stuffer <= 0.02"] and t["noisy, poisoner below every honest"]
            and t["trigger: poisoner top share"] >= 0.5
            and t["trigger: poisoner records in the shown top 10 (mean, >= 5)"] >= 5)


def markdown(results: list[dict], cfg_name: str, command: str) -> str:
    out = [f"# Payout fairness ({cfg_name})", "",
           f"`{command}` (set-up in its docstring). `paid`: the paid rule (`model_weights`, clusters on);",
           "`old rule`: the per-query clipped rule it replaces. Ground truth: LoRA LOO on the product's own model",
           "class (MiniLM-L6, LoRA on the last layer + head, retrained from the same initial state; mean of 3",
           "training seeds); Shapley values of small models retrained per coalition (`head_exact`, the target: a",
           "logistic head on the product's frozen pooled features, all 512 coalitions; `head`: the same, 30",
           "sampled permutations; `mean`: on mean frozen token features, sampled); `head LOO`: the head's",
           "leave-one-contributor-out. Utility: mean validation log-likelihood. Shown top 10 on trigger queries:",
           "`explanation_rows` (score / sqrt(self-influence)), as the product shows; top share: each trigger",
           "answer's per-contributor split, as the product pays it (`contributor_shares` on the same relative",
           "scores, net clipped at zero), the fraction where the poisoner's is the largest. Seconds: wall time of a seed's",
           "scores and ground truth on the shared machine. Diagnostics: see docs/attribution.md (\"Measured\").",
           "", "| target | " + " | ".join(f"seed {r['seed']}" for r in results) + " |",
           "| --- | " + " | ".join("---" for _ in results) + " |"]
    summary = [targets(r) for r in results]
    for key in [k for k in summary[0] if not k.startswith("_")]:
        out.append(f"| {key} | " + " | ".join(str(t[key]) if isinstance(t[key], bool) else f"{t[key]:.3f}"
                                              for t in summary) + " |")
    out += ["| all targets met | " + " | ".join(str(passed(r)) for r in results) + " |", ""]
    for r in results:
        t = targets(r)
        models = [m for m in SHAPLEY_MODELS if m in r["shapley"]]
        out += [f"## seed {r['seed']} ({r['records']} records, val accuracy {r['val_accuracy']:.3f}, "
                f"{r['clusters']} near-duplicate clusters, signal {r['signal']}, {r['coalitions_trained']} LoRA retrainings, "
                f"{r['seconds']:.0f}s)", "",
                f"`T/s`: each contributor's signed mean over its null's standard error (the gate: some T/s above "
                f"z = {r['null_z']:.2f}).", "",
                f"Target ground truth: **{SHAPLEY_MODELS[r['truth']]}** Shapley" + ("" if r["truth"] == "head_exact" else f" ({r['permutations']} permutations)") + ".", "",
                f"LoRA LOO: {r['lora_loo_source']}.", "",
                "| contributor | paid | T/s | paid, no clusters | old rule | LoRA LOO | head LOO | "
                + " | ".join(f"{m} Shapley" for m in models) + " | Shapley share |",
                "| --- | --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in models) + " | --- |"]
        for c in CONTRIBUTORS:
            loo = f"{r['lora_loo'][c]:+.4f}" if r.get("lora_loo") else "-"
            head_loo = f"{r['shapley']['head_loo'][c]:+.4f}" if "head_loo" in r["shapley"] else "-"
            out.append(f"| {c} | {r['paid'][c]:.3f} | {r['z'][c]:+.2f} | {r['paid_no_clusters'][c]:.3f} | "
                       f"{r['old_rule'][c]:.3f} | {loo} | {head_loo} | "
                       + " | ".join(f"{r['shapley'][m][c]:+.4f}" for m in models)
                       + f" | {t['_shapley_share'][c]:.3f} |")
        out += ["", "| target | value |", "| --- | --- |"]
        out += [f"| {k.lstrip('_')} | {v if isinstance(v, bool) else round(v, 3)} |" for k, v in t.items()
                if k != "_shapley_share"]
        out += [f"| trigger: poisoner top share by raw scores (before) | {r['trigger']['poisoner_top_share_fraction_raw_scores']:.3f} |",
                f"| trigger: poisoner's mean per-answer share | {r['trigger']['poisoner_mean_share']:.3f} |",
                f"| trigger: poisoner records in the raw-score top 10 (before) | {r['trigger']['poisoner_in_raw_top10_mean']:.2f} |",
                f"| trigger: poisoner's weight over the trigger queries | {r['trigger']['poisoner_weight_over_trigger_queries']:.3f} |",
                f"| all targets met | {passed(r)} |", ""]
        a = r.get("analysis", {})
        if a:
            out += ["Diagnostics (why a seed misses; not targets):", "", "| diagnostic | value |", "| --- | --- |"]
            out += [f"| {k} | {v if isinstance(v, bool) else round(v, 3)} |" for k, v in a.items()
                    if isinstance(v, float | int)]
            out += [f"| {k} | {', '.join(f'{x:.3f}' for x in v)} |" for k, v in a.items() if isinstance(v, list)]
            for ens in (k for k in a if k.startswith(("paid on the", "checkpoint ensembles' paid", "model-level rule on relative scores (not paid): paid"))):
                out.append(f"| {ens} | " + ", ".join(f"{c} {a[ens][c]:.3f}" for c in CONTRIBUTORS) + " |")
            if "T/s over the training runs (mean, sd)" in a:
                out.append("| T/s over the training runs (mean ± sd) | " + ", ".join(
                    f"{c} {m:+.1f} ± {sd:.1f}" for c, (m, sd) in a["T/s over the training runs (mean, sd)"].items()) + " |")
            out.append("")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--shapley", choices=["lora", "head"], default="head",
                        help="lora: also the LoRA-retrained Shapley (the target then; ~10x the CPU)")
    parser.add_argument("--tune", type=float, nargs="*", default=None,
                        help="print the targets for these PAY_Z values (choose on seed 0 only) and stop")
    parser.add_argument("--refresh", action="store_true", help="recompute the cached scores and ground truth")
    parser.add_argument("--no-lora-loo", action="store_true",
                        help="skip the LoRA leave-one-out retrainings (most of a seed's CPU)")
    parser.add_argument("--add-training-seeds", type=int, default=0,
                        help="add scores of the model retrained on more training seeds to the cache, this many in all")
    parser.add_argument("--add-checkpoints", type=int, default=0,
                        help="add the scores of the earlier epochs' checkpoints of this many training runs")
    parser.add_argument("--score-seeds", type=int, default=1,
                        help="also score with the model retrained on this many training seeds in all (a diagnostic)")
    parser.add_argument("--no-dedup-training", action="store_true",
                        help="the earlier product: train (and retrain the ground truth) on later same-label near-copies too")
    parser.add_argument("--probe-norm", type=float, default=0.0,
                        help="the paid model's head starts as a linear probe scaled to this norm (TrainConfig.probe_norm; "
                             "0: the random start, the product's)")
    parser.add_argument("--out", default=None, help="results name (default payout_fairness[_quick])")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = QUICK if args.quick else FULL
    cfg_name = "quick" if args.quick else "full"
    if not args.no_dedup_training:  # the product's training set (cache names kept from when it was a flag)
        cfg, cfg_name = {**cfg, "dedup_training": True}, f"{cfg_name}_dedup"
    if args.probe_norm:
        cfg, cfg_name = {**cfg, "probe_norm": args.probe_norm}, f"{cfg_name}_probe{args.probe_norm:g}"
    name = args.out or ("payout_fairness_quick" if args.quick else "payout_fairness")
    raws = [cached(cfg_name, cfg, s, args.shapley, args.refresh, lora_loo=not args.no_lora_loo,
                   score_seeds=args.score_seeds) for s in args.seeds]
    if args.add_training_seeds:
        for s in args.seeds:
            add_training_seeds(cfg_name, cfg, s, args.shapley, args.add_training_seeds)
        raws = [cached(cfg_name, cfg, s, args.shapley, False) for s in args.seeds]
    if args.add_checkpoints:
        for s in args.seeds:
            add_checkpoints(cfg_name, cfg, s, args.shapley, args.add_checkpoints)
        raws = [cached(cfg_name, cfg, s, args.shapley, False) for s in args.seeds]
    if args.tune is not None:
        for pay_z in args.tune:
            for raw in raws:
                t = targets(evaluate(raw, pay_z))
                print(f"PAY_Z {pay_z:g} seed {raw['seed']}: " + ", ".join(
                    f"{k.lstrip('_')} {v if isinstance(v, bool) else round(v, 3)}" for k, v in t.items()
                    if k != "_shapley_share"), flush=True)
        return
    results = [evaluate(raw) for raw in raws]
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/payout_fairness.py " + " ".join(sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1))
    (RESULTS / f"{name}.md").write_text(markdown(results, cfg_name, command.strip()))
    print(markdown(results, cfg_name, command.strip()))


if __name__ == "__main__":
    main()
