"""Paid inference: run a fine-tuned model on the shared serving engine, attribute the answer to its
training records and contributors, charge the fee and accrue its split. Also the span indexes that
attribute generated text (one per Datanet version and base tokenizer), built in the background.

Errors are ApplicationError with the HTTP status the API answers: 400 empty input, 413 oversize input,
404 unknown model, 409 a model that cannot serve yet. See docs/serving.md.
"""
from __future__ import annotations

import logging
import shutil
import threading
import time
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from core.errors import ApplicationError
from serving.models import Inference, SpanIndex

logger = logging.getLogger(__name__)

CLASSIFICATION = "classification"
GENERATION = "generation"
PLACES = Decimal(10) ** -18  # the ledger's 18-decimal amounts
REWARD_SOURCE = "inference"
POLL_SECONDS = 0.1

ERR_EMPTY = "The input text is empty."
ERR_TOO_LONG = "The input is {n} characters; the limit is {limit}."
ERR_NO_MODEL = "No model with id {id}."
ERR_NOT_READY = "Model {id} cannot serve yet: {why}."
ERR_TIMEOUT = "The model did not answer within {s:.0f} s; try again."
ERR_FAILED = "The model failed on this input: {error}"


# --- the engine ---------------------------------------------------------------------------------

_engine = None
_engine_lock = threading.Lock()


