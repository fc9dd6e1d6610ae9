"""Ingest: formats, encodings, mapping, validation, duplicates, conflicts and every bad input."""
import io
import json

import pytest

from core.errors import ApplicationError
from datanets import readers, services
from datanets.models import Contribution, Datanet, Record
from datanets.readers import record_sha256
from datanets.tests.factories import DatanetFactory, contributor
from datanets.tests.helpers import PHRASEBANK, SHAKESPEARE, gz, ingest, parquet, upload, zipped
from ledger.models import LedgerTransaction

pytestmark = pytest.mark.django_db
CSV = b"label,text\npositive,Profit rose 20 %.\nnegative,Sales fell.\nneutral,The meeting is on Monday.\n"


@pytest.fixture
def datanet():
    return DatanetFactory()


@pytest.fixture
def alice():
    return contributor("alice")


def test_phrasebank_latin1_is_detected_and_duplicates_and_conflicts_counted(datanet, alice):
    res = upload(datanet, alice, "financial_phrasebank.csv", PHRASEBANK.read_bytes())
    c = res.contribution
    assert res.created and c.ingest_state == Contribution.IngestState.QUEUED
    assert c.format == "csv" and c.encoding in ("latin-1", "cp1252")
    assert c.options["text_column"] == "content" and c.options["label_column"] == "result"
    c = ingest(res)
    assert c.ingest_state == Contribution.IngestState.DONE, c.ingest_errors
    assert c.rows_total == 4846 and c.rows_bad == 0
    assert c.record_count + c.duplicates_dropped == 4846
    assert c.duplicates_dropped >= 1 and c.conflicts >= 2
    # Non-ASCII decoded correctly (the file has e.g. "Ã¤" style bytes in Latin-1): no replacement characters.
    assert not Record.objects.filter(contribution=c, text__contains="\ufffd").exists()
    assert Record.objects.filter(contribution=c, text__regex=r"[^\x00-\x7f]").count() >= 50
    r = Record.objects.filter(contribution=c).order_by("row_number").first()
    assert r.sha256 == record_sha256(r.text, r.label) and r.row_number == 1
    assert services.contribution_label_counts(contribution=c)["neutral"] > 2800
    stake = LedgerTransaction.objects.get(idempotency_key=f"contribution_stake:{c.id}")
    assert stake.kind == "contribution_stake"
    assert stake.payload == {"contribution_id": c.id, "datanet_id": datanet.id, "contributor_id": alice.id,
                             "content_hash": "0x" + c.file_sha256, "stake": "10"}
    assert c.stake == datanet.min_stake


@pytest.mark.parametrize("name,content", [
    ("d.csv", CSV),
    ("d.tsv", CSV.replace(b",", b"\t")),
    ("d.jsonl", b"".join(json.dumps({"sentence": t, "sentiment": lab}).encode() + b"\n" for lab, t in
                        [("positive", "Profit rose 20 %."), ("negative", "Sales fell."), ("neutral", "The meeting is on Monday.")])),
    ("d.parquet", parquet([{"content": "Profit rose 20 %.", "result": "positive"}, {"content": "Sales fell.", "result": "negative"},
                           {"content": "The meeting is on Monday.", "result": "neutral"}])),
    ("d.csv.gz", gz(CSV)),
    ("d.zip", zipped({"inner/data.csv": CSV})),
    ("d.csv", b"\xef\xbb\xbf" + CSV),  # UTF-8 with BOM
    ("d.csv", CSV.replace(b"\n", b"\r\n")),
])
def test_every_format_is_read_with_guessed_columns(datanet, alice, name, content):
    c = ingest(upload(datanet, alice, name, content))
    assert c.ingest_state == Contribution.IngestState.DONE, c.ingest_errors
    assert sorted(c.records.values_list("text", "label")) == sorted(
        [("Profit rose 20 %.", "positive"), ("Sales fell.", "negative"), ("The meeting is on Monday.", "neutral")])


def test_plain_text_line_and_paragraph_modes():
    gen = DatanetFactory(task=Datanet.Task.GENERATION, labels=[])
    user = contributor()
    text = b"First Citizen:\nBefore we proceed.\n\nAll:\nSpeak, speak.\n\n\nLast line.\n"
    c = ingest(upload(gen, user, "a.txt", text, text_mode="paragraph"))
    assert list(c.records.order_by("row_number").values_list("text", flat=True)) == ["First Citizen:\nBefore we proceed.", "All:\nSpeak, speak.", "Last line."]
    c2 = ingest(upload(gen, user, "b.txt", text + b"extra\n", text_mode="line"))
    # Lines already present as paragraphs are different texts; "Last line." is a duplicate.
    assert c2.record_count == 5 and c2.duplicates_dropped == 1


