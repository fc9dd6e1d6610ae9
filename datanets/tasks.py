"""Thin Celery tasks (queue `cpu`): they take ids and call one service."""
from celery import shared_task

from datanets import harm, services


@shared_task(name="datanets.tasks.contribution_ingest_task", acks_late=True, ignore_result=True)
def contribution_ingest_task(contribution_id: int) -> None:
    """Ingest one contribution. A redelivered task starts phase 1 again; a finished one is a no-op."""
    services.contribution_ingest(contribution_id=contribution_id)


@shared_task(name="datanets.tasks.contribution_bonds_release_task", acks_late=True, ignore_result=True)
def contribution_bonds_release_task() -> None:
    """Beat: queue the release of every accepted stake whose bond has ended (idempotent, guarded per row)."""
    harm.contribution_bonds_release()
