"""REST API: Datanets, uploads and their status, records, versions, downloads and Merkle proofs."""
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from core.merkle import merkle_verify
from core.roles import CURATOR, MODEL_DEVELOPER
from datanets import services
from datanets.models import Contribution, Datanet
from datanets.tests.factories import DatanetFactory, contributor, curator_of
from datanets.tests.helpers import ingest, upload

pytestmark = pytest.mark.django_db
CSV = b"label,text\npositive,Profit rose.\nnegative,Loss widened.\nneutral,Monday meeting.\n"


@pytest.fixture
def api():
    return APIClient()


def _accepted_datanet():
    datanet = DatanetFactory(name="Finance", domain=Datanet.Domain.FINANCE)
    cur = curator_of(datanet, "cura")
    alice = contributor("alice")
    c = ingest(upload(datanet, alice, "a.csv", CSV))
    services.contribution_accept(contribution=c, curator=cur)
    return datanet, cur, alice, c


def test_anonymous_callers_are_refused(api):
    datanet = DatanetFactory()
    for url in ("/api/v1/datanets/", f"/api/v1/datanets/{datanet.slug}/", f"/api/v1/datanets/{datanet.slug}/records/",
                "/api/v1/contributions/", f"/api/v1/datanets/{datanet.slug}/versions/"):
        assert api.get(url).status_code in (401, 403), url


def test_list_search_domain_and_detail(api):
    datanet, cur, alice, _ = _accepted_datanet()
    DatanetFactory(name="Game chat", domain=Datanet.Domain.GAMING)
    api.force_authenticate(UserFactory(roles=[MODEL_DEVELOPER]))
    body = api.get("/api/v1/datanets/").json()
    assert body["count"] == 2
    assert [d["name"] for d in api.get("/api/v1/datanets/", {"domain": "gaming"}).json()["results"]] == ["Game chat"]
    hit = api.get("/api/v1/datanets/", {"search": "financ"}).json()["results"]
    assert [d["slug"] for d in hit] == [datanet.slug] and hit[0]["accepted_records"] == 3
    detail = api.get(f"/api/v1/datanets/{datanet.slug}/").json()
    assert detail["counts"]["records"]["accepted"] == 3 and detail["curators"] == ["cura"]
    assert {row["label"] for row in detail["label_distribution"]} == {"positive", "negative", "neutral"}
    assert detail["contributors"] == [{"username": "alice", "records": 3}]
    assert api.get("/api/v1/datanets/nope/").status_code == 404


def test_create_needs_the_curator_role(api):
    api.force_authenticate(contributor())
    payload = {"name": "Clinic notes", "domain": "healthcare", "labels": ["urgent", "routine"], "min_stake": "3"}
    assert api.post("/api/v1/datanets/", payload, format="json").status_code == 403
    boss = UserFactory(roles=[CURATOR])
    api.force_authenticate(boss)
    resp = api.post("/api/v1/datanets/", {**payload, "labels": ["one"]}, format="json")
    assert resp.status_code == 400 and "at least two labels" in resp.json()["error"]["message"]
    resp = api.post("/api/v1/datanets/", payload, format="json")
    assert resp.status_code == 201, resp.json()
    assert resp.json()["slug"] == "clinic-notes" and resp.json()["curators"] == [boss.username]
    assert Datanet.objects.get(slug="clinic-notes").min_stake == 3


def test_upload_status_and_duplicate_returns_the_first(api):
    datanet = DatanetFactory()
    alice = contributor("alice")
    api.force_authenticate(alice)
    url = f"/api/v1/datanets/{datanet.slug}/contributions/"
    resp = api.post(url, {"file": SimpleUploadedFile("a.csv", CSV)}, format="multipart")
    assert resp.status_code == 201, resp.json()
    first = resp.json()
    assert first["ingest_state"] == "queued" and first["text_column"] == "text" and first["label_column"] == "label"
    services.contribution_ingest(contribution_id=first["id"])
    status = api.get(first["url"]).json()
    assert status["ingest_state"] == "done" and status["record_count"] == 3 and status["status"] == "pending"
    again = api.post(url, {"file": SimpleUploadedFile("renamed.csv", CSV)}, format="multipart")
    assert again.status_code == 200 and again.json()["id"] == first["id"] and again.json()["file_name"] == "a.csv"
    assert Contribution.objects.count() == 1
    assert [c["id"] for c in api.get("/api/v1/contributions/").json()["results"]] == [first["id"]]


