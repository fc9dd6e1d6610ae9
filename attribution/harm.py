"""Harmful data has a cost: turn the index build's harm findings (`ModelWeightsAccumulator.harmful`) into the
Datanet's HarmFlags (datanets/harm.py), which curators act on. The weights paid are not changed by it."""
from __future__ import annotations

from collections.abc import Sequence

from attribution.engines.weights import ModelWeights, ModelWeightsAccumulator
from datanets.harm import EVIDENCE_RECORDS, harm_flags_record


def harm_findings(*, acc: ModelWeightsAccumulator, paid: ModelWeights, record_ids: Sequence[str],
                  harm_threshold: float) -> list[dict]:
    """[{contributor_id, statistic, null_bound, records: [(record id, part of T_c)]}] from the accumulator,
    with record ids in place of index columns (taken before the fitted index is dropped)."""
    return [{"contributor_id": int(h.contributor), "statistic": h.statistic, "null_bound": h.null_bound,
             "records": [(int(record_ids[col]), score) for col, score in h.records]}
            for h in acc.harmful(harm_threshold, top=EVIDENCE_RECORDS, result=paid)]


def harm_flags_store(*, model, findings: list[dict], validation_queries: int) -> None:
    """Record the model's flags on its Datanet (inside the build's transaction), naming every contribution of
    each flagged contributor that the model's version holds."""
    version = model.datanet_version
    for finding in findings:
        finding["contribution_ids"] = list(version.records.filter(contributor_id=finding["contributor_id"])
                                           .values_list("contribution_id", flat=True).distinct())
    harm_flags_record(datanet=version.datanet, model_id=model.pk, model_name=str(model),
                      harms=findings, validation_queries=validation_queries)
