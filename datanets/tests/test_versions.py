"""Versions: Merkle root, exports that `datasets` loads, verify_version, inclusion proofs."""
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from core.errors import ApplicationError
from core.merkle import merkle_root, merkle_verify
from datanets import services
from datanets.models import Record
from datanets.tests.factories import DatanetFactory, contributor, curator_of
from datanets.tests.helpers import ingest, upload
from ledger.models import LedgerTransaction

pytestmark = pytest.mark.django_db
CSV = b"label,text\npositive,Profit rose.\nnegative,Sales fell.\nneutral,Monday meeting.\n"


@pytest.fixture
def accepted():
    datanet = DatanetFactory()
    cur = curator_of(datanet, "carol")
    alice, bob = contributor("alice"), contributor("bob")
    c1 = ingest(upload(datanet, alice, "a.csv", CSV))
    c2 = ingest(upload(datanet, bob, "b.csv", b"label,text\npositive,Bob's line.\nnegative,Bob's other line.\n"))
    c3 = ingest(upload(datanet, bob, "c.csv", b"label,text\npositive,Rejected line.\n"))
    services.contribution_accept(contribution=c1, curator=cur)
    services.contribution_accept(contribution=c2, curator=cur)
    services.contribution_reject(contribution=c3, curator=cur, reason="no")
    return datanet, cur


def test_version_snapshot_root_exports_and_outbox(accepted):
    import datasets

    datanet, cur = accepted
    v = services.datanet_version_create(datanet=datanet, user=cur)
    assert v.number == 1 and v.record_count == 5 and v.contributor_count == 2
    leaves = [bytes.fromhex(h) for h in Record.objects.filter(contribution__status="accepted").values_list("sha256", flat=True)]
    assert v.merkle_root == "0x" + merkle_root(leaves).hex()
    assert v.label_counts == {"positive": 2, "negative": 2, "neutral": 1}
    # The exports are not written in the request: a `cpu` task writes them after commit.
    assert (v.export_state, v.export_path) == ("queued", "")
    v = services.datanet_version_export(version_id=v.id)
    assert (v.export_state, v.export_progress) == ("done", 1.0)
    out = Path(v.export_path)
    ds = datasets.load_from_disk(str(out / "arrow"))
    assert set(ds.column_names) == {"text", "label", "record_id", "contributor", "evaluation"} and len(ds) == 5
    assert "Rejected line." not in ds["text"]
    lines = [json.loads(x) for x in (out / "data.jsonl").read_text().splitlines()]
    assert {x["text"] for x in lines} == set(ds["text"])
    import pyarrow.parquet as pq

    assert pq.read_table(out / "data.parquet").num_rows == 5
    row = LedgerTransaction.objects.get(idempotency_key=f"version_register:{v.id}")
    assert row.payload == {"version_id": v.id, "datanet_id": datanet.id, "number": 1, "merkle_root": v.merkle_root,
                           "record_count": 5}
    # A later version gets the next number; the first is unchanged.
    v2 = services.datanet_version_create(datanet=datanet, user=cur)
    assert v2.number == 2 and v2.merkle_root == v.merkle_root and Path(v.export_path).exists()


def test_version_needs_accepted_records_and_a_curator():
    datanet = DatanetFactory()
    cur = curator_of(datanet)
    with pytest.raises(ApplicationError, match="no accepted records"):
        services.datanet_version_create(datanet=datanet, user=cur)
    with pytest.raises(ApplicationError, match="not a curator"):
        services.datanet_version_create(datanet=datanet, user=contributor())


def test_verify_version_command_passes_and_catches_tampering(accepted, capsys):
    datanet, cur = accepted
    v = services.datanet_version_create(datanet=datanet, user=cur)
    with pytest.raises(CommandError, match="MISMATCH"):  # no export yet: it must give the root too
        call_command("verify_version", v.id)
    services.datanet_version_export(version_id=v.id)
    call_command("verify_version", v.id)
    assert "OK" in capsys.readouterr().out
    Record.objects.filter(pk=v.records.first().pk).update(text="tampered")
    with pytest.raises(CommandError, match="MISMATCH"):
        call_command("verify_version", v.id)
    with pytest.raises(CommandError, match="No Datanet version"):
        call_command("verify_version", 999999)


def test_inclusion_proof(accepted):
    datanet, cur = accepted
    v = services.datanet_version_create(datanet=datanet, user=cur)
    rec = v.records.order_by("id").last()
    p = services.version_record_proof(version=v, record_id=rec.id)
    assert p.verified and p.leaf == "0x" + rec.sha256
    assert merkle_verify(bytes.fromhex(p.leaf[2:]), [bytes.fromhex(x[2:]) for x in p.proof], bytes.fromhex(v.merkle_root[2:]))
    rejected = Record.objects.get(text="Rejected line.")
    with pytest.raises(ApplicationError, match="not in"):
        services.version_record_proof(version=v, record_id=rejected.id)


def _wait(predicate, timeout=120.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


def test_version_export_runs_on_a_real_cpu_worker(accepted, start_worker):
    """The request only commits the version; a real worker on `cpu` writes the exports after commit."""
    datanet, cur = accepted
    v = services.datanet_version_create(datanet=datanet, user=cur)  # on_commit sends the export task
    assert v.export_state == "queued"
    worker = start_worker(queues="cpu")
    assert _wait(lambda: type(v).objects.get(pk=v.pk).export_state == "done"), worker.log()
    v.refresh_from_db()
    assert v.export_progress == 1.0 and (Path(v.export_path) / "data.parquet").is_file()
    assert services.version_verify(version=v).ok


def test_version_export_failure_is_written_on_the_row(accepted):
    """The task base's hook: a crash fails the export with the reason; a done export is never overwritten."""
    from datanets.tasks import datanet_version_export_task

    datanet, cur = accepted
    v = services.datanet_version_create(datanet=datanet, user=cur)
    datanet_version_export_task.on_failure(OSError("disk full"), "id", [v.id], {}, None)
    v.refresh_from_db()
    assert v.export_state == "failed" and v.export_error == "Internal error: OSError: disk full"
    v = services.datanet_version_export(version_id=v.id)  # a retry writes it
    datanet_version_export_task.on_failure(OSError("late"), "id", [v.id], {}, None)
    v.refresh_from_db()
    assert v.export_state == "done" and v.export_error == ""