def serving_engine():
    """This process's ServingEngine (one copy of each base; the adapter LRU sized in settings)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            from factory.serving import ServingConfig, ServingEngine

            _engine = ServingEngine(ServingConfig(
                cache_adapters=settings.SERVING_CACHE_ADAPTERS, cache_bytes=settings.SERVING_CACHE_BYTES,
                max_batch=settings.SERVING_MAX_BATCH, max_new_tokens=settings.SERVING_MAX_NEW_TOKENS,
                num_beams=settings.SERVING_NUM_BEAMS,
                device=settings.SERVING_DEVICE, dtype=settings.SERVING_DTYPE,
            ))
        return _engine


_batcher = None


def serving_batcher():
    """Requests from concurrent web threads (or worker threads) share forward passes through one Batcher."""
    global _batcher
    engine = serving_engine()
    with _engine_lock:
        if _batcher is None:
            from factory.serving import Batcher

            _batcher = Batcher(engine, max_wait_ms=settings.SERVING_BATCH_WAIT_MS)
        return _batcher


# --- checks -------------------------------------------------------------------------------------

def model_get(*, model_id) -> object:
    from factory.models import FineTunedModel

    try:
        return FineTunedModel.objects.select_related("base_model", "job", "datanet_version").get(pk=int(model_id))
    except (FineTunedModel.DoesNotExist, TypeError, ValueError):
        raise ApplicationError(ERR_NO_MODEL.format(id=model_id), status_code=404) from None


def model_serving_path(*, model) -> str:
    """The base model folder the model runs on, or a 409 saying why it cannot serve."""
    from factory.models import FineTunedModel, FineTuneJob
    from factory.services import base_model_check

    def not_ready(why: str) -> ApplicationError:
        return ApplicationError(ERR_NOT_READY.format(id=model.pk, why=why), status_code=409)

    if model.status not in (FineTunedModel.Status.READY, FineTunedModel.Status.REGISTERED):
        raise not_ready(f"its status is {model.status}")
    if model.job_id and model.job.status != FineTuneJob.Status.SUCCEEDED:
        raise not_ready(f"its training job is {model.job.status}")
    if model.base_model is None:
        raise not_ready("its base model is no longer in the catalog")
    if not (Path(model.adapter_dir) / "adapter_model.safetensors").is_file():
        raise not_ready("its adapter files are missing")
    try:
        return base_model_check(model.base_model)
    except ApplicationError as exc:
        raise not_ready(exc.message) from exc


def input_clean(*, text) -> str:
    text = text.strip() if isinstance(text, str) else ""
    if not text:
        raise ApplicationError(ERR_EMPTY, status_code=400)
    if len(text) > settings.SERVING_MAX_INPUT_CHARS:
        raise ApplicationError(ERR_TOO_LONG.format(n=len(text), limit=settings.SERVING_MAX_INPUT_CHARS),
                               status_code=413)
    return text


# --- inference ----------------------------------------------------------------------------------

def inference_create(*, model, user, text: str, api_key=None, channel: str = Inference.Channel.API) -> Inference:
    """Validate and write the pending row (no model run yet)."""
    text = input_clean(text=text)
    model_serving_path(model=model)
    return Inference.objects.create(model=model, user=user, api_key=api_key, channel=channel, input_text=text)


def inference_run(*, inference_id: int) -> Inference:
    """Run a pending inference: serve, attribute, charge. Idempotent: a finished row is returned as is."""
    from factory.serving import InferenceRequest
    from factory.serving.adapters import AdapterError

    inference = Inference.objects.select_related("model", "model__base_model").get(pk=inference_id)
    if inference.status != Inference.Status.PENDING:
        return inference
    model = inference.model
    started = time.perf_counter()
    try:
        base_path = model_serving_path(model=model)
        request = InferenceRequest(base_path=base_path, adapter_dir=model.adapter_dir, text=inference.input_text,
                                   task=model.task)
        result = _serve(request)
    except (ApplicationError, AdapterError, OSError, RuntimeError, ValueError, TimeoutError) as exc:
        message = exc.message if isinstance(exc, ApplicationError) else str(exc)
        Inference.objects.filter(pk=inference.pk).update(status=Inference.Status.FAILED, error=message[:2000],
                                                         finished_at=timezone.now())
        inference.refresh_from_db()
        return inference
    output = {k: v for k, v in result.items() if k in ("label", "probabilities", "text")}
    attribution = output_attribute(model=model, text=inference.input_text, output=output)
    fee = Decimal(str(settings.SERVING_FEE_PER_CALL)).quantize(PLACES)
    # Before the lock: reading governance's split may ask the chain (seconds, when it is slow).
    split = fee_split_compute(model=model, fee=fee, shares=attribution_user_shares(attribution))
    with transaction.atomic():
        locked = Inference.objects.select_for_update().get(pk=inference.pk)
        if locked.status != Inference.Status.PENDING:
            return locked
        locked.output, locked.attribution, locked.fee, locked.fee_split = output, attribution, fee, split
        locked.status, locked.finished_at = Inference.Status.DONE, timezone.now()
        locked.latency_ms = round((time.perf_counter() - started) * 1000, 2)
        locked.save()
        allocations = fee_allocations(split)
        if allocations:
            from ledger.services import rewards_accrue

            rewards_accrue(allocations=allocations, source=REWARD_SOURCE, reference=f"inference:{locked.pk}",
                           model_id=model.pk)
    return locked


def _serve(request) -> dict:
    """One request through this process's batcher, or the inference server at SERVING_URL (backend http)."""
    if settings.SERVING_BACKEND != "http":
        return serving_batcher().submit(request).result(timeout=settings.SERVING_TIMEOUT_SECONDS)
    import json
    import urllib.error
    import urllib.request
    from dataclasses import asdict

    url = settings.SERVING_URL.rstrip("/") + "/infer"
    if not url.startswith(("http://", "https://")):
        raise OSError(f"SERVING_URL must be an http(s) URL, not {settings.SERVING_URL!r}")
    req = urllib.request.Request(url, data=json.dumps(asdict(request)).encode(),  # noqa: S310 - scheme checked
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=settings.SERVING_TIMEOUT_SECONDS) as resp:  # noqa: S310 - our URL
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("detail", str(exc))
        raise RuntimeError(f"inference server: {detail}") from None
    except (urllib.error.URLError, TimeoutError) as exc:
        raise OSError(f"inference server at {settings.SERVING_URL} did not answer: {exc}") from None


