"""Paid inference: run a fine-tuned model on the shared serving engine, charge the fee, attribute the
answer to its training records and contributors and settle the contributors' part by that attribution
(held as pending until the model's index is ready; `inference_settle`). Also the span indexes that
attribute generated text (one per Datanet version and base tokenizer), built in the background.

Errors are ApplicationError with the HTTP status the API answers: 400 empty input, 413 oversize input,
404 unknown model, 409 a model that cannot serve yet. See docs/serving.md.
"""
from __future__ import annotations

import logging
import shutil
import threading
import time
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from attribution.engines.base import Record as SpanRecord
from attribution.engines.spans import SpanEngine
from attribution.models import AttributionIndex
from attribution.selectors import attribution_index_get, model_contributor_weights
from attribution.services import attribution_index_build_enqueue, prediction_explain
from core.errors import ApplicationError
from datanets.chat import conversation_answers
from datanets.models import Record
from factory.models import FineTunedModel, FineTuneJob
from factory.services import base_model_check
from ledger.services import fee_split_get, rewards_accrue
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
ERR_NUL = "The input text contains a NUL character (\\u0000), which is not text."


# --- the engine ---------------------------------------------------------------------------------

_engine = None
_engine_lock = threading.Lock()


def serving_engine():
    """This process's ServingEngine (one copy of each base; the adapter LRU sized in settings)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            from serving.openlora import ServingConfig, ServingEngine  # torch: loaded by the first inference

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
            from serving.openlora import Batcher  # torch, as above

            _batcher = Batcher(engine, max_wait_ms=settings.SERVING_BATCH_WAIT_MS)
        return _batcher


# --- checks -------------------------------------------------------------------------------------

def model_get(*, model_id) -> object:
    try:
        return FineTunedModel.objects.select_related("base_model", "job", "datanet_version").get(pk=int(model_id))
    except (FineTunedModel.DoesNotExist, TypeError, ValueError):
        raise ApplicationError(ERR_NO_MODEL.format(id=model_id), status_code=404) from None


def model_serving_path(*, model) -> str:
    """The base model folder the model runs on, or a 409 saying why it cannot serve."""
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


def input_clean(*, text, strip: bool = True) -> str:
    """The text to run (stripped, unless `strip` is off: a rendered chat prompt ends where the answer
    begins, often with a newline the model was trained to see); 400 when empty, 413 when over the limit."""
    if not isinstance(text, str) or not text.strip():
        raise ApplicationError(ERR_EMPTY, status_code=400)
    if "\x00" in text:  # PostgreSQL text cannot hold NUL: refused here, not a 500 at the insert
        raise ApplicationError(ERR_NUL, status_code=400)
    text = text.strip() if strip else text
    if len(text) > settings.SERVING_MAX_INPUT_CHARS:
        raise ApplicationError(ERR_TOO_LONG.format(n=len(text), limit=settings.SERVING_MAX_INPUT_CHARS),
                               status_code=413)
    return text


# --- inference ----------------------------------------------------------------------------------

def inference_create(*, model, user, text: str, api_key=None, channel: str = Inference.Channel.API,
                     params: dict | None = None, strip: bool = True) -> Inference:
    """Validate and write the pending row (no model run yet). `params`: generation settings, already
    checked by the caller (max_new_tokens, temperature, top_p, stop), kept on the row for the runner;
    `strip` off keeps a prompt's edges (completions)."""
    text = input_clean(text=text, strip=strip)
    model_serving_path(model=model)
    return Inference.objects.create(model=model, user=user, api_key=api_key, channel=channel, input_text=text,
                                    params=params or {})


def inference_request(*, inference: Inference, base_path: str):
    """The engine request for a row: its text, task and generation settings."""
    from serving.openlora import InferenceRequest  # torch: only in a process that serves

    p = inference.params or {}
    return InferenceRequest(base_path=base_path, adapter_dir=inference.model.adapter_dir, text=inference.input_text,
                            task=inference.model.task, max_new_tokens=p.get("max_new_tokens"),
                            temperature=p.get("temperature"), top_p=p.get("top_p"), stop=p.get("stop"))


def inference_run(*, inference_id: int) -> Inference:
    """Run a pending inference: serve, charge, and settle the contributors' part when the model's
    attribution index is ready (else hold it, `settlement` pending, for `inference_settle`).

    Idempotent: a finished row is returned as is; accruals are keyed by the row (ledger idempotency).
    """
    inference = Inference.objects.select_related("model", "model__base_model").get(pk=inference_id)
    if inference.status != Inference.Status.PENDING:
        return inference
    started = time.perf_counter()
    try:
        result = _serve(inference_request(inference=inference, base_path=model_serving_path(model=inference.model)))
    except _serve_errors() as exc:
        return inference_fail(inference=inference, error=exc)
    return inference_finish(inference=inference, result=result, seconds=time.perf_counter() - started)


