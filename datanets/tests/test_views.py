"""HTML pages: list, detail, upload with mapping, progress fragment, my contributions, downloads."""
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from accounts.tests.factories import UserFactory
from core.roles import CURATOR, MODEL_DEVELOPER
from datanets import services
from datanets.models import Contribution, CurationDecision, Datanet
from datanets.tests.factories import DatanetFactory, contributor, curator_of
from datanets.tests.helpers import ingest, upload

pytestmark = pytest.mark.django_db
CSV = b"label,text\npositive,Profit rose.\nnegative,<script>alert(1)</script>\nneutral,Monday meeting.\n"


def test_list_search_and_domain_filter(client):
    DatanetFactory(name="Finance news", domain=Datanet.Domain.FINANCE)
    DatanetFactory(name="Game chat", domain=Datanet.Domain.GAMING)
    body = client.get(reverse("datanets:list")).content.decode()
    assert "<h1>Datanets" in body and "Finance news" in body and "Game chat" in body
    body = client.get(reverse("datanets:list"), {"domain": "gaming"}).content.decode()
    assert "Game chat" in body and "Finance news" not in body
    resp = client.get(reverse("datanets:list"), {"q": "financ"}, HTTP_HX_REQUEST="true")
    assert "Finance news" in resp.content.decode() and "<h1>" not in resp.content.decode()


def test_detail_shows_counts_chart_contributors_versions_and_escaped_records(client):
    datanet = DatanetFactory(name="Finance")
    cur = curator_of(datanet)
    alice = contributor("alice")
    c = ingest(upload(datanet, alice, "a.csv", CSV))
    services.contribution_accept(contribution=c, curator=cur)
    v = services.datanet_version_create(datanet=datanet, user=cur)
    services.datanet_version_export(version_id=v.id)
    body = client.get(reverse("datanets:detail", args=[datanet.slug])).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and "<script>alert(1)" not in body
    assert "dn-bar-fill" in body and "alice" in body and v.merkle_root in body
    part = client.get(reverse("datanets:detail", args=[datanet.slug]), {"label": "negative"}, HTTP_HX_REQUEST="true")
    assert "alert(1)" in part.content.decode() and "Profit rose." not in part.content.decode()
    assert "<h1>" not in part.content.decode()
    client.force_login(alice)
    resp = client.get(reverse("datanets:version-download", args=[v.id, "jsonl"]))
    assert resp.status_code == 200 and b"Profit rose." in b"".join(resp.streaming_content)
    assert client.get(reverse("datanets:version-download", args=[v.id, "exe"])).status_code == 404


def test_upload_mapping_and_status_pages(client):
    datanet = DatanetFactory()
    alice = contributor("alice")
    client.force_login(alice)
    url = reverse("datanets:upload", args=[datanet.slug])
    resp = client.post(url, {"file": SimpleUploadedFile("x.csv", b"a,b\nProfit rose.,positive\n"), "text_mode": "line"})
    c = Contribution.objects.get()
    assert resp.status_code == 302 and resp.url == reverse("datanets:contribution", args=[c.id])
    page = client.get(resp.url).content.decode()
    assert "Map the columns" in page and "Profit rose." in page
    resp = client.post(resp.url, {"text_column": "a", "label_column": "b"})
    assert resp.status_code == 302
    c.refresh_from_db()
    assert c.ingest_state == "queued" and c.options["label_column"] == "b"
    assert 'hx-trigger="every 2s"' in client.get(reverse("datanets:mine")).content.decode()
    status = client.get(reverse("datanets:contribution-status", args=[c.id]))
    assert 'hx-trigger="every 2s"' in status.content.decode()
    services.contribution_ingest(contribution_id=c.id)
    status = client.get(reverse("datanets:contribution-status", args=[c.id]))
    assert status["HX-Refresh"] == "true"
    assert "1 records stored" in client.get(reverse("datanets:contribution", args=[c.id])).content.decode()
    mine = client.get(reverse("datanets:mine")).content.decode()
    assert "x.csv" in mine and 'hx-trigger="every 2s"' not in mine  # nothing runs: no polling