def inference_execute(*, model, user, text: str, api_key=None, channel: str = Inference.Channel.API) -> Inference:
    """Create and run one inference by the configured backend. `celery`: the `gpu` queue runs it and this
    waits for the row (the caller must not hold a transaction open, or the task never sees the row)."""
    inference = inference_create(model=model, user=user, text=text, api_key=api_key, channel=channel)
    if settings.SERVING_BACKEND != "celery":
        inference = inference_run(inference_id=inference.pk)
    else:
        from serving.tasks import inference_run_task

        inference_run_task.delay(inference.pk)
        deadline = time.monotonic() + settings.SERVING_TIMEOUT_SECONDS
        while True:
            inference.refresh_from_db()
            if inference.status != Inference.Status.PENDING:
                break
            if time.monotonic() > deadline:
                raise ApplicationError(ERR_TIMEOUT.format(s=settings.SERVING_TIMEOUT_SECONDS), status_code=504)
            time.sleep(POLL_SECONDS)
    if inference.status == Inference.Status.FAILED:
        raise ApplicationError(ERR_FAILED.format(error=inference.error), status_code=409)
    return inference


# --- attribution --------------------------------------------------------------------------------

def output_attribute(*, model, text: str, output: dict) -> dict:
    """Who the answer is owed to: gradient influence for classifiers, reused spans for generators.

    Falls back to the model-level contributor weights (or the contributors' record counts) while the
    per-answer index is not ready or the answer reuses no training text; `method` says which.
    """
    top_k = settings.SERVING_TOP_K
    if model.task == CLASSIFICATION:
        try:
            from attribution.services import prediction_explain
        except ImportError:
            prediction_explain = None
        if prediction_explain is not None:
            try:
                explained = prediction_explain(model=model, text=text, top_k=top_k)
                return {"method": explained.get("method", "gradient"), "status": "ready",
                        "records": [{"record_id": r["record_id"], "score": r["score"], "text": r.get("text", ""),
                                     "contributor_id": r.get("contributor_id")} for r in explained["records"]],
                        "contributors": [{"user_id": c["user_id"], "share": c["share"]}
                                         for c in explained["contributors"] if c["share"] > 0]}
            except ApplicationError as exc:
                return _fallback(model, status="unavailable", reason=exc.message)
        return _fallback(model, status="unavailable", reason="gradient attribution is not installed")
    explained = generation_explain(model=model, text=output.get("text", ""), prompt=text, top_k=top_k)
    if explained.get("contributors"):
        return explained
    return _fallback(model, status=explained.get("status", "ready"), reason=explained.get("reason", ""),
                     spans=explained.get("spans", []))


def _fallback(model, *, status: str, reason: str = "", spans: list | None = None) -> dict:
    shares: dict[int, float] = {}
    method = "model_weights"
    try:
        from attribution.selectors import model_contributor_weights

        shares = {int(u): float(w) for u, w in model_contributor_weights(model=model).items()}
    except ImportError:
        pass
    if not shares and model.datanet_version_id:
        from datanets.models import Record

        method = "record_counts"
        counts = dict(Record.objects.filter(versions=model.datanet_version_id).values_list("contributor")
                      .annotate(n=Count("id")).values_list("contributor", "n"))
        total = sum(counts.values())
        shares = {int(u): n / total for u, n in counts.items()} if total else {}
    out = {"method": method, "status": status, "records": [],
           "contributors": [{"user_id": u, "share": s} for u, s in sorted(shares.items(), key=lambda kv: -kv[1])]}
    if reason:
        out["reason"] = reason
    if spans is not None:
        out["spans"] = spans
    return out


def attribution_user_shares(attribution: dict) -> dict[int, float]:
    return {int(c["user_id"]): float(c["share"]) for c in attribution.get("contributors", []) if c["share"] > 0}


def generation_explain(*, model, text: str, prompt: str = "", top_k: int = 5) -> dict:
    """Spans of `text` found in the model's training version, their records and contributor shares.

    With the `prompt` the model continued, a span may begin in the prompt (the model carried on a
    training passage the prompt began); only its part in `text` is shown and weighs.

    Returns {"method": "spans", "status", "spans": [{char_start, char_end, text, tokens, count, records}],
    "records": [...], "contributors": [{user_id, share}], "coverage"}; status "building" (and no
    spans) while the version's index is queued or building.
    """

    if model.datanet_version_id is None or model.base_model is None:
        return {"method": "spans", "status": "unavailable", "reason": "the training version is gone",
                "spans": [], "records": [], "contributors": []}
    index_row = span_index_ensure(version=model.datanet_version, base_model=model.base_model)
    if index_row.status != SpanIndex.Status.READY:
        return {"method": "spans", "status": index_row.status, "spans": [], "records": [], "contributors": []}
    engine, index = _open_span_index(index_row)
    explained = engine.explain(index, text, top_k=top_k, context=prompt) if text else {
        "spans": [], "records": [], "contributor_shares": {}, "coverage": 0.0}
    return {
        "method": "spans", "status": "ready", "coverage": explained["coverage"],
        "spans": [{k: s[k] for k in ("char_start", "char_end", "text", "tokens", "context_tokens", "count", "records")}
                  for s in explained["spans"]],
        "records": [{"record_id": int(r["record_id"]), "score": r["score"], "share": r["share"]}
                    for r in explained["records"]],
        "contributors": [{"user_id": int(u), "share": s}
                         for u, s in sorted(explained["contributor_shares"].items(), key=lambda kv: -kv[1])],
    }