def inference_fail(*, inference: Inference, error: Exception) -> Inference:
    """Mark a pending row failed with the reason; nothing is charged."""
    message = error.message if isinstance(error, ApplicationError) else str(error)
    Inference.objects.filter(pk=inference.pk, status=Inference.Status.PENDING).update(
        status=Inference.Status.FAILED, error=message[:2000], finished_at=timezone.now())
    inference.refresh_from_db()
    return inference


OUTPUT_KEYS = ("label", "probabilities", "text", "prompt_tokens", "completion_tokens", "finish_reason")


def inference_finish(*, inference: Inference, result: dict, seconds: float) -> Inference:
    """Record a served answer (`result`: the engine's dict), charge the fee and settle or hold the
    contributors' part. Idempotent: a row no longer pending is returned as it is."""
    model = inference.model
    output = {k: v for k, v in result.items() if k in OUTPUT_KEYS}
    fee = Decimal(str(settings.SERVING_FEE_PER_CALL)).quantize(PLACES)
    # Before the lock: reading governance's split may ask the chain (seconds, when it is slow), and the
    # attribution runs a backward pass.
    split = fee_split_charge(model=model, fee=fee)
    settled = answer_settlement(model=model, text=inference.input_text, output=output)
    with transaction.atomic():
        locked = Inference.objects.select_for_update().get(pk=inference.pk)
        if locked.status != Inference.Status.PENDING:
            return locked
        locked.output, locked.fee, locked.fee_split = output, fee, split
        locked.attribution = settled[0] if settled else _pending_attribution(model)
        locked.status, locked.finished_at = Inference.Status.DONE, timezone.now()
        locked.settlement = Inference.Settlement.PENDING
        locked.latency_ms = round(seconds * 1000, 2)
        locked.save()
        developer = split["developer"]
        if Decimal(developer["amount"]) > 0:  # the developer's part does not depend on attribution

            rewards_accrue(allocations={int(developer["user_id"]): Decimal(developer["amount"])},
                           source=REWARD_SOURCE, reference=f"inference:{locked.pk}", model_id=model.pk)
        if settled:
            _settle_locked(locked, *settled)
    return locked


def _serve_errors() -> tuple:
    from serving.openlora.adapters import AdapterError

    return (ApplicationError, AdapterError, OSError, RuntimeError, ValueError, TimeoutError)


_vllm = None


def vllm_for(request):
    """The vLLM client when SERVING_VLLM_URL is set and that server runs this generator's base, else None
    (classifiers, other bases, and adapters with LoRA on the output layer, whose weights vLLM refuses as
    "unsupported LoRA weight", stay on the built-in engine)."""
    from factory.training.modeling import adapter_wraps_output_layer  # torch: only where vLLM is configured

    global _vllm
    if not settings.SERVING_VLLM_URL or (request.task or GENERATION) != GENERATION:
        return None
    if request.adapter_dir and adapter_wraps_output_layer(request.adapter_dir):
        return None
    with _engine_lock:
        if _vllm is None or _vllm.url != settings.SERVING_VLLM_URL.rstrip("/"):
            from serving.vllm import VllmClient

            _vllm = VllmClient(settings.SERVING_VLLM_URL, timeout=settings.SERVING_TIMEOUT_SECONDS,
                               max_new_tokens=settings.SERVING_MAX_NEW_TOKENS)
        client = _vllm
    return client if client.serves(request.base_path) else None


def _serve(request) -> dict:
    """One request through vLLM (a generator on its base), this process's batcher, or the inference server
    at SERVING_URL (backend http)."""
    if (client := vllm_for(request)) is not None:
        return client.generate(request)
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


def inference_execute(*, model, user, text: str, api_key=None, channel: str = Inference.Channel.API,
                      params: dict | None = None, strip: bool = True) -> Inference:
    """Create and run one inference by the configured backend. `celery`: the `gpu` queue runs it and this
    waits for the row (the caller must not hold a transaction open, or the task never sees the row)."""
    inference = inference_create(model=model, user=user, text=text, api_key=api_key, channel=channel, params=params,
                                 strip=strip)
    return inference_dispatch(inference=inference)


def inference_dispatch(*, inference: Inference) -> Inference:
    """Run a pending row by the configured backend and return it finished; a failure is a 409."""
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