def test_upload_errors_are_shown_on_the_form(client):
    datanet = DatanetFactory()
    client.force_login(contributor())
    resp = client.post(reverse("datanets:upload", args=[datanet.slug]),
                       {"file": SimpleUploadedFile("x.pdf", b"%PDF-1.4"), "text_mode": "line"})
    assert resp.status_code == 200 and "Unsupported format" in resp.content.decode()
    assert not Contribution.objects.exists()


def test_failed_ingest_page_lists_row_errors(client):
    datanet = DatanetFactory()
    alice = contributor()
    c = ingest(upload(datanet, alice, "bad.csv", b"label,text\nbullish,x\n"))
    client.force_login(alice)
    body = client.get(reverse("datanets:contribution", args=[c.id])).content.decode()
    assert "nothing was stored" in body and "row 1: unknown label" in body


def test_pages_need_the_right_user(client):
    datanet = DatanetFactory()
    c = ingest(upload(datanet, contributor("alice"), "a.csv", CSV))
    client.force_login(contributor("bob"))
    assert client.get(reverse("datanets:contribution", args=[c.id])).status_code == 403
    client.force_login(UserFactory())
    assert client.get(reverse("datanets:upload", args=[datanet.slug])).status_code == 403
    assert client.get(reverse("datanets:contribution-status", args=[c.id])).status_code == 403
    assert client.post(reverse("datanets:contribution-retry", args=[c.id])).status_code == 403
    client.logout()
    for url in (reverse("datanets:mine"), reverse("datanets:create"), reverse("datanets:contribution", args=[c.id])):
        resp = client.get(url)
        assert resp.status_code == 302 and "/accounts/login" in resp.url


def test_create_datanet_needs_the_curator_role(client):
    client.force_login(UserFactory(roles=[MODEL_DEVELOPER]))
    assert client.get(reverse("datanets:create")).status_code == 403
    boss = UserFactory(username="boss", roles=[CURATOR])
    client.force_login(boss)
    assert "New Datanet" in client.get(reverse("datanets:list")).content.decode()
    form = {"name": "Medical notes", "domain": "healthcare", "task": "classification", "labels": "urgent\nroutine\n",
            "min_stake": "5", "slash_fraction": "0.25", "max_text_length": "2000"}
    resp = client.post(reverse("datanets:create"), {**form, "labels": "only-one"})
    assert resp.status_code == 200 and "at least two labels" in resp.content.decode()
    resp = client.post(reverse("datanets:create"), form)
    datanet = Datanet.objects.get(name="Medical notes")
    assert resp.status_code == 302 and resp.url == reverse("datanets:detail", args=[datanet.slug])
    assert datanet.labels == ["urgent", "routine"] and datanet.owner == boss and str(datanet.slash_fraction) == "0.2500"
    assert services.user_can_curate(user=boss, datanet=datanet)
    # A name whose slug an HTML page uses gets another slug.
    client.post(reverse("datanets:create"), {**form, "name": "New"})
    assert Datanet.objects.get(name="New").slug == "new-2"


def test_failed_ingest_offers_drop_bad_rows_and_retry_stores_the_rest(client):
    datanet = DatanetFactory()
    alice = contributor("alice")
    c = ingest(upload(datanet, alice, "mixed.csv", b"label,text\npositive,Good.\nbullish,Odd.\nneutral,Flat.\n"))
    assert c.ingest_state == "failed" and c.rows_bad == 1
    client.force_login(alice)
    body = client.get(reverse("datanets:contribution", args=[c.id])).content.decode()
    assert "row 2: unknown label" in body and "Drop the 1 bad row and store the valid ones" in body
    resp = client.post(reverse("datanets:contribution-retry", args=[c.id]))
    assert resp.status_code == 302
    c.refresh_from_db()
    assert c.ingest_state == "queued" and c.options["drop_bad_rows"] is True
    c = services.contribution_ingest(contribution_id=c.id)
    assert c.ingest_state == "done" and c.record_count == 2 and c.rows_bad == 1
    body = client.get(reverse("datanets:contribution", args=[c.id])).content.decode()
    assert "Bad rows dropped" in body and "Drop the" not in body
    # Only a failed ingest can be retried.
    client.post(reverse("datanets:contribution-retry", args=[c.id]))
    assert "only a failed ingest can be retried" in client.get(reverse("datanets:contribution", args=[c.id])).content.decode()


