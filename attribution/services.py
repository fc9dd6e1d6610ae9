"""Proof of Attribution services: build a model's gradient index, turn it into contributor weights, and
explain one prediction by its training records.

The engines (`attribution.engines`) do the maths without Django; this module picks the records, runs
them, stores the files next to the model's adapter and writes the rows. See docs/attribution.md.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from attribution.harm import harm_findings, harm_flags_store
from attribution.models import AttributionIndex, AttributionPublication, ModelContributorWeight
from attribution.publication import attribution_weights_publish
from attribution.selectors import SUMMARY_FILE, model_contributor_weights, usernames  # noqa: F401 - weights re-exported
from attribution.signals import attribution_index_ready, attribution_index_unsupported
from attribution.tasks import attribution_index_build_task
from core.errors import ApplicationError
from datanets.models import Record
from datanets.selectors import version_evaluation_records, version_near_duplicate_clusters, version_training_records
from factory.models import FineTunedModel
from factory.services import base_model_check
from factory.training.types import Example

logger = logging.getLogger(__name__)

CLASSIFICATION = "classification"
INDEX_SUBDIR = ("attribution", "gradient")
WEIGHTS_FILE = "weights.json"
SUMMARY_TOP = 50  # records kept in summary.json for the "most influential" and "likely mislabeled" lists
VALIDATION_CHUNK = 256  # validation queries scored at a time: bounds the (chunk, n_records) score matrix
MAX_EXPLAIN_CHARS = 5000
MAX_TOP_K = 50
WEIGHT_PLACES = Decimal(10) ** -18  # the ledger's 18-decimal amounts

ERR_NOT_CLASSIFIER = "Influence attribution covers classification models; this model generates text."
ERR_NO_VERSION = "The Datanet version this model was trained on no longer exists."
ERR_NO_BASE = "The base model of this model is no longer in the catalog."
ERR_NO_INDEX = "This model has no attribution index yet."
ERR_NOT_READY = "The attribution index of this model is {status}; try again when it is ready."
ERR_NO_RECORDS = "The model's Datanet version has no training records to attribute to."
ERR_EMPTY_TEXT = "Type some text to explain."
ERR_TOO_LONG = f"The text is over {MAX_EXPLAIN_CHARS} characters."
ERR_TOP_K = f"top_k must be between 1 and {MAX_TOP_K}."
ERR_FILES_GONE = "The attribution index files of this model are missing; rebuild the index."
ERR_SERVED_LABEL = "The served label {label!r} is not one of this model's labels."


def engine_settings() -> dict:
    """The gradient engine's settings (env-overridable through Django settings; the seed fixes the weights)."""
    from attribution.engines.gradient import DEFAULT_BASIS, DEFAULT_PROJECTION_DIM, EKFAC_DAMPING, RANDOM_DAMPING

    basis = str(getattr(settings, "ATTRIBUTION_BASIS", DEFAULT_BASIS))
    damping = getattr(settings, "ATTRIBUTION_DAMPING", None)
    if damping is None:  # each basis has its own scale of damping
        damping = EKFAC_DAMPING if basis == "ekfac" else RANDOM_DAMPING
    return {
        "projection_dim": int(getattr(settings, "ATTRIBUTION_PROJECTION_DIM", DEFAULT_PROJECTION_DIM)),
        "basis": basis,
        "damping": float(damping),
        "seed": int(getattr(settings, "ATTRIBUTION_SEED", 0)),
        "batch_size": int(getattr(settings, "ATTRIBUTION_BATCH_SIZE", 32)),
    }


# --- enqueue -----------------------------------------------------------------------------------------


def _index_row_prepare(*, model) -> tuple[AttributionIndex, bool]:
    """(the model's gradient index row, whether a build should run): in the caller's transaction. A model
    already queued or being indexed is left alone; a ready or failed one is queued again. A generator gets
    an `unsupported` row (serving attributes it by spans; it is told by the `attribution_index_unsupported`
    signal)."""
    index, created = AttributionIndex.objects.select_for_update().get_or_create(
        model=model, method=AttributionIndex.Method.GRADIENT,
        defaults={"status": AttributionIndex.Status.QUEUED, "settings": engine_settings()},
    )
    if model.task != CLASSIFICATION:
        index.status, index.error = AttributionIndex.Status.UNSUPPORTED, ERR_NOT_CLASSIFIER
        index.save(update_fields=["status", "error"])
        attribution_index_unsupported.send(sender=AttributionIndex, index=index, model=model)
        return index, False
    if not created:
        if index.status == AttributionIndex.Status.RUNNING or (
            index.status == AttributionIndex.Status.QUEUED and index.attempts == 0
        ):
            return index, False
        index.status, index.error, index.settings = AttributionIndex.Status.QUEUED, "", engine_settings()
        index.save(update_fields=["status", "error", "settings"])
    return index, True