# --- attribution of one answer ------------------------------------------------------------------
# Settle only by attribution (docs/serving.md, "Settlement"): an answer's contributors' part waits for the
# per-answer index (gradient for classifiers, spans for generators), then goes by the answer's positive
# influence; an answer with none goes by the model-level contributor weights. Nothing is split by record
# counts: that pays volume, not influence, and a stuffer of off-topic records would collect it.

READY, WAITING, NEVER = "ready", "waiting", "never"


def attribution_state(*, model) -> str:
    """`ready`: the answer can be attributed now; `waiting`: its index is queued, building, failed (a
    rebuild can fix it) or not yet asked for; `never`: it cannot be (no training version, or a span
    index that can never be built), so it settles by the model-level rule at once."""
    if model.datanet_version_id is None or model.base_model_id is None:
        return NEVER
    if model.task == CLASSIFICATION:
        index = attribution_index_get(model=model)
        return READY if index is not None and index.status == AttributionIndex.Status.READY else WAITING
    row = span_index_ensure(version=model.datanet_version, base_model=model.base_model)
    if row.status == SpanIndex.Status.READY:
        return READY
    if row.status == SpanIndex.Status.FAILED and row.error.startswith("permanent"):
        return NEVER
    return WAITING


def _pending_attribution(model) -> dict:
    return {"method": "", "status": "pending", "records": [], "contributors": [],
            "reason": "the model's attribution index is not ready; the contributors' part of the fee is held "
                      "and split by this answer's attribution when it is"}


def _explain_view(model):
    """The serving engine's own loaded model, PEFT-shaped, when it serves in this process in float32; None
    (attribution loads its float32 copy) otherwise: in another process, or at a precision whose
    gradients would not match the index's."""
    if settings.SERVING_BACKEND == "http":
        return None
    engine = serving_engine()
    if not engine.explains_exactly:
        return None
    try:
        base_path = model_serving_path(model=model)
    except ApplicationError:
        return None
    return lambda: engine.peft_view(base_path, model.adapter_dir)


def answer_settlement(*, model, text: str, output: dict) -> tuple[dict, str, dict] | None:
    """(attribution, rule, shares {user id: share}) for a served answer, or None while it must wait.

    The classifier's explanation is of the label served and charged (`output["label"]`), on the serving
    engine's model where it can be; a generator's, of the text served.
    """
    state = attribution_state(model=model)
    if state == WAITING:
        return None
    top_k = settings.SERVING_TOP_K
    attribution: dict = {"method": "", "status": "unavailable", "records": [], "contributors": []}
    if state == READY and model.task == CLASSIFICATION:
        try:
            explained = prediction_explain(model=model, text=text, top_k=top_k, served=output,
                                           model_view=_explain_view(model))
        except ApplicationError as exc:
            if exc.status_code == 409:  # the index went away meanwhile (a rebuild): wait for it
                return None
            attribution["reason"] = exc.message
        else:
            attribution = {
                "method": explained.get("method", "gradient"), "status": "ready",
                "label": explained["prediction"]["label"],
                "records": [{"record_id": r["record_id"], "score": r["score"], "text": r.get("text", ""),
                             "contributor_id": r.get("contributor_id")} for r in explained["records"]],
                "contributors": [{"user_id": c["user_id"], "share": c["share"]}
                                 for c in explained["contributors"] if c["share"] > 0]}
    elif state == READY:
        attribution = generation_explain(model=model, text=output.get("text", ""), prompt=text, top_k=top_k)
    shares = {int(c["user_id"]): c["share"] for c in attribution["contributors"] if c["share"] > 0}
    if shares:
        return _with_people(attribution), Inference.Rule.ATTRIBUTION, shares
    # No contributor has positive influence on this answer (or it reuses no training text): the model's
    # contributor weights, what its contributors earned over its validation set, split it.

    weights = {int(u): w for u, w in model_contributor_weights(model=model).items() if w > 0}
    attribution = {**attribution, "contributors": [
        {"user_id": u, "share": float(w)} for u, w in sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))]}
    if weights:
        attribution.setdefault("reason", "no contributor has positive influence on this answer")
        return _with_people(attribution), Inference.Rule.MODEL_WEIGHTS, weights
    attribution.setdefault("reason", "no contributor has positive influence and the model has no contributor weights")
    return _with_people(attribution), Inference.Rule.TREASURY, {}