def test_shakespeare_paragraphs(tmp_path):
    gen = DatanetFactory(task=Datanet.Task.GENERATION, labels=[])
    c = ingest(upload(gen, contributor(), "tinyshakespeare.txt", SHAKESPEARE.read_bytes(), text_mode="paragraph"))
    assert c.ingest_state == Contribution.IngestState.DONE
    assert c.rows_total > 7000 and c.record_count > 6000


def test_plain_text_needs_a_generation_datanet(datanet, alice):
    with pytest.raises(ApplicationError, match="Plain text has no labels"):
        upload(datanet, alice, "a.txt", b"hello\n")
    assert not Contribution.objects.exists()


def test_row_errors_store_nothing_and_name_rows(datanet, alice):
    content = CSV + b"bullish,Unknown label here.\nneutral,\npositive," + b"x" * 20_000 + b"\nneutral,a,b\n"
    c = ingest(upload(datanet, alice, "bad.csv", content))
    assert c.ingest_state == Contribution.IngestState.FAILED
    assert c.rows_total == 7 and c.rows_bad == 4 and c.record_count == 0
    assert "4 of 7 rows failed validation" in c.ingest_errors[0]["error"]
    rows = {e["row"]: e["error"] for e in c.ingest_errors[1:]}
    assert "unknown label 'bullish'" in rows[4]
    assert rows[5] == "empty text"
    assert "limit is 10000" in rows[6]
    assert "expected 2 fields, found 3" in rows[7]
    assert not Record.objects.exists()
    assert not LedgerTransaction.objects.filter(kind="contribution_stake").exists()


def test_drop_bad_rows_keeps_the_good_ones(datanet, alice):
    content = CSV + b"bullish,Unknown label here.\n"
    c = ingest(upload(datanet, alice, "bad.csv", content, drop_bad_rows=True))
    assert c.ingest_state == Contribution.IngestState.DONE
    assert c.record_count == 3 and c.rows_bad == 1 and c.ingest_errors[0]["row"] == 4


def test_failed_upload_can_be_retried_with_drop_bad_rows(datanet, alice):
    content = CSV + b"bullish,Unknown label here.\n"
    first = ingest(upload(datanet, alice, "bad.csv", content))
    assert first.ingest_state == Contribution.IngestState.FAILED
    again = upload(datanet, alice, "bad.csv", content, drop_bad_rows=True)
    assert again.contribution.id == first.id and again.contribution.ingest_state == Contribution.IngestState.QUEUED
    assert ingest(again).record_count == 3


def test_duplicates_against_the_datanet_and_conflicts_across_contributions(datanet, alice):
    ingest(upload(datanet, alice, "a.csv", CSV))
    bob = contributor("bob")
    second = b"label,text\npositive,Profit rose 20 %.\npositive,Sales fell.\npositive,New text.\npositive,New text.\n"
    c = ingest(upload(datanet, bob, "b.csv", second))
    assert c.record_count == 2 and c.duplicates_dropped == 2  # one against alice's, one within the file
    assert c.conflicts == 1  # "Sales fell." negative vs positive
    flagged = set(Record.objects.filter(is_conflict=True).values_list("contributor__username", "text"))
    assert flagged == {("alice", "Sales fell."), ("bob", "Sales fell.")}


def test_canonical_form_makes_whitespace_and_unicode_variants_duplicates(datanet, alice):
    content = "label,text\npositive,  Café up \npositive,Cafe\u0301 up\n".encode()
    c = ingest(upload(datanet, alice, "u.csv", content))
    assert c.record_count == 1 and c.duplicates_dropped == 1
    assert c.records.get().text == "Café up"


def test_reupload_of_the_same_file_is_idempotent(datanet, alice):
    first = upload(datanet, alice, "a.csv", CSV)
    ingest(first)
    second = upload(datanet, alice, "renamed.csv", CSV)
    assert not second.created and second.contribution.id == first.contribution.id
    assert Contribution.objects.count() == 1 and Record.objects.count() == 3


