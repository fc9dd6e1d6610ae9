"""Attribution engines: plain Python + torch, no Django. See `base.py` for the shared interface."""

from attribution.engines.base import (
    AttributionEngine,
    AttributionResult,
    IndexBase,
    Query,
    QueryAttribution,
    Record,
    top_k_from_scores,
)

__all__ = [
    "AttributionEngine",
    "AttributionResult",
    "IndexBase",
    "Query",
    "QueryAttribution",
    "Record",
    "top_k_from_scores",
]
