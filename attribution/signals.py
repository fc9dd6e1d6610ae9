"""Signals the attribution app sends, for the apps above it (serving) to act on without being imported.

`attribution_index_ready(sender=AttributionIndex, index=, model=)`: a model's gradient index and its
contributor weights were just written (after commit). Serving settles the paid inferences held for it.
`attribution_index_unsupported(sender=AttributionIndex, index=, model=)`: the model generates text, which the
gradient index does not cover (in the caller's transaction). Serving builds the span index that attributes
its answers, so the first paid answer is attributed by it rather than held.
"""
from django.dispatch import Signal

attribution_index_ready = Signal()
attribution_index_unsupported = Signal()
