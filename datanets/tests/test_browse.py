"""Browsing a Datanet: full-text search (PostgreSQL tsvector, SQLite FTS5), filters, keyset pages, and the
page's chart and counts from the per-contribution counts stored at ingest (docs/datanets.md, browsing)."""
import pytest
from django.db import connection
from django.urls import reverse
from rest_framework.test import APIClient

from datanets import selectors, services
from datanets.models import Contribution, Record
from datanets.tests.factories import DatanetFactory, contributor, curator_of
from datanets.tests.helpers import ingest, upload

pytestmark = pytest.mark.django_db
ALICE = (b"label,text\npositive,Operating profit rose sharply.\nnegative,Net sales fell in the quarter.\n"
         b"neutral,The board meets on Monday.\npositive,Profit margins improved.\n")
BOB = b"label,text\nnegative,Profit warning issued.\nneutral,Sales office moved to Oulu.\n"


@pytest.fixture
def datanet_with_records():
    datanet = DatanetFactory()
    cur = curator_of(datanet, "cura")
    alice, bob = contributor("alice"), contributor("bob")
    accepted = ingest(upload(datanet, alice, "a.csv", ALICE))
    services.contribution_accept(contribution=accepted, curator=cur)
    pending = ingest(upload(datanet, bob, "b.csv", BOB))
    return datanet, cur, alice, bob, accepted, pending


def test_ingest_counts_labels_and_the_page_sums_them(datanet_with_records):
    datanet, cur, alice, bob, accepted, pending = datanet_with_records
    assert accepted.label_counts == {"positive": 2, "negative": 1, "neutral": 1}
    assert pending.label_counts == {"negative": 1, "neutral": 1}
    # The chart and the ranking count accepted records only, from the stored counts.
    assert selectors.datanet_label_distribution(datanet=datanet) == [("positive", 2), ("negative", 1), ("neutral", 1)]
    assert selectors.datanet_label_distribution(datanet=datanet, accepted_only=False) == [
        ("negative", 2), ("neutral", 2), ("positive", 2)]
    assert selectors.datanet_contributors_ranked(datanet=datanet) == [{"contributor__username": "alice", "records": 4}]
    counts = selectors.datanet_counts(datanet=datanet)
    assert counts["records"] == {"total": 6, "accepted": 4, "contributors": 1, "conflicts": 0}
    assert counts["contributions"] == {"total": 2, "pending": 1, "accepted": 1, "rejected": 0}


def test_search_finds_whole_words_of_records_ingested_after_migrating(datanet_with_records):
    datanet, cur, *_ = datanet_with_records

    def texts(q, **kw):
        return sorted(selectors.records_visible_to(user=cur, datanet=datanet, search=q, **kw).values_list("text", flat=True))

    assert texts("profit") == ["Operating profit rose sharply.", "Profit margins improved.", "Profit warning issued."]
    assert texts("PROFIT rose") == ["Operating profit rose sharply."]  # every word, any case
    assert texts("prof") == []  # whole words, not prefixes
    # Input is words, never query syntax: no prefix star, no error on an unbalanced quote or bracket.
    assert texts('(sales"') == ["Net sales fell in the quarter.", "Sales office moved to Oulu."]
    assert texts("sal*") == []
    assert texts("profit", label="negative") == ["Profit warning issued."]
    assert texts("profit", status=Contribution.Status.ACCEPTED) == ["Operating profit rose sharply.", "Profit margins improved."]
    assert texts("profit", contributor="bob") == ["Profit warning issued."]
    assert texts("profit", contributor="nobody") == []
    assert texts("...") == texts("")  # no word: no search
    # A deleted contribution's records leave the index with it (SQLite: the delete trigger).
    Contribution.objects.filter(contributor__username="bob").delete()
    assert texts("warning") == []


def test_records_api_keyset_pages_filters_and_visibility(datanet_with_records):
    datanet, cur, alice, bob, accepted, pending = datanet_with_records
    api = APIClient()
    url = f"/api/v1/datanets/{datanet.slug}/records/"
    api.force_authenticate(cur)
    seen, page = [], api.get(url, {"limit": 2}).json()
    assert set(page) == {"next", "previous", "results"} and len(page["results"]) == 2
    while True:
        seen += [r["id"] for r in page["results"]]
        if not page["next"]:
            break
        page = api.get(page["next"]).json()
    assert seen == sorted(seen) and len(seen) == 6  # every record once, in id order
    got = api.get(url, {"status": "pending", "q": "sales"}).json()["results"]
    assert [r["text"] for r in got] == ["Sales office moved to Oulu."]
    assert api.get(url, {"status": "bogus"}).status_code == 400
    for bad in ("null", "0", "201", "-1", "2.5"):  # a page size out of 1..200 is refused, not replaced by the default
        r = api.get(url, {"limit": bad})
        assert r.status_code == 400 and "limit" in r.json()["error"]["fields"], bad
    # A contributor reads accepted records and their own; another's pending ones stay hidden, filter or not.
    api.force_authenticate(alice)
    assert api.get(url, {"status": "pending"}).json()["results"] == []
    assert {r["contributor"] for r in api.get(url, {"q": "profit"}).json()["results"]} == {"alice"}
    api.force_authenticate(bob)
    assert [r["text"] for r in api.get(url, {"q": "warning"}).json()["results"]] == ["Profit warning issued."]
    api.force_authenticate(None)
    assert api.get(url).status_code in (401, 403)


