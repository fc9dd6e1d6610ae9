"""Curator-held evaluation data: uploaded by a curator only, with no stake and no chain decision, frozen in
versions (the Merkle root covers it) and shown apart; never trained on or paid (factory, attribution tests)."""
import json
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from core.errors import ApplicationError
from datanets import services
from datanets.models import Contribution
from datanets.selectors import version_evaluation_records, version_training_records
from datanets.tests.factories import DatanetFactory, contributor, curator_of
from datanets.tests.helpers import ingest, upload
from ledger.models import LedgerTransaction

pytestmark = pytest.mark.django_db
TRAIN = b"label,text\npositive,Profit rose.\nnegative,Loss widened.\nneutral,Monday meeting.\n"
HELD = b"label,text\npositive,Sales grew sharply.\nnegative,Orders collapsed.\n"


def _keys(c) -> set[str]:
    return {k.split(":")[0] for k in LedgerTransaction.objects.filter(idempotency_key__endswith=f":{c.id}")
            .values_list("idempotency_key", flat=True)}


def test_a_curator_uploads_evaluation_data_through_the_api_with_no_stake_and_decides_it():
    datanet = DatanetFactory()
    cura = curator_of(datanet, "cura")
    api = APIClient()
    api.force_authenticate(cura)
    resp = api.post(f"/api/v1/datanets/{datanet.slug}/contributions/",
                    {"file": SimpleUploadedFile("held.csv", HELD), "is_evaluation": "true"}, format="multipart")
    assert resp.status_code == 201, resp.json()
    assert resp.json()["is_evaluation"] is True
    c = services.contribution_ingest(contribution_id=resp.json()["id"])
    assert c.is_evaluation and c.record_count == 2 and c.stake == Decimal(0)
    # Its uploader may accept it (no stake, no payout to guard); nothing is staked, bonded or decided on-chain.
    c = services.contribution_accept(contribution=c, curator=cura)
    assert c.status == Contribution.Status.ACCEPTED and c.bond == "" and _keys(c) == set()
    assert api.get(resp.json()["url"]).json()["is_evaluation"] is True


def test_a_contributor_cannot_mark_an_upload_as_evaluation_data(client):
    datanet = DatanetFactory()
    alice = contributor("alice")
    with pytest.raises(ApplicationError) as err:
        upload(datanet, alice, "held.csv", HELD, is_evaluation=True)
    assert err.value.status_code == 403 and "curator" in err.value.message
    api = APIClient()
    api.force_authenticate(alice)
    resp = api.post(f"/api/v1/datanets/{datanet.slug}/contributions/",
                    {"file": SimpleUploadedFile("held.csv", HELD), "is_evaluation": "true"}, format="multipart")
    assert resp.status_code == 403 and not Contribution.objects.exists()
    # The form has no such field for her; posting it anyway makes an ordinary, staked contribution.
    client.force_login(alice)
    page = client.get(f"/datanets/{datanet.slug}/upload/")
    assert page.status_code == 200 and b"is_evaluation" not in page.content
    client.post(f"/datanets/{datanet.slug}/upload/", {"file": SimpleUploadedFile("held.csv", HELD), "is_evaluation": "on"})
    assert Contribution.objects.get().is_evaluation is False
    # A curator sees the box on the same form.
    client.force_login(curator_of(datanet, "cura"))
    assert b"is_evaluation" in client.get(f"/datanets/{datanet.slug}/upload/").content


def test_the_version_freezes_evaluation_records_under_its_root_and_counts_them_apart(client):
    datanet = DatanetFactory()
    cura, alice = curator_of(datanet, "cura"), contributor("alice")
    train = services.contribution_accept(contribution=ingest(upload(datanet, alice, "a.csv", TRAIN)), curator=cura)
    held = ingest(upload(datanet, cura, "held.csv", HELD, is_evaluation=True))
    services.contribution_accept(contribution=held, curator=cura)
    version = services.datanet_version_create(datanet=datanet, user=cura)
    version = services.datanet_version_export(version_id=version.id)
    assert (version.record_count, version.evaluation_count, version.contributor_count) == (5, 2, 1)
    assert services.version_verify(version=version).ok  # the root covers the evaluation records
    evaluation = version_evaluation_records(version=version)
    assert set(evaluation.values_list("contribution", flat=True)) == {held.id}
    assert set(version_training_records(version=version).values_list("contribution", flat=True)) == {train.id}
    assert services.version_record_proof(version=version, record_id=evaluation.first().id).verified
    lines = [json.loads(x) for x in (Path(version.export_path) / "data.jsonl").read_text().splitlines()]
    assert sum(x["evaluation"] for x in lines) == 2 and len(lines) == 5
    api = APIClient()
    api.force_authenticate(alice)
    body = api.get(f"/api/v1/datanets/{datanet.slug}/versions/{version.number}/").json()
    assert body["evaluation_count"] == 2 and body["record_count"] == 5
    page = client.get(f"/datanets/{datanet.slug}/").content.decode()
    assert "2 evaluation records (curator-held)" in page
