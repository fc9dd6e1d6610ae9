"""Thin Celery tasks: the model run on the `gpu` queue, span index builds on `cpu`."""
from celery import shared_task


@shared_task(name="serving.tasks.inference_run_task", acks_late=True, ignore_result=True)
def inference_run_task(inference_id: int) -> None:
    from serving.services import inference_run

    inference_run(inference_id=inference_id)


@shared_task(name="serving.tasks.span_index_build_task", acks_late=True, ignore_result=True)
def span_index_build_task(span_index_id: int, compact: bool = False) -> None:
    from serving.services import span_index_build

    span_index_build(span_index_id=span_index_id, compact=compact)