def test_upload_refusals(api, settings):
    datanet = DatanetFactory()
    url = f"/api/v1/datanets/{datanet.slug}/contributions/"
    api.force_authenticate(UserFactory(roles=[MODEL_DEVELOPER]))
    assert api.post(url, {"file": SimpleUploadedFile("a.csv", CSV)}, format="multipart").status_code == 403
    api.force_authenticate(contributor())
    settings.DATANET_UPLOAD_MAX_BYTES = 20
    resp = api.post(url, {"file": SimpleUploadedFile("a.csv", CSV)}, format="multipart")
    assert resp.status_code == 413 and resp.json()["error"]["extra"] == {"size": len(CSV), "limit": 20}
    # A request far over the limit is refused from its Content-Length, before its body is read.
    settings.DATANET_UPLOAD_MAX_BYTES = 1000
    big = b"label,text\n" + b"neutral,x\n" * 20_000
    resp = api.post(url, {"file": SimpleUploadedFile("big.csv", big)}, format="multipart")
    assert resp.status_code == 413 and resp.json()["error"]["extra"]["limit"] == 1000 and resp.json()["error"]["extra"]["size"] > len(big)
    settings.DATANET_UPLOAD_MAX_BYTES = 10_000
    resp = api.post(url, {"file": SimpleUploadedFile("a.exe", b"MZ\x90\x00")}, format="multipart")
    assert resp.status_code == 400 and "Unsupported format" in resp.json()["error"]["message"]
    resp = api.post(url, {"file": SimpleUploadedFile("a.csv", CSV), "text_column": "nope"}, format="multipart")
    assert resp.status_code == 400 and "Column 'nope' is not in the file" in resp.json()["error"]["message"]
    assert api.post(url, {}, format="multipart").status_code == 400
    assert not Contribution.objects.exists()


def test_mapping_then_start_and_failed_then_retry(api):
    datanet = DatanetFactory()
    alice = contributor("alice")
    api.force_authenticate(alice)
    url = f"/api/v1/datanets/{datanet.slug}/contributions/"
    c = api.post(url, {"file": SimpleUploadedFile("x.csv", b"a,b\nGood.,positive\nOdd.,bullish\n")}, format="multipart").json()
    assert c["ingest_state"] == "mapping" and c["columns"] == ["a", "b"]
    start = f"/api/v1/contributions/{c['id']}/start/"
    assert api.post(start, {"text_column": "a"}, format="json").status_code == 400  # the label column is needed
    resp = api.post(start, {"text_column": "a", "label_column": "b"}, format="json")
    assert resp.status_code == 202 and resp.json()["ingest_state"] == "queued"
    failed = services.contribution_ingest(contribution_id=c["id"])
    body = api.get(f"/api/v1/contributions/{c['id']}/").json()
    assert body["ingest_state"] == "failed" and {"row": 2, "error": body["ingest_errors"][1]["error"]} in body["ingest_errors"]
    assert failed.rows_bad == 1
    api.force_authenticate(contributor("mallory"))
    assert api.get(f"/api/v1/contributions/{c['id']}/").status_code == 404
    assert api.post(f"/api/v1/contributions/{c['id']}/retry/").status_code == 404
    api.force_authenticate(alice)
    resp = api.post(f"/api/v1/contributions/{c['id']}/retry/")
    assert resp.status_code == 202 and resp.json()["drop_bad_rows"] is True
    assert services.contribution_ingest(contribution_id=c["id"]).record_count == 1
    assert api.post(f"/api/v1/contributions/{c['id']}/retry/").status_code == 400


def test_contribution_and_record_visibility(api):
    datanet, cur, alice, accepted = _accepted_datanet()
    bob = contributor("bob")
    pending = ingest(upload(datanet, bob, "b.csv", b"label,text\npositive,Sales doubled.\n"))
    api.force_authenticate(alice)
    mine = api.get(f"/api/v1/datanets/{datanet.slug}/contributions/").json()["results"]
    assert [c["id"] for c in mine] == [accepted.id]
    texts = [r["text"] for r in api.get(f"/api/v1/datanets/{datanet.slug}/records/").json()["results"]]
    assert "Sales doubled." not in texts and len(texts) == 3  # bob's pending records are not alice's to read
    api.force_authenticate(cur)
    every = api.get(f"/api/v1/datanets/{datanet.slug}/contributions/").json()["results"]
    assert {c["id"] for c in every} == {accepted.id, pending.id}
    assert api.get(f"/api/v1/datanets/{datanet.slug}/contributions/", {"status": "pending"}).json()["count"] == 1
    records = api.get(f"/api/v1/datanets/{datanet.slug}/records/", {"contribution": pending.id}).json()
    assert [r["text"] for r in records["results"]] == ["Sales doubled."]
    labels = api.get(f"/api/v1/datanets/{datanet.slug}/records/", {"label": "negative"}).json()["results"]
    assert [r["text"] for r in labels] == ["Loss widened."] and labels[0]["contributor"] == "alice"
    assert api.get(f"/api/v1/datanets/{datanet.slug}/records/", {"contribution": "x"}).status_code == 400


