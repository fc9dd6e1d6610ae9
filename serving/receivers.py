"""Serving's answers to signals of the apps below it (connected in ServingConfig.ready)."""
from __future__ import annotations


def on_attribution_index_ready(sender, *, index, model, **kwargs) -> None:
    """A classifier's gradient index is ready: settle the paid answers held for it."""
    from serving.services import inferences_settle_enqueue

    inferences_settle_enqueue(model_ids=[model.pk])