def _with_people(attribution: dict) -> dict:
    """The attribution as `/explain` gives it: each record with its text, label, contributor (username) and
    contributor_id, each contributor with its username. Records deleted since keep what they had."""
    ids = [int(r["record_id"]) for r in attribution.get("records", [])]
    found = {r.pk: r for r in Record.objects.filter(pk__in=ids).select_related("contributor")}
    user_ids = {int(c["user_id"]) for c in attribution.get("contributors", [])}
    names = dict(get_user_model().objects.filter(pk__in=user_ids).values_list("pk", "username"))
    records = []
    for r in attribution.get("records", []):
        row = found.get(int(r["record_id"]))
        if row is not None:
            r = {**r, "text": row.text, "label": row.label, "contributor": row.contributor.get_username(),
                 "contributor_id": row.contributor_id}
        records.append(r)
    contributors = [{**c, "username": names.get(int(c["user_id"]), "")} for c in attribution.get("contributors", [])]
    return {**attribution, "records": records, "contributors": contributors}


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

WEI = 10**18


def _wei(amount: Decimal) -> int:
    return int(Decimal(amount).scaleb(18).to_integral_value())


def _open(wei: int) -> str:
    """Wei as an exact OPEN string with 18 decimals (fixed point, never exponent notation)."""
    return format(Decimal(wei).scaleb(-18).quantize(PLACES), "f")


def split_wei(total: int, shares: dict) -> dict:
    """`total` wei split by `shares` (any non-negative numbers) with the largest-remainder method: each
    gets the floor of its exact quota, then the wei left over go one each to the largest remainders
    (ties: the larger share, then the earlier key in order). Exact integers that sum to `total`; {} when
    no share is positive."""
    exact = {k: Fraction(s) for k, s in shares.items() if s > 0}
    whole = sum(exact.values())
    if not exact or total <= 0:
        return {}
    quotas = {k: total * s / whole for k, s in exact.items()}
    out = {k: int(q) for k, q in quotas.items()}  # floor: quotas are non-negative
    order = {k: i for i, k in enumerate(exact)}
    rest = sorted(exact, key=lambda k: (-(quotas[k] - out[k]), -exact[k], order[k]))
    for k in rest[: total - sum(out.values())]:
        out[k] += 1
    return out


def fee_split_charge(*, model, fee: Decimal) -> dict:
    """The fee's parts by governance's fractions (`ledger.services.fee_split_get`), exact in wei.

    {"fractions", "developer": {"user_id", "amount"}, "protocol", "contributors_part", "held",
    "contributors": {}}: the contributors' part is `held` until the answer is settled (`_settle_locked`).
    The protocol part stays in the treasury (which funds every reward epoch), so it is not accrued.
    """
    fractions = fee_split_get()
    parts = split_wei(_wei(fee), {k: fractions[k] for k in ("contributors", "developer", "protocol")})
    parts = {k: parts.get(k, 0) for k in ("contributors", "developer", "protocol")}
    return {
        "fractions": {k: str(v) for k, v in fractions.items()},
        "developer": {"user_id": model.developer_id, "amount": _open(parts["developer"])},
        "protocol": _open(parts["protocol"]),
        "contributors_part": _open(parts["contributors"]),
        "held": _open(parts["contributors"]),
        "contributors": {},
    }


def _settle_locked(locked: Inference, attribution: dict, rule: str, shares: dict[int, float]) -> None:
    """Split the held contributors' part by `shares` and accrue it; the row is locked by the caller.

    Accrued under `inference:<id>:contributors` (the developer's part is `inference:<id>`), so a retried
    settlement cannot pay twice and a developer who also contributed gets both.
    """
    split = dict(locked.fee_split)
    held = _wei(Decimal(split.get("held", "0")))
    amounts = split_wei(held, {u: shares[u] for u in sorted(shares)})
    split["contributors"] = {str(u): _open(a) for u, a in amounts.items() if a > 0}
    if not amounts:  # rule treasury: no signal and no model weights, the part stays with the protocol
        split["protocol"] = _open(_wei(Decimal(split["protocol"])) + held)
    split["held"] = _open(0)
    locked.fee_split, locked.attribution = split, attribution
    locked.settlement, locked.settlement_rule, locked.settled_at = Inference.Settlement.SETTLED, rule, timezone.now()
    locked.save(update_fields=["fee_split", "attribution", "settlement", "settlement_rule", "settled_at"])
    allocations = {u: Decimal(_open(a)) for u, a in amounts.items() if a > 0}
    if allocations:
        rewards_accrue(allocations=allocations, source=REWARD_SOURCE, reference=f"inference:{locked.pk}:contributors",
                       model_id=locked.model_id)