def test_oversize_file_is_refused(datanet, alice, settings):
    settings.DATANET_UPLOAD_MAX_BYTES = 50
    with pytest.raises(ApplicationError, match="the limit is 50 bytes") as exc:
        upload(datanet, alice, "a.csv", CSV)
    assert exc.value.status_code == 413
    assert not Contribution.objects.exists()


def test_empty_file_is_refused(datanet, alice):
    with pytest.raises(ApplicationError, match="empty"):
        upload(datanet, alice, "a.csv", b"")
    with pytest.raises(ApplicationError, match="empty"):
        upload(datanet, alice, "a.csv.gz", gz(b""))
    assert not Contribution.objects.exists()


@pytest.mark.parametrize("name", ["a.xlsx", "a.pdf", "noext", "a.exe"])
def test_unsupported_format_is_refused(datanet, alice, name):
    with pytest.raises(ApplicationError, match="Unsupported format"):
        upload(datanet, alice, name, b"whatever")
    assert not Contribution.objects.exists()


@pytest.mark.parametrize("name,content", [
    ("a.csv", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100),
    ("a.csv", b"label,text\npositive,abc\x00def\n"),
    ("a.jsonl", b"\x7fELF\x02\x01\x01" + b"\x00" * 50),
    ("a.parquet", CSV),
    ("a.csv.gz", CSV),  # says gzip, is not
    ("a.zip", CSV),
])
def test_binary_or_wrong_content_is_refused(datanet, alice, name, content):
    with pytest.raises(ApplicationError) as exc:
        upload(datanet, alice, name, content)
    assert "binary" in exc.value.message or "PAR1" in exc.value.message or "damaged" in exc.value.message
    assert not Contribution.objects.exists()


def test_gzip_bomb_is_refused(datanet, alice, settings):
    settings.DATANET_DECOMPRESSED_MAX_BYTES = 1_000_000
    bomb = gz(b"label,text\n" + b"positive,aaaaaaaaaaaaaaaaaaaa\n" * 200_000)  # ~6 MB from ~20 KB
    assert len(bomb) < 100_000
    with pytest.raises(ApplicationError, match="compression bomb"):
        upload(datanet, alice, "bomb.csv.gz", bomb)
    assert not Contribution.objects.exists()


def test_zip_bomb_is_refused(datanet, alice, settings):
    settings.DATANET_DECOMPRESSED_MAX_BYTES = 1_000_000
    with pytest.raises(ApplicationError, match="compression bomb"):
        upload(datanet, alice, "bomb.zip", zipped({"d.csv": b"label,text\n" + b"positive,a\n" * 300_000}))
    with pytest.raises(ApplicationError, match="exactly one data file"):
        upload(datanet, alice, "two.zip", zipped({"a.csv": CSV, "b.csv": CSV}))


def test_parquet_bomb_is_refused(datanet, alice, settings):
    settings.DATANET_DECOMPRESSED_MAX_BYTES = 100_000
    rows = [{"text": "a" * 1000, "label": "positive"}] * 1000  # ~1 MB decoded, a few KB encoded
    data = parquet(rows)
    assert len(data) < 20_000
    c = ingest(upload(datanet, alice, "bomb.parquet", data))
    assert c.ingest_state == Contribution.IngestState.FAILED
    assert "compression bomb" in c.ingest_errors[0]["error"] and not Record.objects.exists()


def test_unguessable_columns_wait_for_the_mapping_step(datanet, alice):
    content = b"a,b\nProfit rose 20 %.,1\nSales fell.,0\n"
    res = upload(datanet, alice, "x.csv", content)
    c = res.contribution
    assert c.ingest_state == Contribution.IngestState.MAPPING
    assert c.options["columns"] == ["a", "b"] and c.options["guess"]["text_column"] == "a"
    with pytest.raises(ApplicationError, match="Column 'nope' is not in the file"):
        services.contribution_start(contribution=c, user=alice, text_column="nope", label_column="b")
    with pytest.raises(ApplicationError, match="label"):
        services.contribution_start(contribution=c, user=alice, text_column="a", label_column="")
    services.contribution_start(contribution=c, user=alice, text_column="a", label_column="b")
    c = services.contribution_ingest(contribution_id=c.id)
    assert c.ingest_state == Contribution.IngestState.FAILED  # labels 1/0 are not this Datanet's
    assert "unknown label '1'" in c.ingest_errors[1]["error"]