def test_page_searches_filters_and_pages_by_keyset(client, datanet_with_records, monkeypatch):
    datanet, cur, *_ = datanet_with_records
    page_url = reverse("datanets:detail", args=[datanet.slug])
    body = client.get(page_url, {"q": "profit"}).content.decode()
    assert "Operating profit rose sharply." in body and "Profit warning issued." not in body  # pending: not shown
    assert "dn-bar-fill" in body
    part = client.get(page_url, {"label": "neutral"}, HTTP_HX_REQUEST="true").content.decode()
    assert "The board meets on Monday." in part and "Operating profit" not in part and "<h1>" not in part
    client.force_login(cur)
    body = client.get(page_url, {"status": "pending"}).content.decode()
    assert "Profit warning issued." in body and "Operating profit" not in body
    monkeypatch.setattr("datanets.views.RECORDS_PER_PAGE", 3)
    first = client.get(page_url, {"status": "any"})
    assert first.context["next_query"] and len(first.context["records"]) == 3
    second = client.get(page_url + "?" + first.context["next_query"])
    ids = [r.id for r in first.context["records"]] + [r.id for r in second.context["records"]]
    assert ids == sorted(ids) and len(set(ids)) == 6 and second.context["next_query"] is None
    assert client.get(page_url, {"after": "x"}).status_code == 200  # a bad cursor is ignored, not a 500


def test_status_pages_in_id_order_are_the_plain_filter(datanet_with_records):
    """A review-status filter (the ids of the contributions in it, read through the (contribution, id) index,
    migration 0013) pages through exactly the records a plain filter on the contribution's status gives, in
    id order, alone, with a search, a label or a contributor, for one contribution in the status or several."""
    datanet, cur, alice, bob, accepted, pending = datanet_with_records
    carol = contributor("carol")
    rejected = ingest(upload(datanet, carol, "c.csv", b"label,text\npositive,Operating profit doubled.\n"
                                                      b"negative,Sales fell at the Oulu plant.\n"))
    services.contribution_reject(contribution=rejected, curator=cur, reason="test")
    pending2 = ingest(upload(datanet, alice, "a2.csv", b"label,text\nneutral,Profit guidance unchanged.\n"
                                                       b"positive,Net sales rose.\n"))
    api = APIClient()
    api.force_authenticate(cur)
    url = f"/api/v1/datanets/{datanet.slug}/records/"
    records = list(Record.objects.filter(datanet=datanet).select_related("contribution", "contributor").order_by("id"))
    cases = [({"status": s}, lambda r, s=s: r.contribution.status == s) for s in ("accepted", "pending", "rejected")]
    cases += [({"status": "pending", "q": "profit"}, lambda r: r.contribution.status == "pending" and "rofit" in r.text),
              ({"status": "rejected", "q": "operating"}, lambda r: r.contribution.status == "rejected" and "Operating" in r.text),
              ({"status": "pending", "label": "positive"}, lambda r: r.contribution.status == "pending" and r.label == "positive"),
              ({"status": "pending", "contributor": "alice"},
               lambda r: r.contribution.status == "pending" and r.contributor.username == "alice"),
              ({"status": "accepted", "q": "zyxwvut"}, lambda r: False)]
    assert {r.contribution_id for r in records if r.contribution.status == "pending"} == {pending.id, pending2.id}
    for params, keep in cases:
        want = [r.id for r in records if keep(r)]
        got, page = [], api.get(url, {**params, "limit": 1}).json()
        while True:
            got += [r["id"] for r in page["results"]]
            if not page["next"]:
                break
            page = api.get(page["next"]).json()
        assert got == want, params
        view = selectors.records_visible_to(user=cur, datanet=datanet, search=params.get("q", ""),
                                            label=params.get("label", ""), contributor=params.get("contributor", ""),
                                            status=params["status"])
        assert list(view.values_list("id", flat=True)) == want, params


def test_record_indexes_serve_status_pages_and_rare_words():
    """Migration 0013: (contribution_id, id) replaces the foreign key's single-column index (one index for
    one, no more writes per ingested record); on PostgreSQL the full-text index keeps statistics for 5,000
    words, so the planner takes it for a word it has none for (no walk of the id order to find no match)."""
    with connection.cursor() as cur:
        indexes = [c["columns"] for c in connection.introspection.get_constraints(cur, Record._meta.db_table).values()
                   if c["index"] and not c["primary_key"]]
        assert ["contribution_id", "id"] in indexes and ["contribution_id"] not in indexes
        if connection.vendor == "postgresql":
            cur.execute("SELECT attstattarget FROM pg_attribute WHERE attrelid = 'datanets_record_text_fts'::regclass")
            assert cur.fetchone()[0] == 500