def attribution_index_build_enqueue(*, model) -> AttributionIndex:
    """Queue the gradient index build of a model (a rebuild from the pages or admin, or a model trained before
    attribution existed); a new model's first build is a step of its post-training canvas instead
    (attribution/pipeline.py). Joins the caller's transaction (or opens one); the task is sent when the
    outermost one commits."""
    with transaction.atomic():
        index, build = _index_row_prepare(model=model)
        if build:
            index_id = index.id
            transaction.on_commit(lambda: attribution_index_build_task.delay(index_id))
    return index


def attribution_model_index(*, model_id: int, hostname: str = "") -> AttributionIndex | None:
    """The canvas's index step: build a new model's gradient index in this task, so that the registration step
    after it finds the published root. A redelivered step takes over its own RUNNING row (the old worker died);
    a ready row is left as it is. Never raises for the model's own problems: the row says what failed, and the
    registration runs regardless (with the zero root; a later build sets the real one)."""
    model = FineTunedModel.objects.filter(pk=model_id).first()
    if model is None:
        return None
    with transaction.atomic():
        index = AttributionIndex.objects.select_for_update().filter(
            model=model, method=AttributionIndex.Method.GRADIENT).first()
        if index is None or index.status not in AttributionIndex.ACTIVE:
            if index is not None and index.status == AttributionIndex.Status.READY:
                return index
            index, build = _index_row_prepare(model=model)
            if not build:
                return index
    return attribution_index_build(index_id=index.id, hostname=hostname)


# --- build -------------------------------------------------------------------------------------------


def _claim(index_id: int, hostname: str) -> AttributionIndex | None:
    """Take the row for this run. RUNNING is taken again: that is a redelivered message of a dead worker."""
    with transaction.atomic():
        index = AttributionIndex.objects.select_for_update().filter(pk=index_id).first()
        if index is None or index.status not in AttributionIndex.ACTIVE:
            return None
        index.status, index.worker, index.error = AttributionIndex.Status.RUNNING, hostname, ""
        index.started_at, index.attempts = timezone.now(), index.attempts + 1
        index.save(update_fields=["status", "worker", "error", "started_at", "attempts"])
        return index


def attribution_model_index_fail(*, model_id: int, reason: str) -> None:
    """The canvas's index step failed outside the build (a hard time limit): fail the model's active index."""
    AttributionIndex.objects.filter(model_id=model_id, method=AttributionIndex.Method.GRADIENT,
                                    status__in=AttributionIndex.ACTIVE).update(
        status=AttributionIndex.Status.FAILED, error=reason[:4000], finished_at=timezone.now())


def attribution_index_fail(*, index_id: int, reason: str) -> None:
    """Fail a queued or running build (a finished one is left alone: the task base calls this too)."""
    AttributionIndex.objects.filter(pk=index_id, status__in=AttributionIndex.ACTIVE).update(
        status=AttributionIndex.Status.FAILED, error=reason[:4000], finished_at=timezone.now()
    )


def index_directory(model) -> Path:
    """Where a model's gradient index lives: beside its adapter folder, so it travels with the model."""
    return Path(model.adapter_dir).parent.joinpath(*INDEX_SUBDIR)


def _base_path(model) -> str:
    if model.base_model is None:
        raise ApplicationError(ERR_NO_BASE)
    return base_model_check(model.base_model)


def _fresh_classifier(model, base_path: str, device: str | None = None):
    """A newly loaded PEFT classifier (not the playground's shared cached one): the build owns it."""
    from peft import PeftModel

    from attribution.engines.gradient import TextClassifier
    from factory.training.modeling import load_base, load_tokenizer, read_factory_meta

    meta = read_factory_meta(model.adapter_dir)
    adapter = Path(model.adapter_dir)
    tokenizer = load_tokenizer(str(adapter) if (adapter / "tokenizer_config.json").is_file() else base_path)
    labels = list(meta.get("labels") or model.labels)
    base = load_base(base_path, task=CLASSIFICATION, labels=labels, pad_token_id=tokenizer.pad_token_id)
    peft_model = PeftModel.from_pretrained(base, str(adapter))
    peft_model.eval()
    return TextClassifier(peft_model, tokenizer, labels, max_length=int(meta.get("max_length", 128))), meta