# --- fees ---------------------------------------------------------------------------------------

def _down(x: Decimal) -> Decimal:
    return x.quantize(PLACES, rounding=ROUND_DOWN)


def fee_split_compute(*, model, fee: Decimal, shares: dict[int, float]) -> dict:
    """Split `fee` by governance's fractions; the contributors' part by `shares` (sum 1).

    Exact to the wei: each contributor's amount is rounded down and the dust goes to the largest
    share; the protocol part is what is left (it stays in the treasury, which funds every epoch).
    With no contributor shares the contributors' part also stays with the protocol.
    """
    from ledger.services import fee_split_get

    fractions = fee_split_get()
    total_share = sum(s for s in shares.values() if s > 0)
    contributors_part = _down(fee * fractions["contributors"]) if total_share else Decimal(0)
    developer_part = _down(fee * fractions["developer"])
    amounts: dict[int, Decimal] = {}
    for user_id, s in shares.items():
        if s > 0:
            amounts[user_id] = _down(contributors_part * Decimal(str(s / total_share)))
    if amounts:
        top = max(amounts, key=lambda u: (shares[u], -u))
        amounts[top] += contributors_part - sum(amounts.values())
    protocol_part = fee - contributors_part - developer_part
    return {
        "fractions": {k: str(v) for k, v in fractions.items()},
        "contributors": {str(u): str(a) for u, a in amounts.items() if a > 0},
        "developer": {"user_id": model.developer_id, "amount": str(developer_part)},
        "protocol": str(protocol_part),
    }


def fee_allocations(split: dict) -> dict[int, Decimal]:
    """User id -> amount owed (a developer who also contributed gets one summed row)."""
    out: dict[int, Decimal] = {}
    for user_id, amount in split.get("contributors", {}).items():
        out[int(user_id)] = out.get(int(user_id), Decimal(0)) + Decimal(amount)
    dev = split.get("developer") or {}
    if dev and Decimal(dev["amount"]) > 0:
        out[int(dev["user_id"])] = out.get(int(dev["user_id"]), Decimal(0)) + Decimal(dev["amount"])
    return {u: a for u, a in out.items() if a > 0}


# --- span indexes -------------------------------------------------------------------------------

_span_cache: dict[tuple[int, str], tuple] = {}
_span_lock = threading.Lock()


def _span_dir(version_id: int, base_model_id: int) -> Path:
    return Path(settings.VAR_DIR) / "spans" / f"version-{version_id}" / f"base-{base_model_id}"


def _tokenizer_for(base_model):
    from factory.services import base_model_check
    from factory.training.modeling import load_tokenizer

    return load_tokenizer(base_model_check(base_model))


def _engine_for(base_model):
    from attribution.engines.spans import SpanEngine

    return SpanEngine(tokenizer=_tokenizer_for(base_model), min_span=settings.SERVING_SPANS_MIN_TOKENS)


def _open_span_index(row: SpanIndex):
    """(engine, index) for a ready row, cached per process until the row is rebuilt (built_at changes)."""
    key = (row.pk, str(row.built_at))
    with _span_lock:
        hit = _span_cache.get(key)
        if hit is None:
            engine = _engine_for(row.base_model)
            hit = (engine, engine.load_index(row.directory))
            for old in [k for k in _span_cache if k[0] == row.pk]:
                del _span_cache[old]
            _span_cache[key] = hit
        return hit


