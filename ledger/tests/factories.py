"""Rows the ledger tests need from other apps, made with the ORM (no dependency on their services)."""
from __future__ import annotations

import hashlib
import itertools
from decimal import Decimal

from accounts.tests.factories import UserFactory
from core.factory_boy import factory_boy as factory
from ledger import client
from ledger.models import LedgerTransaction

_seq = itertools.count(1)


def h(text: str) -> str:
    return "0x" + hashlib.sha256(text.encode()).hexdigest()


def make_datanet(*, owner=None, curators=(), min_stake="10", slash_fraction="0.5"):
    from datanets.models import Datanet

    n = next(_seq)
    owner = owner or UserFactory()
    d = Datanet.objects.create(name=f"Ledger test {n}", slug=f"ledger-test-{n}", owner=owner,
                               min_stake=Decimal(min_stake), slash_fraction=Decimal(slash_fraction))
    d.curators.set(list(curators))
    return d


def make_contribution(*, datanet, contributor=None, curator=None, stake="10"):
    from datanets.models import Contribution

    n = next(_seq)
    digest = hashlib.sha256(f"file {n}".encode()).hexdigest()
    return Contribution.objects.create(datanet=datanet, contributor=contributor or UserFactory(), file_name=f"f{n}.csv",
                                       file_sha256=digest, stake=Decimal(stake), curator=curator)


def stake_payload(c) -> dict:
    return {"contribution_id": c.pk, "datanet_id": c.datanet_id, "contributor_id": c.contributor_id,
            "content_hash": "0x" + c.file_sha256, "stake": str(c.stake)}


def decision_payload(c) -> dict:
    return {"contribution_id": c.pk, "datanet_id": c.datanet_id, "content_hash": "0x" + c.file_sha256,
            "decider_id": c.curator_id or c.datanet.owner_id}


def datanet_payload(d) -> dict:
    """What datanets.services.datanet_create puts in its outbox row (the ledger reads no Datanet row)."""
    return {"datanet_id": d.pk, "name": d.name, "slug": d.slug, "owner_id": d.owner_id,
            "curator_ids": sorted(d.curators.values_list("pk", flat=True)), "min_stake": str(d.min_stake),
            "slash_bps": int(Decimal(d.slash_fraction) * 10_000)}


class LedgerTransactionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LedgerTransaction

    kind = "model_register"
    payload = factory.LazyFunction(dict)
    idempotency_key = factory.Sequence(lambda n: f"test:{n}")


def revert_name(call, sender) -> str:
    """The custom error a contract call reverts with (the call must revert)."""
    try:
        call.call({"from": sender})
    except Exception as exc:
        reverted = client.revert_from_exception(exc)
        assert reverted is not None, exc
        return reverted.error
    raise AssertionError("the call did not revert")
