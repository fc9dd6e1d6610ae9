"""`seed_demo`: the demo users, the Finance and Literature Datanets, accepted and versioned; idempotent."""
import csv
import io
import json
from collections import Counter

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from core.roles import CONTRIBUTOR, CURATOR, MODEL_DEVELOPER, user_has_role
from datanets.management.commands import seed_demo
from datanets.models import Contribution, Datanet, DatanetVersion, Record
from datanets.tests.helpers import PHRASEBANK

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def test_noisy_share_is_30_percent_relabelled_and_deterministic():
    shares, evaluation = seed_demo.phrasebank_split(PHRASEBANK)
    assert (shares, evaluation) == seed_demo.phrasebank_split(PHRASEBANK)
    assert len(evaluation) == seed_demo.EVALUATION_SIZE == 300
    assert sum(len(rows) for rows in shares.values()) == 4846 - 300
    held = {text for _, text in evaluation}
    assert not held & {text for rows in shares.values() for _, text in rows}  # no contributor supplies one
    original = {}
    with open(PHRASEBANK, encoding="iso-8859-1", newline="") as fh:
        for r in csv.DictReader(fh):
            original.setdefault(r["content"], set()).add(r["result"])
    for name, rows in shares.items():
        changed = sum(label not in original[text] for label, text in rows)
        if name == seed_demo.NOISY:
            assert abs(changed - 0.3 * len(rows)) <= 3, changed  # a flipped duplicate may land on its twin's label
        else:
            assert changed == 0, name


def test_seed_demo_builds_the_demo_once(settings):
    settings.DEBUG = True  # the demo password is the documented one only with DEBUG on
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    text = out.getvalue()
    assert "alice" in text and seed_demo.DEMO_PASSWORD in text
    users = {u: get_user_model().objects.get(username=u) for u in (*seed_demo.CONTRIBUTORS, seed_demo.CURATOR_USER, seed_demo.DEVELOPER_USER)}
    assert all(user_has_role(users[n], CONTRIBUTOR) for n in seed_demo.CONTRIBUTORS)
    assert user_has_role(users["cora"], CURATOR) and user_has_role(users["devon"], MODEL_DEVELOPER)
    assert users["alice"].check_password(seed_demo.DEMO_PASSWORD)

    finance = Datanet.objects.get(slug="finance")
    assert finance.labels == ["positive", "negative", "neutral"] and finance.curators.get() == users["cora"]
    contributions = finance.contributions.all()
    assert contributions.count() == 6 and {c.status for c in contributions} == {Contribution.Status.ACCEPTED}
    assert {c.encoding for c in contributions} <= {"cp1252", "latin-1"}
    # The curator-held evaluation set: cora's 300 sentences, no stake, in version 1 and counted apart.
    held = contributions.get(is_evaluation=True)
    assert held.contributor == users["cora"] and held.record_count == 300 and held.stake == 0
    v1 = DatanetVersion.objects.get(datanet=finance, number=1)
    assert 4800 < v1.record_count <= 4846 and v1.contributor_count == 5 and v1.evaluation_count == 300
    assert v1.records.filter(contribution=held).count() == 300
    assert not Record.objects.filter(datanet=finance, contribution__is_evaluation=False,
                                     text__in=held.records.values("text")).exists()
    assert v1.label_counts["neutral"] > v1.label_counts["positive"] > v1.label_counts["negative"]
    # erin's labels disagree with the PhraseBank's about 30% of the time; alice's never do.
    gold = {}
    for label, text in (r.split(",", 1) for r in PHRASEBANK.read_text(encoding="iso-8859-1").splitlines()[1:]):
        gold.setdefault(text.strip('"').replace('""', '"'), set()).add(label)
    for name, expected in (("erin", 0.3), ("alice", 0.0)):
        recs = Record.objects.filter(datanet=finance, contributor=users[name])
        wrong = sum(1 for r in recs if r.text in gold and r.label not in gold[r.text])
        assert abs(wrong / recs.count() - expected) < 0.02, (name, wrong)

    literature = Datanet.objects.get(slug="literature")
    assert literature.task == Datanet.Task.GENERATION
    assert Counter(literature.contributions.values_list("status", flat=True)) == {"accepted": 3}
    lv1 = literature.versions.get(number=1)
    assert lv1.record_count > 7000 and Record.objects.filter(datanet=literature, text__startswith="First Citizen:").exists()

    # Instructions (chat): alice's finance questions (prompt/response CSV), bob's and carol's continuations (JSONL)
    instructions = Datanet.objects.get(slug="instructions")
    assert instructions.task == Datanet.Task.CHAT
    by_user = {c.contributor.username: c for c in instructions.contributions.all()}
    assert set(by_user) == {"alice", "bob", "carol"} and by_user["alice"].format == "csv"
    assert by_user["alice"].record_count == seed_demo.INSTRUCTION_FINANCE_ROWS
    assert by_user["bob"].record_count == seed_demo.INSTRUCTION_PASSAGES and by_user["bob"].format == "jsonl"
    question = json.loads(Record.objects.filter(contribution=by_user["alice"]).first().text)
    assert question[0]["content"].startswith("What is the sentiment") and question[1]["content"] in finance.labels
    passage = json.loads(Record.objects.filter(contribution=by_user["carol"]).first().text)
    assert passage[0]["content"].startswith("Continue this passage:\n") and passage[1]["role"] == "assistant"
    assert instructions.versions.get(number=1).record_count == sum(c.record_count for c in by_user.values())

    counts = (Contribution.objects.count(), Record.objects.count(), DatanetVersion.objects.count())
    out = io.StringIO()
    call_command("seed_demo", stdout=out)  # again: nothing new, no password printed
    assert seed_demo.DEMO_PASSWORD not in out.getvalue()
    assert (Contribution.objects.count(), Record.objects.count(), DatanetVersion.objects.count()) == counts
    out = io.StringIO()
    call_command("seed_demo", if_needed=True, stdout=out)
    assert "already seeded" in out.getvalue()


def test_production_passwords_are_random_and_shown_once(settings, tmp_path):
    settings.DEBUG = False
    out = io.StringIO()
    cmd = seed_demo.Command(stdout=out)
    users = cmd._users()
    assert not users["alice"].check_password(seed_demo.DEMO_PASSWORD)
    printed = {line.split()[0]: line.split()[-1] for line in out.getvalue().splitlines()[1:]}
    assert users["bob"].check_password(printed["bob"]) and printed["bob"] != printed["alice"]


def test_missing_data_is_a_clear_error_or_a_warning_from_bootstrap(tmp_path):
    with pytest.raises(CommandError, match="financial_phrasebank.csv not found"):
        call_command("seed_demo", data_dir=str(tmp_path), stdout=io.StringIO())
    err = io.StringIO()
    call_command("seed_demo", data_dir=str(tmp_path), if_needed=True, stdout=io.StringIO(), stderr=err)
    assert "skipped" in err.getvalue() and not Datanet.objects.exists()