def training_split(model, meta: dict) -> tuple[list, list, dict[int, int]]:
    """(train examples, held-out examples, record id -> contributor id), split exactly as the trainer did
    (over the version's training records: curator-held evaluation records are never trained on)."""
    from factory.training.data import split_examples

    version = model.datanet_version
    rows = list(version_training_records(version=version).order_by("id")
                .values_list("id", "text", "label", "contributor_id"))
    contributor_of = {rid: cid for rid, _, _, cid in rows}
    examples = [Example(text=text, label=label, record_id=rid) for rid, text, label, _ in rows]
    config = meta.get("config", {})
    eval_split = float(config.get("eval_split", 0))
    if not 0 < eval_split < 1 or len(examples) < 2:
        return examples, [], contributor_of
    train, held = split_examples(examples, eval_split=eval_split, seed=int(config.get("seed", 42)), task=CLASSIFICATION)
    return sorted(train, key=lambda e: e.record_id), sorted(held, key=lambda e: e.record_id), contributor_of


def validation_examples(model, *, held: list, train: list) -> tuple[list, str]:
    """(the validation queries of the model-level weights, their source). The version's curator-held
    evaluation records when it has any ("evaluation_set": no contributor of the training split supplied
    them); else the fallback, the trainer's held-out split ("held_out"), else the training records
    ("training"). Why: docs/attribution.md, validation queries."""
    rows = version_evaluation_records(version=model.datanet_version).order_by("id").values_list("id", "text", "label")
    evaluation = [Example(text=text, label=label, record_id=rid) for rid, text, label in rows]
    if evaluation:
        return evaluation, "evaluation_set"
    return (held, "held_out") if held else (train, "training")


def _version_accept_ranks(version) -> dict[str, int]:
    """{record id: accept order} over the whole version (contribution decided first, then record id)."""
    rows = version.records.values_list("id", "contribution__decided_at")
    ranked = sorted(rows, key=lambda r: (r[1] is None, r[1] or timezone.now(), r[0]))
    return {str(rid): i for i, (rid, _) in enumerate(ranked)}


def _accept_order(version, record_ids: list[str]) -> list[int]:
    """Accept order of the index's records: near-duplicate credit goes to the earliest accepted copy."""
    rank = _version_accept_ranks(version)
    return [rank[rid] for rid in record_ids]


def _cluster_first_order(version, clusters: dict[str, str] | None) -> dict[str, int] | None:
    """{cluster: accept order of its earliest copy in the whole version}, held-out records included, so that
    when the original is a validation query no training copy is credited as if it were the original."""
    if not clusters:
        return None
    rank = _version_accept_ranks(version)
    first: dict[str, int] = {}
    for rid, cluster in clusters.items():
        if rid in rank:
            first[cluster] = min(first.get(cluster, rank[rid]), rank[rid])
    return first


def _near_duplicate_clusters(version) -> dict[str, str] | None:
    """{record id: cluster id} of the version's near-duplicates found at ingest (datanets/neardup.py);
    None when there are none (every record is its own cluster)."""
    return version_near_duplicate_clusters(version=version) or None


def _exact_weights(weights: dict[str, float]) -> dict[int, Decimal]:
    """18-decimal weights summing to exactly 1: the rounding remainder goes to the largest weight."""
    exact = {int(k): Decimal(repr(v)).quantize(WEIGHT_PLACES, rounding=ROUND_HALF_EVEN) for k, v in weights.items()}
    remainder = Decimal(1) - sum(exact.values())
    if exact and remainder:
        top = min(exact, key=lambda k: (-exact[k], k))
        exact[top] += remainder
    return exact


@dataclass
class ModelWeightsRun:
    acc: object          # the ModelWeightsAccumulator, for the negative shares and per-record scores
    paid: object         # acc.result(): weights, rule, signal
    harms: list          # harm_findings: flagged to curators, not charged here
    queries: int
    query_source: str
    seconds: float


