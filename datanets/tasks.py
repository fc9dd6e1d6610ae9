"""Thin Celery tasks (queue `cpu`): they take ids and call one service."""
from celery import shared_task

from core.tasks import LongTask
from datanets import harm, services


class IngestTask(LongTask):
    """Ingest of one contribution: a crash or the time limit leaves it failed with the reason."""

    limits = "ingest"

    def fail_row(self, row_id: int, reason: str) -> None:
        services.contribution_ingest_fail(contribution_id=row_id, reason=reason)


class VersionExportTask(LongTask):
    """Exports of one version: a crash or the time limit leaves the export failed with the reason."""

    limits = "export"

    def fail_row(self, row_id: int, reason: str) -> None:
        services.datanet_version_export_fail(version_id=row_id, reason=reason)


@shared_task(base=IngestTask, name="datanets.tasks.contribution_ingest_task")
def contribution_ingest_task(contribution_id: int) -> None:
    """Ingest one contribution. A redelivered task starts phase 1 again; a finished one is a no-op."""
    services.contribution_ingest(contribution_id=contribution_id)


@shared_task(base=VersionExportTask, name="datanets.tasks.datanet_version_export_task")
def datanet_version_export_task(version_id: int) -> None:
    """Write one version's Parquet, JSONL and Arrow exports (progress on the row)."""
    services.datanet_version_export(version_id=version_id)


@shared_task(name="datanets.tasks.contribution_bonds_release_task", acks_late=True, ignore_result=True)
def contribution_bonds_release_task() -> None:
    """Beat: queue the release of every accepted stake whose bond has ended (idempotent, guarded per row)."""
    harm.contribution_bonds_release()
