"""One record's whole life, from upload to a claimed reward, through the REST API with real processes: a
Celery worker on `cpu,gpu` (ingest, export, training, attribution index, inference), one on `ledger` (every
chain write through the outbox) and anvil with the contracts deployed.

upload -> ingest -> curate (accept) -> version (root registered) -> fine-tune (a tiny BERT, a few steps) ->
attribution index (weights root published) -> paid inference (settled by attribution) -> reward epoch
(published) -> claim (paid on-chain). `make test` runs it on PostgreSQL + Redis, `make test-sqlite` on the
embedded default (SQLite, the file-system broker).
"""
from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from accounts.services import user_create
from attribution.models import AttributionIndex, AttributionPublication
from attribution.publication import ZERO_ROOT
from attribution.tests.conftest import attr_base_dir  # noqa: F401 - the tiny BERT base, built once per session
from attribution.tests.factories import LABELS, TRAIN_PARAMS, labelled_rows
from core import testing
from core.roles import CONTRIBUTOR, CURATOR, MODEL_DEVELOPER
from datanets.models import Contribution, DatanetVersion
from datanets.services import version_verify
from factory import services as factory_services
from factory.models import FineTunedModel, FineTuneJob
from ledger.client import ANVIL_DEV_KEY
from ledger.models import LedgerTransaction, RewardAccrual, RewardClaim, RewardEpoch
from ledger.services import address_for_user
from ledger.tasks import rewards_epoch_close_task
from ledger.tests.conftest import chain_deployment, chain_settings, chain_tx  # noqa: F401 - chain fixtures
from serving.models import Inference

pytestmark = [pytest.mark.slow, pytest.mark.worker, pytest.mark.chain]

SECRET = "end-to-end-custodial-secret"  # the workers and this process derive the same custodial wallets
FEE = Decimal("0.01")
CONTRIBUTORS = 3
E18 = 10**18


def wait_for(predicate, what: str, workers, timeout: float = 180):
    return testing.wait_for(predicate, what, workers, timeout=timeout, every=0.25)