def test_versions_create_list_download_and_proof(api):
    datanet, cur, alice, _ = _accepted_datanet()
    api.force_authenticate(alice)
    resp = api.post(f"/api/v1/datanets/{datanet.slug}/versions/")
    assert resp.status_code == 403 and "not a curator" in resp.json()["error"]["message"]
    api.force_authenticate(cur)
    resp = api.post(f"/api/v1/datanets/{datanet.slug}/versions/")
    assert resp.status_code == 201
    v = resp.json()
    assert v["number"] == 1 and v["record_count"] == 3 and v["merkle_root"].startswith("0x")
    # The exports are written by a cpu task after commit: none yet, then the links.
    assert v["export_state"] == "queued" and v["downloads"] == {}
    services.datanet_version_export(version_id=v["id"])
    v = api.get(f"/api/v1/datanets/{datanet.slug}/versions/1/").json()
    assert v["export_state"] == "done" and v["export_progress"] == 1.0 and set(v["downloads"]) == {"parquet", "jsonl"}
    api.force_authenticate(alice)
    assert api.get(f"/api/v1/datanets/{datanet.slug}/versions/").json()["results"][0]["merkle_root"] == v["merkle_root"]
    dl = api.get(v["downloads"]["jsonl"])
    assert dl.status_code == 200 and b"Loss widened." in b"".join(dl.streaming_content)
    assert api.get(v["downloads"]["parquet"]).status_code == 200
    assert api.get(f"/api/v1/datanets/{datanet.slug}/versions/1/download/csv/").status_code == 404
    record = datanet.records.order_by("id").first()
    proof = api.get(f"/api/v1/datanets/{datanet.slug}/versions/1/proof/{record.id}").json()
    assert proof["verified"] is True and proof["root"] == v["merkle_root"] and proof["leaf"] == "0x" + record.sha256
    # The client can check it alone, from the record and the published root.
    assert merkle_verify(bytes.fromhex(record.sha256), [bytes.fromhex(p[2:]) for p in proof["proof"]],
                         bytes.fromhex(v["merkle_root"][2:]))
    outsider = ingest(upload(datanet, contributor("bob"), "b.csv", b"label,text\npositive,Sales doubled.\n"))
    other = outsider.records.get()
    assert api.get(f"/api/v1/datanets/{datanet.slug}/versions/1/proof/{other.id}/").status_code == 404
    assert api.get(f"/api/v1/datanets/{datanet.slug}/versions/9/").status_code == 404


def test_schema_documents_the_datanet_endpoints(api):
    api.force_authenticate(UserFactory())
    schema = api.get("/api/v1/schema/", {"format": "json"}).json()
    for path in ("/api/v1/datanets/", "/api/v1/datanets/{slug}/contributions/", "/api/v1/datanets/{slug}/records/",
                 "/api/v1/datanets/{slug}/versions/{number}/proof/{record_id}/", "/api/v1/contributions/{contribution_id}/"):
        assert path in schema["paths"], path
    upload_op = schema["paths"]["/api/v1/datanets/{slug}/contributions/"]["post"]
    assert "multipart/form-data" in upload_op["requestBody"]["content"]


# --- curator decisions, withdrawal, the error shape -----------------------------------------------------

def _pending():
    datanet = DatanetFactory(name="Decisions", domain=Datanet.Domain.FINANCE)
    cur = curator_of(datanet, "decider")
    alice = contributor("alice")
    a = ingest(upload(datanet, alice, "a.csv", CSV))
    b = ingest(upload(datanet, alice, "b.csv", CSV.replace(b"Profit", b"Revenue")))
    return datanet, cur, alice, a, b


