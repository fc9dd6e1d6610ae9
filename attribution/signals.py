"""Signals the attribution app sends, for the apps above it (serving) to act on without being imported.

`attribution_index_ready(sender=AttributionIndex, index=, model=)`: a model's gradient index and its
contributor weights were just written (after commit). Serving settles the paid inferences held for it.
"""
from django.dispatch import Signal

attribution_index_ready = Signal()