def test_curator_creates_a_version_from_the_page_others_cannot(client):
    datanet = DatanetFactory()
    cur = curator_of(datanet, "cura")
    alice = contributor("alice")
    services.contribution_accept(contribution=ingest(upload(datanet, alice, "a.csv", CSV)), curator=cur)
    client.force_login(alice)
    assert "Create version" not in client.get(reverse("datanets:detail", args=[datanet.slug])).content.decode()
    client.post(reverse("datanets:version-create", args=[datanet.slug]))
    assert not datanet.versions.exists()
    client.force_login(cur)
    assert "Create version" in client.get(reverse("datanets:detail", args=[datanet.slug])).content.decode()
    resp = client.post(reverse("datanets:version-create", args=[datanet.slug]), follow=True)
    v = datanet.versions.get()
    assert f"Version 1 created: {v.record_count} records" in resp.content.decode()
    # The export waits for the cpu worker: the page says so (and its place in the queue), then polls.
    status_url = reverse("datanets:version-export-status", args=[v.id])
    assert "Export queued" in resp.content.decode() and status_url in resp.content.decode()
    assert reverse("datanets:version-download", args=[v.id, "parquet"]) not in resp.content.decode()
    services.datanet_version_export(version_id=v.id)
    cell = client.get(status_url).content.decode()
    assert reverse("datanets:version-download", args=[v.id, "parquet"]) in cell and "hx-get" not in cell


def test_generation_datanet_upload_in_paragraphs_and_page_without_label_chart(client):
    datanet = DatanetFactory(task=Datanet.Task.GENERATION, labels=[])
    cur = curator_of(datanet)
    alice = contributor("alice")
    client.force_login(alice)
    upload_page = client.get(reverse("datanets:upload", args=[datanet.slug])).content.decode()
    assert "one record per paragraph" in upload_page
    assert "one record per paragraph" not in client.get(reverse("datanets:upload", args=[DatanetFactory().slug])).content.decode()
    resp = client.post(reverse("datanets:upload", args=[datanet.slug]),
                       {"file": SimpleUploadedFile("play.txt", b"First Citizen:\nBefore we proceed.\n\nAll:\nSpeak, speak.\n"),
                        "text_mode": "paragraph"})
    c = Contribution.objects.get()
    assert client.post(resp.url, {"text_mode": "paragraph"}).status_code == 302
    c = services.contribution_ingest(contribution_id=c.id)
    assert c.record_count == 2
    services.contribution_accept(contribution=c, curator=cur)
    body = client.get(reverse("datanets:detail", args=[datanet.slug])).content.decode()
    assert "Label distribution" not in body and "Speak, speak." in body


# --- curator console, withdrawal -------------------------------------------------------------------------

def _queue():
    datanet = DatanetFactory(name="Console news", labels=["positive", "negative", "neutral"])
    cur = curator_of(datanet, "carla")
    alice, bob = contributor("alice"), contributor("bob")
    first = ingest(upload(datanet, alice, "first.csv", CSV))
    services.contribution_accept(contribution=first, curator=cur)
    skewed = b"label,text\npositive,Profit rose sharply this quarter.\npositive,Profit rose sharply this quarter again.\n" \
             b"positive,Margins widened.\npositive,Orders doubled.\npositive,Guidance raised.\n"
    copy = ingest(upload(datanet, bob, "copy.csv", skewed))
    failed = ingest(upload(datanet, bob, "bad.csv", b"label,text\nbullish,x\n"))
    return datanet, cur, alice, bob, copy, failed