def model_weights_compute(*, model, engine, fitted, held: list, train: list) -> ModelWeightsRun:
    """A model's contributor weights from its fitted gradient index: what the index build stores and pays by.

    The queries are the version's curator-held evaluation set when it has one (records no contributor of the
    training split supplied); else the held-out split (records the model did not train on), else its training
    records. Always, a query's own record and its near-duplicates are left out of its scores (query_ids):
    self-influence, or a copy of a query, is not payable. `paid.signal` False: no contributor beat the null,
    an equal split (docs/attribution.md)."""
    from attribution.engines.base import Query
    from attribution.engines.weights import ModelWeightsAccumulator

    version = model.datanet_version
    sources, query_source = validation_examples(model, held=held, train=train)
    queries = [Query(text=e.text, label=e.label) for e in sources]
    query_ids = [str(e.record_id) for e in sources]
    clusters = _near_duplicate_clusters(version)
    acc = ModelWeightsAccumulator(fitted.contributors, record_ids=fitted.record_ids, clusters=clusters,
                                  order=_accept_order(version, fitted.record_ids),
                                  cluster_first_order=_cluster_first_order(version, clusters))
    t0 = time.perf_counter()
    for start in range(0, len(queries), VALIDATION_CHUNK):
        result = engine.attribute(fitted, queries[start : start + VALIDATION_CHUNK], top_k=0, return_matrix=True)
        acc.add(result.matrix, query_ids=query_ids[start : start + VALIDATION_CHUNK])
    seconds = time.perf_counter() - t0
    paid = acc.result()
    harms = harm_findings(acc=acc, paid=paid, record_ids=fitted.record_ids,
                          harm_threshold=version.datanet.harm_threshold)
    return ModelWeightsRun(acc=acc, paid=paid, harms=harms, queries=len(queries), query_source=query_source,
                           seconds=seconds)


