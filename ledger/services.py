"""Ledger services. Other apps write to the chain only through `enqueue`."""
import logging

from django.db import transaction

from ledger.models import LedgerTransaction

logger = logging.getLogger(__name__)


def enqueue(kind: str, payload: dict, idempotency_key: str) -> LedgerTransaction:
    """Record a chain write in the outbox, inside the caller's database transaction.

    Calling again with the same key returns the first row unchanged: a retried request never
    doubles a write. The ledger worker picks the row up after the transaction commits.
    """
    row, _ = LedgerTransaction.objects.get_or_create(
        idempotency_key=idempotency_key, defaults={"kind": kind, "payload": payload}
    )
    transaction.on_commit(_kick_sender)
    return row


def _kick_sender() -> None:
    # Imported late: tasks import services. Sending is best effort; the beat sweep retries.
    try:
        from ledger.tasks import outbox_send_task
    except ImportError:
        return
    try:
        outbox_send_task.apply_async(queue="ledger")
    except Exception:  # broker down: the periodic sweep sends it later; the row is safe
        logger.warning("could not queue the outbox sender; the beat sweep will", exc_info=True)