def _version_records(version) -> list:
    from attribution.engines.base import Record as SpanRecord
    from datanets.models import Record

    rows = Record.objects.filter(versions=version).order_by("pk").values_list("pk", "text", "contributor_id")
    return [SpanRecord(id=str(pk), text=text, contributor=str(uid)) for pk, text, uid in rows.iterator()]


def span_index_ensure(*, version, base_model) -> SpanIndex:
    """The version's span index row; a missing one is queued for a background build (on commit)."""
    row, created = SpanIndex.objects.get_or_create(version=version, base_model=base_model)
    if created or row.status == SpanIndex.Status.FAILED and not row.error.startswith("permanent"):
        if not created:
            SpanIndex.objects.filter(pk=row.pk).update(status=SpanIndex.Status.QUEUED, error="")
            row.status = SpanIndex.Status.QUEUED
        from serving.tasks import span_index_build_task

        row_id = row.pk
        transaction.on_commit(lambda: span_index_build_task.delay(row_id))
    return row


def _earlier_index(row: SpanIndex) -> SpanIndex | None:
    """A ready index of an earlier version of the same Datanet and base whose records this version keeps."""
    from datanets.models import Record

    candidates = SpanIndex.objects.filter(
        version__datanet_id=row.version.datanet_id, base_model=row.base_model, status=SpanIndex.Status.READY,
        version__number__lt=row.version.number).order_by("-version__number")
    for cand in candidates[:3]:
        old_ids = set(Record.objects.filter(versions=cand.version_id).values_list("pk", flat=True))
        new_ids = set(Record.objects.filter(versions=row.version_id).values_list("pk", flat=True))
        if old_ids <= new_ids and len(new_ids - old_ids) <= settings.SERVING_SPANS_DELTA_MAX_RECORDS:
            return cand
    return None


def span_index_build(*, span_index_id: int, compact: bool = False) -> SpanIndex | None:
    """Build (or with `compact`, merge the delta segments of) a version's span index.

    A version that only adds up to SERVING_SPANS_DELTA_MAX_RECORDS records to an indexed earlier version
    copies that index and adds them as one delta segment (no re-sort of the old corpus); a compaction
    is then queued. Otherwise one full build. Safe to run twice.
    """
    with transaction.atomic():
        row = SpanIndex.objects.select_for_update().select_related("version", "base_model").filter(
            pk=span_index_id).first()
        if row is None:
            return None
        if compact and row.status != SpanIndex.Status.READY:
            return row
        if not compact:
            if row.status == SpanIndex.Status.READY:
                return row
            row.status = SpanIndex.Status.BUILDING
            row.save(update_fields=["status"])
    started = time.perf_counter()
    directory = _span_dir(row.version_id, row.base_model_id)
    try:
        engine = _engine_for(row.base_model)
        if compact:
            index = engine.rebuild(engine.load_index(directory))
        else:
            earlier = _earlier_index(row)
            if directory.exists():
                shutil.rmtree(directory)
            records = _version_records(row.version)
            if not records:
                raise ApplicationError("permanent: the version has no records")
            if earlier is not None:
                shutil.copytree(earlier.directory, directory)
                index = engine.load_index(directory)
                known = set(index.record_ids)
                index = engine.add_records(index, [r for r in records if r.id not in known])
                row.derived_from = earlier
            else:
                index = engine.fit(None, records, directory=directory)
    except Exception as exc:
        logger.exception("span index %s failed", span_index_id)
        message = exc.message if isinstance(exc, ApplicationError) else f"{type(exc).__name__}: {exc}"
        SpanIndex.objects.filter(pk=span_index_id).update(status=SpanIndex.Status.FAILED, error=message[:2000])
        return None
    row.status, row.directory, row.error = SpanIndex.Status.READY, str(directory), ""
    row.record_count, row.token_count = len(index.record_ids), index.spans.n_tokens
    row.segments, row.disk_bytes = len(index.spans.segments), index.spans.nbytes
    row.build_seconds, row.built_at = round(time.perf_counter() - started, 3), timezone.now()
    row.save()
    if row.segments > 1:
        from serving.tasks import span_index_build_task

        row_id = row.pk
        transaction.on_commit(lambda: span_index_build_task.delay(row_id, compact=True))
    return row
