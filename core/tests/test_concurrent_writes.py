"""Concurrent read-then-write transactions (the web, a worker and beat at once) all succeed. On SQLite, a
deferred transaction that read before writing failed at once with "database is locked"; the embedded
default now takes the write lock at BEGIN and waits on the timeout."""
from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from accounts.tests.factories import UserFactory
from ledger.models import RewardAccrual

THREADS, ROUNDS = 4, 15


@pytest.mark.django_db(transaction=True)
def test_read_then_write_transactions_in_parallel_all_commit():
    user = UserFactory()
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(ROUNDS):
                with transaction.atomic():
                    seen = RewardAccrual.objects.filter(user=user).count()  # a read first, then a write
                    RewardAccrual.objects.create(user=user, amount=seen + 1, source=f"t{n}", reference=str(i))
        except BaseException as exc:  # noqa: BLE001 - reported below, with the thread's error
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert RewardAccrual.objects.filter(user=user).count() == THREADS * ROUNDS
