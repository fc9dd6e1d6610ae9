"""Serving's answers to signals of the apps below it (connected in ServingConfig.ready)."""
from __future__ import annotations

from serving.services import inferences_settle_enqueue, span_index_ensure


def on_attribution_index_ready(sender, *, index, model, **kwargs) -> None:
    """A classifier's gradient index is ready: settle the paid answers held for it."""
    inferences_settle_enqueue(model_ids=[model.pk])


def on_attribution_index_unsupported(sender, *, index, model, **kwargs) -> None:
    """A generator was trained: build its version's span index now, so that its first paid answer is
    attributed by it rather than held."""
    if model.datanet_version_id and model.base_model_id:
        span_index_ensure(version=model.datanet_version, base_model=model.base_model)