def test_curator_accepts_and_rejects_over_the_api(api):
    datanet, cur, alice, a, b = _pending()
    api.force_authenticate(alice)
    resp = api.post(f"/api/v1/contributions/{a.id}/accept/", {}, format="json")
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "permission_denied"
    api.force_authenticate(cur)
    resp = api.post(f"/api/v1/contributions/{b.id}/reject/", {"reason": ""}, format="json")
    assert resp.status_code == 400 and "reason" in resp.json()["error"]["fields"]
    resp = api.post(f"/api/v1/contributions/{a.id}/accept/", {"reason": "clean"}, format="json")
    assert resp.status_code == 200 and resp.json()["status"] == "accepted" and resp.json()["curator"] == "decider"
    resp = api.post(f"/api/v1/contributions/{a.id}/reject/", {"reason": "late"}, format="json")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "conflict"
    resp = api.post(f"/api/v1/contributions/{b.id}/reject/", {"reason": "copied"}, format="json")
    assert resp.status_code == 200 and resp.json()["reason"] == "copied"


def test_bulk_decision_decides_each_and_lists_the_rest(api):
    datanet, cur, alice, a, b = _pending()
    services.contribution_accept(contribution=a, curator=cur)
    url = f"/api/v1/datanets/{datanet.slug}/contributions/decide/"
    api.force_authenticate(alice)
    assert api.post(url, {"ids": [b.id], "decision": "accepted"}, format="json").status_code == 403
    api.force_authenticate(cur)
    resp = api.post(url, {"ids": [a.id, b.id], "decision": "rejected"}, format="json")
    assert resp.status_code == 400 and resp.json()["error"]["fields"] == {"reason": ["A rejection needs a reason."]}
    assert api.post(url, {"ids": [a.id, 10**9], "decision": "accepted"}, format="json").status_code == 404
    resp = api.post(url, {"ids": [a.id, b.id], "decision": "rejected", "reason": "off-topic"}, format="json")
    body = resp.json()
    assert resp.status_code == 200 and [c["id"] for c in body["decided"]] == [b.id]
    assert len(body["errors"]) == 1 and body["errors"][0].startswith(f"#{a.id}") and "already accepted" in body["errors"][0]


def test_owner_withdraws_what_nothing_on_chain_holds(api, django_capture_on_commit_callbacks):
    datanet, cur, alice, a, b = _pending()
    failed = ingest(upload(datanet, alice, "bad.csv", b"label,text\nbullish,x\n"))
    api.force_authenticate(cur)
    resp = api.delete(f"/api/v1/contributions/{failed.id}/")
    assert resp.status_code == 403 and "Only the contributor" in resp.json()["error"]["message"]
    api.force_authenticate(alice)
    resp = api.delete(f"/api/v1/contributions/{a.id}/")  # ingested: its stake is in the outbox
    assert resp.status_code == 409 and "stake on-chain" in resp.json()["error"]["message"]
    stored = failed.file.name
    with django_capture_on_commit_callbacks(execute=True):  # the file goes once the deletion commits
        assert api.delete(f"/api/v1/contributions/{failed.id}/").status_code == 204
    assert api.get(f"/api/v1/contributions/{failed.id}/").status_code == 404
    assert not Contribution.objects.filter(pk=failed.id).exists() and not failed.file.storage.exists(stored)
    api.force_authenticate(contributor("mallory"))
    assert api.delete(f"/api/v1/contributions/{a.id}/").status_code == 404  # not even its existence


def test_every_error_has_one_shape(api):
    assert api.get("/api/v1/datanets/").json() == {"error": {
        "code": "not_authenticated", "message": "Authentication credentials were not provided.", "fields": {}}}
    api.force_authenticate(contributor())
    resp = api.get("/api/v1/datanets/", {"domain": "astrology"})
    assert resp.status_code == 400 and resp.json()["error"]["fields"] == {"domain": [
        "Choose from finance, healthcare, depin, gaming, other."]}
    resp = api.get("/api/v1/datanets/", {"page": "x"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid"
    assert api.get("/api/v1/datanets/", {"page": "99"}).json()["error"]["code"] == "not_found"
    assert api.get("/api/v1/no-such-thing/").json()["error"]["code"] == "not_found"
    resp = api.put("/api/v1/datanets/", {}, format="json")
    assert resp.status_code == 405 and resp.json()["error"]["code"] == "method_not_allowed"
    resp = api.post("/api/v1/datanets/", {"name": "x"}, format="json")  # the role check comes first
    assert resp.status_code == 403 and set(resp.json()["error"]) == {"code", "message", "fields"}