def inference_settle(*, inference_id: int) -> Inference:
    """Attribute a charged answer held as pending and split its contributors' part. Idempotent: a settled
    row, or one whose index is still not ready, is returned unchanged."""
    inference = Inference.objects.select_related("model", "model__base_model").get(pk=inference_id)
    if inference.settlement != Inference.Settlement.PENDING:
        return inference
    settled = answer_settlement(model=inference.model, text=inference.input_text, output=inference.output)
    if settled is None:
        return inference
    with transaction.atomic():
        locked = Inference.objects.select_for_update().get(pk=inference.pk)
        if locked.settlement == Inference.Settlement.PENDING:
            _settle_locked(locked, *settled)
        return locked


def inferences_settle(*, model_id: int | None = None) -> dict:
    """Settle every pending answer (of one model, or all): what the index-ready hook and the beat sweep
    run. A classifier with pending answers and no index at all gets its build queued (a model trained
    before attribution existed), so its answers do not wait forever. Returns counts."""
    pending = Inference.objects.filter(settlement=Inference.Settlement.PENDING)
    if model_id is not None:
        pending = pending.filter(model_id=model_id)
    counts = {"settled": 0, "waiting": 0}
    for mid in sorted(set(pending.values_list("model_id", flat=True))):
        model = model_get(model_id=mid)
        if model.task == CLASSIFICATION and model.datanet_version_id and attribution_index_get(model=model) is None:
            attribution_index_build_enqueue(model=model)
        if attribution_state(model=model) == WAITING:
            counts["waiting"] += pending.filter(model_id=mid).count()
            continue
        for pk in pending.filter(model_id=mid).order_by("pk").values_list("pk", flat=True):
            row = inference_settle(inference_id=pk)
            counts["settled" if row.settlement == Inference.Settlement.SETTLED else "waiting"] += 1
    return counts


def inferences_settle_enqueue(*, model_ids: list[int]) -> None:
    """Queue the settlement of these models' pending answers once the caller's transaction commits.
    Best effort: with the broker down the beat sweep settles them later."""
    from serving.tasks import inferences_settle_task

    def send():
        for mid in model_ids:
            try:
                inferences_settle_task.delay(mid)
            except Exception:  # noqa: BLE001 - the sweep is the safety net
                logger.warning("could not queue the settlement of model %s; the sweep will", mid, exc_info=True)

    if model_ids:
        transaction.on_commit(send)


# --- span indexes -------------------------------------------------------------------------------

_span_cache: dict[tuple[int, str], tuple] = {}
_span_lock = threading.Lock()


def _span_dir(version_id: int, base_model_id: int) -> Path:
    return Path(settings.VAR_DIR) / "spans" / f"version-{version_id}" / f"base-{base_model_id}"


def _tokenizer_for(base_model):
    from factory.training.modeling import load_tokenizer  # torch: only where span indexes are used

    return load_tokenizer(base_model_check(base_model))


def _engine_for(base_model):
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
    """The version's records as the span index holds them: a conversation by its assistant turns (what a
    model trained on it, with assistant-only loss, learns to say; its stored JSON would credit quotes and
    braces and miss every answer that spans a line), any other record by its text."""
    rows = Record.objects.filter(versions=version).order_by("pk").values_list("pk", "text", "contributor_id")
    return [SpanRecord(id=str(pk), text=conversation_answers(text), contributor=str(uid))
            for pk, text, uid in rows.iterator()]


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
    candidates = SpanIndex.objects.filter(
        version__datanet_id=row.version.datanet_id, base_model=row.base_model, status=SpanIndex.Status.READY,
        version__number__lt=row.version.number).order_by("-version__number")
    for cand in candidates[:3]:
        old_ids = set(Record.objects.filter(versions=cand.version_id).values_list("pk", flat=True))
        new_ids = set(Record.objects.filter(versions=row.version_id).values_list("pk", flat=True))
        if old_ids <= new_ids and len(new_ids - old_ids) <= settings.SERVING_SPANS_DELTA_MAX_RECORDS:
            return cand
    return None


def span_index_fail(*, span_index_id: int, reason: str) -> None:
    """The task base's failure hook (the time limit, a crash past the build's own handler)."""
    SpanIndex.objects.filter(pk=span_index_id).exclude(status=SpanIndex.Status.READY).update(
        status=SpanIndex.Status.FAILED, error=reason[:2000])


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
    # Generators' answers held until this index was ready are settled now.
    waiting = Inference.objects.filter(settlement=Inference.Settlement.PENDING, model__datanet_version=row.version_id,
                                       model__base_model=row.base_model_id).values_list("model_id", flat=True)
    inferences_settle_enqueue(model_ids=sorted(set(waiting)))
    if row.segments > 1:
        from serving.tasks import span_index_build_task

        row_id = row.pk
        transaction.on_commit(lambda: span_index_build_task.delay(row_id, compact=True))
    return row