def csv_bytes(rows: list[tuple[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    return out.getvalue().encode()


def client_for(user=None, token: str = "", api_key: str = "") -> APIClient:
    api = APIClient()
    if token:
        api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    elif api_key:
        api.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key}")
    else:
        api.force_authenticate(user)
    return api


def sign_up(username: str, roles: list[str]) -> tuple[APIClient, int]:
    resp = APIClient().post("/api/v1/auth/signup/", {"username": username, "password": "e2e-passphrase-7",
                                                     "roles": roles}, format="json")
    assert resp.status_code == 201, resp.content
    return client_for(token=resp.json()["token"]), resp.json()["user"]["id"]


def outbox_confirmed(kind: str) -> bool:
    rows = list(LedgerTransaction.objects.filter(kind=kind))
    assert all(r.status != LedgerTransaction.Status.FAILED for r in rows), [(r.kind, r.last_error) for r in rows]
    return bool(rows) and all(r.status == LedgerTransaction.Status.CONFIRMED for r in rows)


@pytest.mark.django_db(transaction=True)
def test_upload_to_claimed_reward(chain_tx, start_worker, attr_base_dir, settings, tmp_path):  # noqa: F811
    chain = chain_tx
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.MEDIA_ROOT, settings.MODELS_DIR = tmp_path / "media", tmp_path / "models"
    settings.LEDGER_CUSTODIAL_SECRET = SECRET
    settings.SERVING_BACKEND, settings.SERVING_TIMEOUT_SECONDS = "celery", 120
    settings.SERVING_FEE_PER_CALL = str(FEE)
    env = {"WEB3_PROVIDER_URI": chain.url, "LEDGER_PRIVATE_KEY": ANVIL_DEV_KEY, "LEDGER_CONFIRMATIONS": "1",
           "LEDGER_CUSTODIAL_SECRET": SECRET, "DJANGO_DEBUG": "1", "MEDIA_ROOT": settings.MEDIA_ROOT,
           "MODELS_DIR": settings.MODELS_DIR, "SERVING_FEE_PER_CALL": str(FEE), "FACTORY_CPU_THREADS": "1",
           "FACTORY_PROGRESS_SECONDS": "0", "OMP_NUM_THREADS": "1"}
    # As `make run`: ingest, exports and training on their worker, the chain's writes on their own (one
    # process keeps the nonces in order).
    workers = [start_worker(queues="cpu,gpu", **env), start_worker(queues="ledger", **env)]
    base = factory_services.base_model_register(path=str(attr_base_dir), name="tiny-bert-e2e")

    # 1. A curator (appointed by an admin) opens a Datanet; three contributors sign up and upload a CSV each.
    curator = user_create(username="curator", password="x", roles=[CURATOR])
    as_curator = client_for(curator)
    resp = as_curator.post("/api/v1/datanets/", {"name": "Finance e2e", "domain": "finance", "task": "classification",
                                                 "labels": LABELS, "min_stake": "10"}, format="json")
    assert resp.status_code == 201, resp.content
    slug, datanet_id = resp.json()["slug"], resp.json()["id"]
    rows = labelled_rows()
    people = []
    for c in range(CONTRIBUTORS):
        api, user_id = sign_up(f"contributor{c}", [CONTRIBUTOR])
        upload = SimpleUploadedFile(f"part{c}.csv", csv_bytes(rows[c::CONTRIBUTORS]), content_type="text/csv")
        resp = api.post(f"/api/v1/datanets/{slug}/contributions/", {"file": upload}, format="multipart")
        assert resp.status_code == 201, resp.content
        people.append((api, user_id, resp.json()["id"]))

    # 2. The cpu worker ingests each file; the ledger worker stakes each on-chain. The curator accepts them.
    def ingested():
        states = set(Contribution.objects.values_list("ingest_state", flat=True))
        assert Contribution.IngestState.FAILED not in states, list(Contribution.objects.values("ingest_errors"))
        return states == {Contribution.IngestState.DONE}

    wait_for(ingested, "the ingests", workers)
    for _, _, cid in people:
        resp = as_curator.post(f"/api/v1/contributions/{cid}/accept/", {"reason": "clean"}, format="json")
        assert resp.status_code == 200, resp.content

    # 3. The curator freezes version 1: its Merkle root over the records' hashes, registered on-chain.
    resp = as_curator.post(f"/api/v1/datanets/{slug}/versions/", format="json")
    assert resp.status_code == 201, resp.content
    version = DatanetVersion.objects.get(pk=resp.json()["id"])
    assert version.record_count == len(rows) and version.contributor_count == CONTRIBUTORS
    wait_for(lambda: DatanetVersion.objects.get(pk=version.pk).export_state == DatanetVersion.ExportState.DONE,
             "the version's export", workers)
    version.refresh_from_db()
    check = version_verify(version=version)  # recomputed from the records' text and from the export
    assert check.ok and check.stored_root == version.merkle_root and check.export_rows == len(rows), check

    # 4. A model developer fine-tunes on it; the canvas trains, indexes and registers the model.
    as_developer, _ = sign_up("developer", [MODEL_DEVELOPER])
    resp = as_developer.post("/api/v1/factory/jobs/", {
        "datanet_version": version.pk, "base_model": base.pk, "task": "classification", "name": "e2e", **TRAIN_PARAMS,
    }, format="json")
    assert resp.status_code == 201, resp.content
    job_id = resp.json()["id"]

    def trained():
        job = FineTuneJob.objects.get(pk=job_id)
        assert job.status not in (FineTuneJob.Status.FAILED, FineTuneJob.Status.CANCELLED), job.error
        return job.status == FineTuneJob.Status.SUCCEEDED

    wait_for(trained, "the fine-tune", workers, timeout=300)
    model = FineTunedModel.objects.get(job_id=job_id)
    assert model.version_root == version.merkle_root
    wait_for(lambda: AttributionIndex.objects.filter(model=model, status=AttributionIndex.Status.READY).exists(),
             "the attribution index", workers)
    publication = AttributionPublication.objects.get(model=model)
    assert publication.root != ZERO_ROOT
    wait_for(lambda: outbox_confirmed("model_register"), "the model's registration on-chain", workers)

    # 5. Someone pays for an answer with an API key; the gpu worker serves it, settled by its attribution.
    as_payer, _ = sign_up("payer", [CONTRIBUTOR])
    key = as_payer.post("/api/v1/api-keys/", {"name": "e2e"}, format="json")
    assert key.status_code == 201, key.content
    resp = client_for(api_key=key.json()["key"]).post(f"/api/v1/models/{model.pk}/infer",
                                                     {"text": "the company profit rose strong in quarter 99"},
                                                     format="json")
    assert resp.status_code == 200, resp.content
    answer = resp.json()
    assert answer["output"]["label"] in LABELS and Decimal(answer["fee"]) == FEE
    assert answer["settlement"]["status"] == "settled" and answer["settlement"]["rule"] == "attribution"
    inference = Inference.objects.get(pk=answer["id"])
    paid = {int(u): Decimal(a) for u, a in inference.fee_split["contributors"].items()}
    assert paid and set(paid) <= {user_id for _, user_id, _ in people}
    assert sum(paid.values()) == FEE * Decimal("0.7")  # governance's default split: 70 % to contributors

    # 6. The reward epoch closes (the beat's task, on the ledger worker) and its root is published.
    accrued = {u: sum(a.amount for a in RewardAccrual.objects.filter(user_id=u)) for u in paid}
    assert accrued == paid
    rewards_epoch_close_task.apply_async(queue="ledger")
    epoch = wait_for(lambda: RewardEpoch.objects.filter(status=RewardEpoch.Status.PUBLISHED).first(),
                     "the epoch's publication", workers)
    dist, token = chain.c["RewardDistributor"], chain.c["OpenToken"]
    assert "0x" + bytes(dist.functions.root().call()).hex() == epoch.root
    developer_part = Decimal(inference.fee_split["developer"]["amount"])
    assert developer_part == FEE * Decimal("0.2")  # and 10 % to the protocol, which is not a reward
    assert int(epoch.total_wei) == int((sum(paid.values()) + developer_part) * E18)

    # 7. The best-paid contributor claims through the API; the ledger worker claims for its custodial wallet.
    api, user_id, _ = next(p for p in people if p[1] == max(paid, key=paid.get))
    (listed,) = [c for c in api.get("/api/v1/ledger/claims/").json()["results"] if c["epoch"] == epoch.pk]
    assert Decimal(listed["amount_wei"]) == paid[user_id] * E18
    resp = api.post(f"/api/v1/ledger/claims/{listed['id']}/claim/")
    assert resp.status_code == 202, resp.content
    claim = wait_for(lambda: RewardClaim.objects.filter(pk=listed["id"], status=RewardClaim.Status.CLAIMED).first(),
                     "the claim", workers)

    # What the chain holds is what the database says.
    account = address_for_user(claim.user)
    assert token.functions.balanceOf(account).call() == int(claim.amount_wei) == int(paid[user_id] * E18) > 0
    assert dist.functions.claimed(epoch.generation, account).call() == int(claim.cumulative_wei)
    registry, models = chain.c["DatanetRegistry"], chain.c["ModelRegistry"]
    assert "0x" + bytes(registry.functions.versions(datanet_id, 1).call()[0]).hex() == version.merkle_root
    on_chain = models.functions.getModel(bytes.fromhex(model.adapter_sha256)).call()
    assert on_chain[0] == model.pk and "0x" + bytes(on_chain[3]).hex() == version.merkle_root
    assert "0x" + bytes(on_chain[4]).hex() == publication.root != ZERO_ROOT
    for _, _, cid in people:  # each stake accepted on-chain (STAKE_ACCEPTED)
        c = Contribution.objects.get(pk=cid)
        assert registry.functions.stakes(datanet_id, bytes.fromhex(c.file_sha256)).call()[3] == 2
    assert not LedgerTransaction.objects.filter(status=LedgerTransaction.Status.FAILED).exists()
