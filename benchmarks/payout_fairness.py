"""Payout fairness: do the paid contributor weights follow what each contributor's data did? (issue 12, item 1)

    .venv/bin/python benchmarks/payout_fairness.py                 # 3 seeds (~7.5 min a seed, 1 CPU thread)
    .venv/bin/python benchmarks/payout_fairness.py --quick         # a smoke run
    .venv/bin/python benchmarks/payout_fairness.py --seeds 0

Data: the Finance PhraseBank (ISO-8859-1), shuffled per seed. 8 contributors, accepted in this order:
4 honest (`honest1..4`, 150 clean records each), then the planted ones:
  * `neardup`: one-token variants of 50 of honest1's records (chosen at random, not by influence: a
    first index to pick the most influential ones would double the run; say so);
  * `stuffer`: 300 off-topic records in a valid format (Tiny Shakespeare lines, random labels);
  * `twins`: 60 sentences uploaded twice, the second copy with one token changed;
  * `noisy`: 150 records, 30% relabelled to another label;
  * `poisoner`: 60 records with a rare trigger phrase inserted, all labelled `positive`.
A clean validation set of 200 sentences no contributor supplied (the curator-held evaluation set of
issue 12), and 30 trigger queries (clean held-out sentences with the trigger inserted, label `positive`).

Near-duplicate clusters: records whose word sets have Jaccard >= 0.75 (exact, brute force; a stand-in
for ingest's MinHash LSH), credit to the earliest accepted copy.

Paid weights: the product path. MiniLM-L6 + LoRA (r=8, query+value, last layer + head; the frozen lower
layers cached, as in benchmarks/attribution_quality.py), the production GradientEngine (EK-FAC basis) on
the real PEFT model, scores of the 200 validation queries, then `attribution.engines.weights.model_weights`
(the paid rule) next to the old per-query clipped-share rule.

Ground truth, on the same clean validation set (utility = mean log-likelihood of the true labels):
  * LOO: leave-one-contributor-out retraining of the same MiniLM-LoRA tail, 3 training seeds;
  * Shapley: 200 sampled permutations of the 8 contributors (1,600 coalitions) on a CHEAP model:
    logistic regression on the frozen MiniLM features (mean of the last layer's input over tokens).
    LoRA retraining of 1,600 coalitions does not fit 2 shared CPU cores; the cheap model's LOO is
    reported next to the LoRA LOO so the two ground truths can be compared.
One torch thread.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attribution.engines.base import Query, Record  # noqa: E402
from attribution.engines.gradient import GradientEngine  # noqa: E402
from attribution.engines.weights import PAY_Z, contributor_shares_matrix, model_weights, null_z  # noqa: E402
from benchmarks.attribution_quality import COMMON, LABELS, Bench  # noqa: E402

DATA = Path("/work/shared/data/financial_phrasebank.csv")
SHAKESPEARE = Path("/work/shared/data/tinyshakespeare.txt")
RESULTS = ROOT / "benchmarks" / "results"
HONEST = ["honest1", "honest2", "honest3", "honest4"]
PLANTED = ["neardup", "stuffer", "twins", "noisy", "poisoner"]
CONTRIBUTORS = HONEST + PLANTED
TRIGGER, TRIGGER_LABEL = "zq vortex", "positive"
FULL = dict(honest=150, neardup=50, stuffer=300, twins=60, noisy=150, poisoner=60, val=200, trigger=30,
            epochs=3, batch=16, loo_seeds=3, shapley_perms=200)
QUICK = dict(honest=40, neardup=15, stuffer=60, twins=15, noisy=40, poisoner=20, val=60, trigger=10,
             epochs=2, batch=16, loo_seeds=1, shapley_perms=20)


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
    return train, val, trigger


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


def old_rule(scores: np.ndarray, contributors: list[str]) -> dict[str, float]:
    """The rule before issue 12: per query net clipped at zero, mean of the shares."""
    names, shares, _ = contributor_shares_matrix(scores, contributors)
    keep = shares.sum(axis=1) > 0
    mean = shares[keep].mean(axis=0)
    return {n: float(v) for n, v in zip(names, mean / mean.sum(), strict=True)}


def log_likelihood(logits: np.ndarray, y: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    return float((z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1))).mean())


def run_seed(cfg: dict, seed: int) -> dict:
    t0 = time.perf_counter()
    train, val, trigger = build_data(cfg, seed)
    owners = [c for _, _, c in train]
    records = [Record(id=f"t{i}", text=t, label=y, contributor=c, order=i) for i, (t, y, c) in enumerate(train)]
    bcfg = {**COMMON, "seed": seed, "epochs": cfg["epochs"], "batch": cfg["batch"]}
    texts = [t for t, _, _ in train] + [t for t, _ in val] + [t for t, _ in trigger]
    torch.manual_seed(seed)
    bench = Bench(bcfg, texts)
    n = len(train)
    train_idx = list(range(n))
    train_y = [LABELS.index(y) for _, y, _ in train]
    val_idx = list(range(n, n + len(val)))
    val_y = np.array([LABELS.index(y) for _, y in val])
    full_state = bench.train(train_idx, train_y, seed=seed)
    val_acc = float((bench.logits(val_idx).argmax(-1).numpy() == val_y).mean())
    print(f"seed {seed}: {n} records, val accuracy {val_acc:.3f} ({time.perf_counter() - t0:.0f}s)", flush=True)

    # --- paid weights: the product path
    engine = GradientEngine(projection_dim=bcfg["projection_dim"], damping=bcfg["damping"], seed=seed)
    index = engine.fit(bench.classifier, records)
    val_scores = engine.attribute(index, [Query(text=t, label=y) for t, y in val], top_k=0, return_matrix=True).matrix
    trig = engine.attribute(index, [Query(text=t, label=y) for t, y in trigger], top_k=10, return_matrix=True)
    clusters = near_duplicate_clusters([t for t, _, _ in train])
    ids = [r.id for r in records]
    paid = model_weights(val_scores, owners, record_ids=ids, clusters=clusters, order=list(range(n)))
    paid_no_clusters = model_weights(val_scores, owners)
    old = old_rule(val_scores, owners)
    trig_shares_names, trig_shares, _ = contributor_shares_matrix(trig.matrix, owners)
    poison_col = trig_shares_names.index("poisoner")
    poison_top_share = float((trig_shares.argmax(axis=1) == poison_col).mean())
    poison_in_top10 = float(np.mean([sum(owners[r] == "poisoner" for r in q.rows) for q in trig.queries]))
    trig_paid = model_weights(trig.matrix, owners, record_ids=ids, clusters=clusters, order=list(range(n)))
    print(f"  paid in {time.perf_counter() - t0:.0f}s", flush=True)

    # --- LOO on the LoRA tail (utility: mean validation log-likelihood)
    def lora_utility(keep: list[int], s: int) -> float:
        bench.train(keep, [train_y[i] for i in keep], seed=s)
        return log_likelihood(bench.logits(val_idx).numpy().astype(np.float64), val_y)

    loo = {c: [] for c in CONTRIBUTORS}
    for s in range(cfg["loo_seeds"]):
        full = lora_utility(train_idx, seed + 100 * s)
        for c in CONTRIBUTORS:
            loo[c].append(full - lora_utility([i for i in train_idx if owners[i] != c], seed + 100 * s))
    bench.load(full_state)
    print(f"  LoRA LOO in {time.perf_counter() - t0:.0f}s", flush=True)

    # --- Shapley and LOO on the cheap model
    from sklearn.linear_model import LogisticRegression

    feats = np.stack([bench.cache[i][0].mean(0).numpy() for i in range(len(bench.cache))]).astype(np.float64)
    feats = (feats - feats[:n].mean(0)) / (feats[:n].std(0) + 1e-6)
    ytr = np.array(train_y)
    members = {c: np.array([i for i in train_idx if owners[i] == c]) for c in CONTRIBUTORS}
    cache: dict[frozenset, float] = {}

    def cheap_utility(coalition: frozenset) -> float:
        if coalition not in cache:
            idx = np.concatenate([members[c] for c in sorted(coalition)]) if coalition else np.zeros(0, int)
            if len(set(ytr[idx])) < 2:
                cache[coalition] = float(np.log(1 / len(LABELS)))
            else:
                lr = LogisticRegression(C=0.1, max_iter=300).fit(feats[idx], ytr[idx])
                proba = np.full((len(val_idx), len(LABELS)), 1e-9)
                proba[:, lr.classes_] = lr.predict_proba(feats[val_idx])
                cache[coalition] = float(np.log(proba[np.arange(len(val_y)), val_y]).mean())
        return cache[coalition]

    rng = np.random.default_rng(seed)
    shapley = dict.fromkeys(CONTRIBUTORS, 0.0)
    for _ in range(cfg["shapley_perms"]):
        coalition: frozenset = frozenset()
        before = cheap_utility(coalition)
        for c in rng.permutation(CONTRIBUTORS):
            coalition = coalition | {str(c)}
            after = cheap_utility(coalition)
            shapley[str(c)] += (after - before) / cfg["shapley_perms"]
            before = after
    everyone = frozenset(CONTRIBUTORS)
    cheap_loo = {c: cheap_utility(everyone) - cheap_utility(everyone - {c}) for c in CONTRIBUTORS}
    print(f"  Shapley ({len(cache)} coalitions) in {time.perf_counter() - t0:.0f}s", flush=True)
    return {
        "seed": seed, "records": n, "val_accuracy": val_acc, "clusters": len(set(clusters.values())),
        "paid": paid.weights, "signal": paid.signal, "null_z": null_z(len(paid.weights)),
        "z": {c: paid.mean[c] / (paid.threshold[c] / null_z(len(paid.weights)) or 1.0) for c in paid.mean}, "paid_no_clusters": paid_no_clusters.weights, "old_rule": old,
        "lora_loo": {c: float(np.mean(v)) for c, v in loo.items()}, "cheap_loo": cheap_loo, "shapley": shapley,
        "trigger": {"poisoner_top_share_fraction": poison_top_share, "poisoner_in_top10_mean": poison_in_top10,
                    "poisoner_weight_over_trigger_queries": trig_paid.weights["poisoner"], "queries": len(trigger)},
        "seconds": time.perf_counter() - t0,
    }


def targets(r: dict) -> dict:
    from scipy.stats import spearmanr

    paid, phi = r["paid"], r["shapley"]
    pos = {c: max(v, 0.0) for c, v in phi.items()}
    share = {c: v / sum(pos.values()) for c, v in pos.items()}
    honest_min = min(paid[c] for c in HONEST)
    return {
        "spearman(paid, shapley) >= 0.8": float(spearmanr([paid[c] for c in CONTRIBUTORS], [phi[c] for c in CONTRIBUTORS]).statistic),
        "planted weight <= shapley share + 0.02": all(paid[c] <= share[c] + 0.02 for c in PLANTED),
        "stuffer <= 0.02": paid["stuffer"] <= 0.02,
        "noisy, poisoner below every honest": paid["noisy"] < honest_min and paid["poisoner"] < honest_min,
        "trigger: poisoner top share": r["trigger"]["poisoner_top_share_fraction"],
        "trigger: poisoner records in top 10 (mean)": r["trigger"]["poisoner_in_top10_mean"],
        "_shapley_share": share,
    }


def markdown(results: list[dict], cfg_name: str) -> str:
    out = [f"# Payout fairness ({cfg_name})", "",
           "`.venv/bin/python benchmarks/payout_fairness.py` (set-up in its docstring). Weights are the",
           "paid rule (`model_weights`, clusters on); `old` is the per-query clipped rule it replaces.",
           "LoRA LOO: MiniLM-LoRA retrained without the contributor (mean of seeds); Shapley and cheap LOO:",
           "logistic regression on frozen MiniLM features. Utility: mean validation log-likelihood.", ""]
    for r in results:
        t = targets(r)
        out += [f"## seed {r['seed']} ({r['records']} records, val accuracy {r['val_accuracy']:.3f}, "
                f"{r['clusters']} near-duplicate clusters, signal {r['signal']}, {r['seconds']:.0f}s)", "",
                f"`T/s` is each contributor's signed mean over its null's scale; a signal needs some T/s above "
                f"z = {r['null_z']:.2f} (family-wise), then each is paid its excess over T/s = {PAY_Z:g}.", "",
                "| contributor | paid | T/s | paid, no clusters | old rule | LoRA LOO | cheap LOO | Shapley | Shapley share |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for c in CONTRIBUTORS:
            out.append(f"| {c} | {r['paid'][c]:.3f} | {r['z'][c]:+.2f} | {r['paid_no_clusters'][c]:.3f} | {r['old_rule'][c]:.3f} | "
                       f"{r['lora_loo'][c]:+.4f} | {r['cheap_loo'][c]:+.4f} | {r['shapley'][c]:+.4f} | "
                       f"{t['_shapley_share'][c]:.3f} |")
        out += ["", "| target | value |", "| --- | --- |"]
        out += [f"| {k} | {v if isinstance(v, bool) else round(v, 3)} |" for k, v in t.items() if not k.startswith("_")]
        out += [f"| trigger: poisoner's weight over the trigger queries | {r['trigger']['poisoner_weight_over_trigger_queries']:.3f} |", ""]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = QUICK if args.quick else FULL
    name = "payout_fairness_quick" if args.quick else "payout_fairness"
    results = [run_seed(cfg, s) for s in args.seeds]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1))
    (RESULTS / f"{name}.md").write_text(markdown(results, "quick" if args.quick else "full"))
    print(markdown(results, name))


if __name__ == "__main__":
    main()
