"""The index build stores harm flags by the rule in weights.json (mean below minus the null bound and beyond the
Datanet's threshold), on a really trained tiny model; the weights are the same whatever the threshold."""
import json
from pathlib import Path

import pytest
from django.db import transaction

from attribution import services
from attribution.models import AttributionIndex, ModelContributorWeight
from attribution.tests.factories import make_model
from datanets.models import HarmFlag

pytestmark = pytest.mark.django_db


def _build(model) -> AttributionIndex:
    with transaction.atomic():
        index = services.attribution_index_build_enqueue(model=model)
    index = services.attribution_index_build(index_id=index.id, hostname="test")
    assert index.status == AttributionIndex.Status.READY, index.error
    return index


def test_flags_follow_the_rule_and_do_not_touch_the_weights(trained_adapter, attr_base_dir, tmp_path):
    model = make_model(adapter_src=trained_adapter, base_dir=attr_base_dir, workdir=tmp_path)
    datanet = model.datanet_version.datanet
    index = _build(model)
    stored = json.loads((Path(index.directory) / services.WEIGHTS_FILE).read_text())
    expected = {int(c) for c, t in stored["mean"].items() if c and t < -stored["threshold"][c]}
    flags = HarmFlag.objects.filter(model_id=model.pk)
    assert {f.contributor_id for f in flags} == expected
    for f in flags:
        assert f.datanet == datanet and f.statistic == stored["mean"][str(f.contributor_id)]
        assert set(f.contributions.values_list("contributor_id", flat=True)) == {f.contributor_id}
        assert all(r["score"] < 0 for r in f.evidence["records"])
    weights = dict(ModelContributorWeight.objects.filter(model=model).values_list("contributor_id", "weight"))

    # A threshold above every |T_c| flags nobody; the weights paid do not change.
    datanet.harm_threshold = 1.0
    datanet.save(update_fields=["harm_threshold"])
    index.status = AttributionIndex.Status.QUEUED
    index.save(update_fields=["status"])
    _build(model)
    assert not HarmFlag.objects.filter(model_id=model.pk, status=HarmFlag.Status.OPEN).exists()
    assert dict(ModelContributorWeight.objects.filter(model=model).values_list("contributor_id", "weight")) == weights