def attribution_index_build(*, index_id: int, hostname: str = "") -> AttributionIndex | None:
    """Fit the gradient index over the model's training records and store its contributor weights.

    Safe to run twice: a finished row is skipped, files are written to a temporary folder and swapped in,
    and the weights are replaced in one transaction. User-caused problems mark the row failed with why.
    """
    import torch

    from attribution.engines.base import Record
    from attribution.engines.gradient import GradientEngine

    index = _claim(index_id, hostname)
    if index is None:
        return None
    model = index.model
    t_start = time.perf_counter()
    tmp: Path | None = None
    try:
        if model.task != CLASSIFICATION:
            raise ApplicationError(ERR_NOT_CLASSIFIER)
        if model.datanet_version_id is None:
            raise ApplicationError(ERR_NO_VERSION)
        base_path = _base_path(model)
        threads = int(getattr(settings, "FACTORY_CPU_THREADS", 0) or 0)
        if threads and not torch.cuda.is_available():  # a crowded CPU worker is steadier on fewer threads
            torch.set_num_threads(threads)
        classifier, meta = _fresh_classifier(model, base_path)
        train, held, contributor_of = training_split(model, meta)
        if not train:
            raise ApplicationError(ERR_NO_RECORDS)
        records = [Record(id=str(e.record_id), text=e.text, label=e.label, contributor=str(contributor_of[e.record_id]))
                   for e in train]
        opts = engine_settings()
        target = index_directory(model)
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        engine = GradientEngine(**opts, directory=tmp)
        t0 = time.perf_counter()
        fitted = engine.fit(classifier, records)
        t_fit = time.perf_counter() - t0
        run = model_weights_compute(model=model, engine=engine, fitted=fitted, held=held, train=train)
        acc, paid, harms, t_weights = run.acc, run.paid, run.harms, run.seconds
        query_source, n_queries = run.query_source, run.queries
        weights, negative = paid.weights, acc.negative()
        record_positive = acc.record_positive()
        self_inf = engine.self_influence(fitted)
        top_influential = [int(i) for i in np.argsort(-record_positive, kind="stable")[:SUMMARY_TOP]
                           if record_positive[i] > 0]
        top_self = [int(i) for i in np.argsort(-self_inf, kind="stable")[:SUMMARY_TOP]]
        (tmp / WEIGHTS_FILE).write_text(json.dumps({"weights": weights, "negative": negative,
                                                     "validation_queries": n_queries,
                                                     "validation_source": query_source, **paid.as_json()}, indent=1))
        (tmp / SUMMARY_FILE).write_text(json.dumps({
            "influential": [{"record_id": int(fitted.record_ids[i]), "score": float(record_positive[i])}
                            for i in top_influential],
            "self_influence": [{"record_id": int(fitted.record_ids[i]), "score": float(self_inf[i])} for i in top_self],
        }, indent=1))
        del fitted
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        tmp = None
        counts: dict[int, int] = {}
        for r in records:
            counts[int(r.contributor)] = counts.get(int(r.contributor), 0) + 1
        exact = _exact_weights(weights)
        with transaction.atomic():
            current = AttributionIndex.objects.select_for_update().get(pk=index.pk)
            if current.status != AttributionIndex.Status.RUNNING or current.worker != hostname:
                return current  # another worker took it over; its result wins
            # Once published, the model-level weights are final: the chain holds their root (set once per
            # model) and payouts must follow what anyone can verify; a rebuild refreshes the index, not them.
            if not AttributionPublication.objects.filter(model=model).exists():
                ModelContributorWeight.objects.filter(model=model).delete()
            ModelContributorWeight.objects.bulk_create([
                ModelContributorWeight(model=model, contributor_id=uid, weight=w, negative=negative[str(uid)],
                                       record_count=counts.get(uid, 0), method=index.method)
                for uid, w in exact.items()
            ] if not ModelContributorWeight.objects.filter(model=model).exists() else [])
            current.status, current.directory = AttributionIndex.Status.READY, str(target)
            current.record_count, current.validation_count = len(records), n_queries
            current.settings = {**opts, "weights_rule": paid.rule, "weights_signal": paid.signal,
                                "validation_source": query_source}
            current.timings = {"fit_s": round(t_fit, 3), "weights_s": round(t_weights, 3),
                               "total_s": round(time.perf_counter() - t_start, 3), **{k: round(v, 3) for k, v in engine.timings.items()}}
            current.disk_bytes = sum(p.stat().st_size for p in target.iterdir() if p.is_file())
            current.finished_at = timezone.now()
            current.save()
            # The weights file and its on-chain root, in this transaction (the outbox row with it).
            attribution_weights_publish(model=model, weights=exact)
            harm_flags_store(model=model, findings=harms, validation_queries=n_queries)
        _index_cache_clear()
        # Apps above this one (serving: the paid calls held until the index was ready) act on it.
        attribution_index_ready.send(sender=AttributionIndex, index=current, model=model)
        return current
    except ApplicationError as exc:
        attribution_index_fail(index_id=index.id, reason=exc.message)
    except Exception as exc:
        logger.exception("attribution index %s failed", index.id)
        attribution_index_fail(index_id=index.id, reason=f"Internal error: {type(exc).__name__}: {exc}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    index.refresh_from_db()
    return index


# --- explain -----------------------------------------------------------------------------------------

_explain_lock = threading.Lock()  # the cached index and query model are shared; hooks go one at a time
_index_cache: dict[str, tuple[float, object]] = {}


def _index_cache_clear() -> None:
    _index_cache.clear()


def _load_index(directory: str):
    """The memory-mapped index, cached per folder until its index.json changes (a rebuild swaps it)."""
    from attribution.engines.gradient import GradientIndex

    header = Path(directory) / "index.json"
    try:
        mtime = header.stat().st_mtime
    except FileNotFoundError:
        raise ApplicationError(ERR_FILES_GONE, status_code=409) from None
    hit = _index_cache.get(directory)
    if hit and hit[0] == mtime:
        return hit[1]
    index = GradientIndex.load(directory)
    _index_cache.clear()  # one index resident at a time per process is enough for the playground
    _index_cache[directory] = (mtime, index)
    return index


def ready_index(model) -> AttributionIndex:
    index = AttributionIndex.objects.filter(model=model, method=AttributionIndex.Method.GRADIENT).first()
    if index is None:
        raise ApplicationError(ERR_NO_INDEX, status_code=409)
    if index.status != AttributionIndex.Status.READY:
        raise ApplicationError(ERR_NOT_READY.format(status=index.get_status_display().lower()), status_code=409)
    return index


@contextmanager
def _float32_copy(model):
    """(module, tokenizer) of the model loaded as a float32 PeftModel (cached per process): the explain
    page's model, and a paid answer's when the serving engine runs elsewhere or at another precision."""
    from factory.training.predict import load_adapter

    peft_model, tokenizer, _ = load_adapter(_base_path(model), model.adapter_dir)
    yield peft_model, tokenizer


def prediction_explain(*, model, text: str, top_k: int = 5, served: dict | None = None,
                       model_view: Callable[[], AbstractContextManager] | None = None) -> dict:
    """The model's prediction for `text`, its top training records and every contributor's share of it.

    `served`: the answer actually served and charged ({"label", "probabilities"}). Its label is the one
    explained and it is returned as the prediction: the explanation never takes an argmax of its own,
    which at another precision (bfloat16, int8 serving) can pick another label than the one paid for.
    Without it (the explain page) the float32 model's own prediction is explained.
    `model_view`: returns a context manager of (module, tokenizer), a PEFT-shaped model to take the
    query gradient on: the serving engine's own loaded base (`ServingEngine.peft_view`), so no second
    copy is loaded; by default the cached float32 PeftModel.

    Returns {"prediction": {"label", "probabilities"}, "records": [{record_id, text, label, contributor,
    contributor_id, score, relevance}] (best first by relevance), "contributors": [{user_id, username,
    share}], "method"}. Raises
    ApplicationError (400 bad input or a served label the model does not have, 409 no ready index).
    """
    import torch

    from attribution.engines.base import Query
    from attribution.engines.gradient import GradientEngine, TextClassifier
    from attribution.engines.weights import contributor_shares, explanation_rows, relative_influence

    text = (text or "").strip()
    if not text:
        raise ApplicationError(ERR_EMPTY_TEXT)
    if len(text) > MAX_EXPLAIN_CHARS:
        raise ApplicationError(ERR_TOO_LONG)
    try:
        top_k = int(top_k)
    except (TypeError, ValueError):
        raise ApplicationError(ERR_TOP_K) from None
    if not 1 <= top_k <= MAX_TOP_K:
        raise ApplicationError(ERR_TOP_K)
    if model.task != CLASSIFICATION:
        raise ApplicationError(ERR_NOT_CLASSIFIER)
    row = ready_index(model)
    index = _load_index(row.directory)
    labels = list(index.meta["label_names"])
    if served is not None and served.get("label") not in labels:
        raise ApplicationError(ERR_SERVED_LABEL.format(label=served.get("label")))
    # One explanation at a time: the cached index (and the float32 copy's hooks) are shared; the view of
    # the serving engine holds its base's lock inside this one, never the other way round.
    with _explain_lock, (model_view or (lambda: _float32_copy(model)))() as (peft_model, tokenizer):
        classifier = TextClassifier(peft_model, tokenizer, labels, max_length=int(index.meta["max_length"]))
        device = next(peft_model.parameters()).device
        engine = GradientEngine(projection_dim=index.meta["projection_dim"], damping=index.meta["damping"],
                                seed=index.meta["seed"], device=str(device))
        if served is None:
            with torch.no_grad():
                enc = tokenizer(text, truncation=True, max_length=classifier.max_length, return_tensors="pt")
                probs = torch.softmax(peft_model(**enc.to(device)).logits[0].float(), -1).tolist()
            predicted = int(np.argmax(probs))
            probabilities = {name: round(p, 4) for name, p in zip(labels, probs, strict=True)}
        else:
            predicted, probabilities = labels.index(served["label"]), dict(served.get("probabilities") or {})
        index.model = classifier
        try:
            vectors = engine.query_vectors(index, [Query(text=text, label=predicted)])
        finally:
            index.model = None
    result = engine.attribute_vectors(index, vectors, top_k=0, return_matrix=True)
    # Shown and paid by relative influence (score / sqrt(self-influence)), not raw score, which favours
    # high-loss records whatever the query: the shares that split this answer's fee come from the same
    # numbers as the records shown (docs/attribution.md, "Records shown" and "One answer's split").
    self_influence = engine.self_influence(index)
    rows, relevance = explanation_rows(result.matrix[0], self_influence, top_k)
    shares = contributor_shares(relative_influence(result.matrix[0], self_influence), index.contributors)
    ids = [int(index.record_ids[r]) for r in rows]
    raw = [float(result.matrix[0][r]) for r in rows]
    found = {r.pk: r for r in Record.objects.filter(pk__in=ids).select_related("contributor")}
    users = usernames([int(uid) for uid in shares])
    return {
        "model_id": model.pk,
        "method": index.method,
        "prediction": {"label": labels[predicted], "probabilities": probabilities},
        "records": [
            {"record_id": rid, "text": found[rid].text, "label": found[rid].label,
             "contributor": found[rid].contributor.get_username(), "contributor_id": found[rid].contributor_id,
             "score": score, "relevance": float(rel)}
            for rid, score, rel in zip(ids, raw, relevance, strict=True) if rid in found
        ],
        "contributors": [
            {"user_id": int(uid), "username": users.get(int(uid), ""), "share": share}
            for uid, share in sorted(shares.items(), key=lambda kv: (-kv[1], int(kv[0])))
        ],
    }

