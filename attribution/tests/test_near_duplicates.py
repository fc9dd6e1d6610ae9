"""Near-duplicate clusters in the paid weights, end to end: records go through the real ingest (which
clusters them), a tiny LoRA classifier is really trained, and the attribution index build pays by the
record -> cluster map that attribution.services builds from `Record.near_dup_of`."""
import json
import random
from pathlib import Path

import pytest
from django.db import transaction

from attribution import services
from attribution.services import training_split
from attribution.tests.factories import LABELS, WORDS, make_model, train_adapter
from datanets import services as datanet_services
from datanets.models import Record
from datanets.tests.factories import DatanetFactory, contributor, curator_of
from datanets.tests.helpers import ingest, upload
from factory.training.modeling import read_factory_meta

pytestmark = pytest.mark.django_db
FILLER = ("board group annual review market customer service order plant network energy paper steel bank "
          "mobile software retail shipping engine contract office store project unit region system share").split()


def _rows(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """Texts of 16 words: two label words and 14 random fillers, so rows are not near each other."""
    rows = []
    for i in range(n):
        label = LABELS[i % 3]
        words = [*rng.sample(FILLER, 7), rng.choice(WORDS[label]), *rng.sample(FILLER, 7), rng.choice(WORDS[label])]
        rows.append((" ".join(words), label))
    return rows


def _variant(text: str, rng: random.Random) -> str:
    words = text.split()
    i = rng.choice([0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14])  # never a label word
    words[i] = "firm" if words[i] != "firm" else "company"
    return " ".join(words)


def _csv(rows) -> bytes:
    return ("text,label\n" + "".join(f"{t},{label}\n" for t, label in rows)).encode()


def _build(model):
    with transaction.atomic():
        index = services.attribution_index_build_enqueue(model=model)
    index = services.attribution_index_build(index_id=index.id, hostname="test")
    assert index.error == "" or index.error is None, index.error
    return json.loads((Path(index.directory) / services.WEIGHTS_FILE).read_text())


def test_one_token_copies_of_another_contributors_records_are_not_paid_as_originals(attr_base_dir, tmp_path, settings):
    settings.MODELS_DIR = tmp_path / "models"
    rng = random.Random(5)
    datanet = DatanetFactory(labels=list(LABELS))
    curator = curator_of(datanet, "carol")
    people = {name: contributor(name) for name in ("alice", "bob", "dave", "mallory")}
    honest = {name: _rows(rng, 36) for name in ("alice", "bob", "dave")}
    copies = [(_variant(t, rng), label) for t, label in honest["alice"]]
    contributions = {}
    for name, rows in [*honest.items(), ("mallory", copies)]:  # mallory uploads and is accepted last
        c = ingest(upload(datanet, people[name], f"{name}.csv", _csv(rows)))
        contributions[name] = datanet_services.contribution_accept(contribution=c, curator=curator)
    mine = Record.objects.filter(contribution=contributions["mallory"])
    assert mine.count() == 36 and mine.filter(near_dup_of__contributor=people["alice"]).count() == 36

    version = datanet_services.datanet_version_create(datanet=datanet, user=curator)
    records = list(version.records.order_by("id"))
    assert version.record_count == len(records) == 4 * 36 and version.contributor_count == 4
    adapter = train_adapter(attr_base_dir, tmp_path / "train", [(r.text, r.label) for r in records])
    mallory = str(people["mallory"].id)

    model = make_model(adapter_src=adapter, base_dir=attr_base_dir, workdir=tmp_path / "a", version=version)
    paid = _build(model)
    # With the clusters her copies (same label as alice's originals) are not even in the training set the
    # index is built over (version_training_records), so she has no record to be paid for, model-level or
    # in any one answer's split.
    _, _, contributor_of = training_split(model, read_factory_meta(model.adapter_dir))
    assert not set(mine.values_list("id", flat=True)) & set(contributor_of)
    assert len(contributor_of) == 3 * 36
    Record.objects.filter(datanet=datanet).update(near_dup_of=None, near_dup_similarity=None)  # as before ingest found them
    unclustered = _build(make_model(adapter_src=adapter, base_dir=attr_base_dir, workdir=tmp_path / "b",
                                    version=version))
    # Without clusters her copies are paid like originals; with them, none is credited: where alice's
    # original trained, it is the earlier copy; where it was held out as a validation query, the cluster's
    # original is still alice's (cluster_first_order), so no training copy stands in for it.
    _, held, _ = training_split(model, read_factory_meta(model.adapter_dir))
    held_ids = {e.record_id for e in held}
    alice_held = Record.objects.filter(contribution=contributions["alice"], id__in=held_ids).count()
    assert 0 < alice_held < 36  # some originals trained, some held out: both cases occur
    assert unclustered["mean"][mallory] > 0.0
    assert paid["mean"].get(mallory, 0.0) == 0.0 and paid["weights"].get(mallory, 0.0) == 0.0
