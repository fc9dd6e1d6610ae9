"""Thin Celery tasks: the model run and settlements on the `gpu` queue, span index builds on `cpu`."""
from celery import shared_task


@shared_task(name="serving.tasks.inference_run_task", acks_late=True, ignore_result=True)
def inference_run_task(inference_id: int) -> None:
    from serving.services import inference_run

    inference_run(inference_id=inference_id)


@shared_task(name="serving.tasks.span_index_build_task", acks_late=True, ignore_result=True)
def span_index_build_task(span_index_id: int, compact: bool = False) -> None:
    from serving.services import span_index_build

    span_index_build(span_index_id=span_index_id, compact=compact)


# On `gpu`: a classifier's answer is attributed by a backward pass of its model. Idempotent (each row's
# settlement status is checked under its lock), so a redelivery or the sweep overlapping it is harmless.
@shared_task(name="serving.tasks.inferences_settle_task", acks_late=True, ignore_result=True,
             soft_time_limit=1800, time_limit=1900)
def inferences_settle_task(model_id: int | None = None) -> None:
    """Settle one model's pending answers (queued when its index is ready), or every model's (beat)."""
    from serving.services import inferences_settle

    inferences_settle(model_id=model_id)
