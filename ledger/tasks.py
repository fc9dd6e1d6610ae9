"""Thin Celery tasks of the ledger queue (a worker with concurrency 1 keeps the nonces in order)."""
import logging

from celery import shared_task

from ledger import client

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, ignore_result=True)
def outbox_send_task() -> dict | None:
    """Reconcile and send the outbox. A node that is down leaves every row as it is for the next run."""
    from ledger.outbox import outbox_process

    try:
        return outbox_process()
    except client.ChainError as exc:
        logger.warning("ledger outbox: %s; the sweep retries", exc)
        return None


@shared_task(acks_late=True, ignore_result=True)
def outbox_sweep_task() -> dict | None:
    """Beat: the same as outbox_send_task, for rows whose kick was lost (broker down, crash)."""
    return outbox_send_task()


@shared_task(acks_late=True, ignore_result=True)
def rewards_epoch_close_task() -> int | None:
    """Beat: settle the accrued rewards into an epoch (its publication goes through the outbox)."""
    from ledger.services import rewards_epoch_close

    epoch = rewards_epoch_close()
    return epoch.pk if epoch else None


@shared_task(acks_late=True, ignore_result=True)
def rewards_epoch_tick_task() -> int | None:
    """Beat, every LEDGER_EPOCH_TICK_SECONDS: close an epoch once the governed epoch length passed
    (ProtocolParameters.epochSeconds, read cached; the last value read while the chain is down)."""
    from ledger.governance import epoch_close_due
    from ledger.services import rewards_epoch_close

    if not epoch_close_due():
        return None
    epoch = rewards_epoch_close()
    return epoch.pk if epoch else None


@shared_task(acks_late=True, ignore_result=True)
def rewards_epochs_sweep_task() -> list[int]:
    """Beat: queue the sweep of epochs past their claim deadline."""
    from ledger.services import rewards_epochs_sweep

    return [e.pk for e in rewards_epochs_sweep()]