def test_explicit_missing_column_is_refused(datanet, alice):
    with pytest.raises(ApplicationError, match="Column 'body' is not in the file"):
        upload(datanet, alice, "a.csv", CSV, text_column="body")
    assert not Contribution.objects.exists()


def test_only_contributors_upload(datanet):
    from accounts.tests.factories import UserFactory

    with pytest.raises(ApplicationError, match="Only contributors"):
        upload(datanet, UserFactory(), "a.csv", CSV)


def test_latin1_after_a_long_utf8_looking_prefix(datanet, alice):
    content = b"label,text\n" + b"".join(
        b"neutral,plain ascii line " + str(i).encode() + b"\n" for i in range(40_000)) + b"positive,Ol\xe9 S.A. gains\n"
    c = ingest(upload(datanet, alice, "late.csv", content))
    assert c.ingest_state == Contribution.IngestState.DONE, c.ingest_errors
    assert c.records.filter(text="Olé S.A. gains").exists()


def test_every_share_of_the_phrasebank_gets_the_same_western_encoding():
    """A sample with few non-ASCII bytes nearly ties many code pages; one share once came out cp1250."""
    from datanets.management.commands.seed_demo import _csv_bytes, phrasebank_shares

    for name, rows in phrasebank_shares(PHRASEBANK).items():
        data = _csv_bytes(rows)
        encoding = readers.detect_encoding(io.BytesIO(data))
        assert encoding in ("cp1252", "latin-1"), (name, encoding)
        data.decode(encoding)  # every byte of the share decodes


def test_detected_code_page_decodes_every_byte_of_the_file():
    """The guess comes from a sample; a byte the guessed code page leaves undefined later in the file
    (0x98 in cp1250) must not make the whole ingest fail."""
    line = "Zażółć gęślą jaźń, powiedział Paweł.\n".encode("cp1250")
    data = b"text\n" + line * 2000 + b"later \x98 here\n"
    encoding = readers.detect_encoding(io.BytesIO(data))
    data.decode(encoding)  # raises if the guess left a byte undefined


def test_record_ids_drawn_for_phase_2_are_the_ones_the_sequence_gave():
    """Phase 2 draws the new records' ids before its insert. PostgreSQL: one contiguous run comes back as two
    numbers; when the draws are not contiguous (here the sequence steps by 3, as when another session drew in
    between), the ids themselves. SQLite: past the largest id used."""
    from django.db import connection

    ids = services._record_ids_draw(5, after=0)
    assert ids.tolist() == list(range(int(ids[0]), int(ids[0]) + 5))
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("ALTER SEQUENCE datanets_record_id_seq INCREMENT BY 3")
        gapped = services._record_ids_draw(4, after=int(ids[-1]))
        assert gapped.tolist() == [int(gapped[0]) + 3 * k for k in range(4)] and gapped[0] > ids[-1]
    else:
        assert services._record_ids_draw(3, after=int(ids[-1]) + 10).tolist() == [ids[-1] + 11, ids[-1] + 12, ids[-1] + 13]


@pytest.mark.django_db(transaction=True)
def test_sqlite_stages_an_ingest_in_a_temporary_file_not_in_memory(monkeypatch):
    """The embedded default keeps SQLite's temporary tables in memory (temp_store=MEMORY), which held the
    whole staged file (1.4 GB of RSS at 1M rows): an ingest outside a transaction stages on disk and sets
    the connection back afterwards. PostgreSQL: staging is the server's; the ingest is the same."""
    from django.db import connection

    seen = []
    real_stage = services._stage

    def stage(contribution, staging):
        with connection.cursor() as cur:
            if connection.vendor == "sqlite":
                cur.execute("PRAGMA temp_store")
                seen.append(cur.fetchone()[0])
        return real_stage(contribution, staging)

    monkeypatch.setattr(services, "_stage", stage)
    datanet = DatanetFactory()
    c = ingest(upload(datanet, contributor("alice"), "x.csv", CSV))
    assert c.ingest_state == Contribution.IngestState.DONE and c.record_count == 3
    if connection.vendor == "sqlite":
        assert seen == [1]  # FILE while staging
        with connection.cursor() as cur:
            cur.execute("PRAGMA temp_store")
            assert cur.fetchone()[0] == 2  # MEMORY again, as configured