def test_review_queue_shows_previews_hints_and_the_audit_trail(client):
    datanet, cur, alice, bob, copy, failed = _queue()
    client.force_login(cur)
    resp = client.get(reverse("datanets:review", args=[datanet.slug]))
    assert resp.status_code == 200
    body = resp.content.decode()
    assert f'id="contribution-{copy.id}"' in body and "Profit rose sharply this quarter." in body  # record preview
    assert "one label dominates this upload" in body  # 5 of 5 records are 'positive'
    assert "near-duplicate(s)" in body  # the second row is a near-copy of the first
    assert "bad.csv" in body and "Failed" in body  # listed as not reviewable yet
    assert "first.csv" in body and "Accepted" in body  # the audit trail


def test_bulk_reject_needs_a_reason_and_decides_each(client):
    datanet, cur, alice, bob, copy, failed = _queue()
    other = ingest(upload(datanet, alice, "other.csv", b"label,text\nneutral,Board met on Tuesday.\n"))
    client.force_login(cur)
    url = reverse("datanets:review-decide", args=[datanet.slug])
    resp = client.post(url, {"ids": [copy.id, other.id], "decision": "rejected", "reason": " "}, follow=True)
    assert "needs a reason" in resp.content.decode()
    assert Contribution.objects.filter(pk__in=[copy.id, other.id], status="pending").count() == 2
    resp = client.post(url, {"ids": [copy.id, other.id, failed.id], "decision": "rejected", "reason": "copied text"},
                       follow=True)
    body = resp.content.decode()
    assert "2 contribution(s) rejected" in body and "not ingested yet" in body  # the failed one is refused
    assert set(Contribution.objects.filter(reason="copied text").values_list("pk", flat=True)) == {copy.id, other.id}
    assert CurationDecision.objects.filter(contribution__datanet=datanet, reason="copied text").count() == 2


def test_console_is_for_the_datanets_curators_only(client):
    datanet, cur, alice, bob, copy, failed = _queue()
    client.force_login(alice)
    assert client.get(reverse("datanets:review", args=[datanet.slug])).status_code == 403
    resp = client.post(reverse("datanets:review-decide", args=[datanet.slug]), {"ids": [copy.id], "decision": "accepted"})
    assert resp.status_code == 403 and "not a curator" in resp.content.decode()
    assert Contribution.objects.get(pk=copy.id).status == "pending"
    assert client.get(reverse("datanets:review-home")).status_code == 403
    client.logout()
    resp = client.post(reverse("datanets:review-decide", args=[datanet.slug]), {"ids": [copy.id], "decision": "accepted"})
    assert resp.status_code == 403 and "Log in" in resp.content.decode()  # a forbidden POST: 403, not a redirect


def test_owner_deletes_a_failed_upload_but_not_a_staked_one(client):
    datanet, cur, alice, bob, copy, failed = _queue()
    client.force_login(alice)
    assert client.post(reverse("datanets:contribution-withdraw", args=[failed.id])).status_code == 403  # bob's
    client.force_login(bob)
    page = client.get(reverse("datanets:contribution", args=[failed.id])).content.decode()
    assert "Delete this failed upload" in page
    assert "Withdraw" not in client.get(reverse("datanets:contribution", args=[copy.id])).content.decode()
    resp = client.post(reverse("datanets:contribution-withdraw", args=[failed.id]), follow=True)
    assert "withdrawn and deleted" in resp.content.decode()
    assert not Contribution.objects.filter(pk=failed.id).exists()
    resp = client.post(reverse("datanets:contribution-withdraw", args=[copy.id]), follow=True)
    assert "stake on-chain" in resp.content.decode() and Contribution.objects.filter(pk=copy.id).exists()


def test_error_pages_are_styled(client):
    client.force_login(contributor("erin"))
    resp = client.get("/datanets/no-such-datanet/")
    assert resp.status_code == 404 and 'data-status="404"' in resp.content.decode()
    resp = client.get(reverse("datanets:contribution-retry", args=[1]))  # POST-only
    assert resp.status_code == 405 and 'data-status="405"' in resp.content.decode() and resp["Allow"] == "POST"
    resp = client.get(reverse("datanets:create"))
    assert resp.status_code == 403 and "curator" in resp.content.decode() and 'data-status="403"' in resp.content.decode()
