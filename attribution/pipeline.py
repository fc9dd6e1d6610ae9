"""The post-training chain, declared once: train -> attribution index -> on-chain registration.

One Celery canvas per fine-tune job, sent by the factory when it queues (or re-queues) the job. The factory
sits below this app and cannot import it, so AttributionConfig.ready registers `post_training` with
`factory.services.finetune_pipeline_set`. Every step is idempotent and hands the next one the model's id
(None: the job made no model, and the later steps do nothing). Queues come from CELERY_TASK_ROUTES (gpu).

1. `factory.tasks.finetune_job_run_task(job_id)` trains and writes the FineTunedModel -> its id.
2. `attribution.tasks.model_index_task(model_id)` builds its gradient index, stores the contributor weights
   and publishes their tree (`attribution.publication`); a generator gets its span index from serving
   instead (signal `attribution_index_unsupported`). It never stops the chain: a failed index is on its row.
3. `attribution.tasks.model_register_task(model_id)` registers the model on ModelRegistry (outbox
   `model_register`) with the published attribution root, so the chain holds the real root from the start.
"""
from __future__ import annotations

from celery import Signature, chain

from attribution.tasks import model_index_task, model_register_task
from factory.services import finetune_training_step


def post_training(job_id: int, task_id: str) -> Signature:
    """The job's canvas; `task_id` is the training step's (the job's row keeps it: only that message trains)."""
    return chain(finetune_training_step(job_id, task_id), model_index_task.s(), model_register_task.s())
