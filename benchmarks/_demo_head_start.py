"""Retrain a classifier of a running demo with another head start and compute its attribution weights as the
index build does (docs/factory.md, "A scaled probe": the check a new default start must pass before money uses it). Not run by
`make bench` (the leading underscore): it needs a demo's database.

    VAR_DIR=<a make run's var folder> OMP_NUM_THREADS=1 .venv/bin/python benchmarks/_demo_head_start.py --job 1 --probe-norm 10
    ... --random          # the product's start, for comparison with the app's own index

It reads the demo's database (the job's Datanet version, its curator-held evaluation set, near-duplicate
clusters, accept order) and writes nothing there: the adapter and index go under --out. The steps are
attribution.services' index build (training split, GradientEngine with the app's settings, the validation
queries, ModelWeightsAccumulator, harm findings) on an adapter trained by the factory's trainer with the
job's own configuration, only the head's start changed. Prints the weights, the signal and the harm flags.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--job", type=int, default=1, help="a succeeded classification job of the demo")
    ap.add_argument("--probe-norm", type=float, default=10.0)
    ap.add_argument("--random", action="store_true", help="the random start (the product's) instead of the probe")
    ap.add_argument("--out", default="", help="folder for the adapter and index (default: a temporary one)")
    args = ap.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    import tempfile

    import torch
    from peft import PeftModel

    from attribution import services as index_build
    from attribution.engines.base import Record
    from attribution.engines.gradient import GradientEngine, TextClassifier
    from attribution.selectors import usernames
    from factory import services as factory_services
    from factory.models import FineTunedModel, FineTuneJob
    from factory.training import train
    from factory.training.modeling import load_base, load_tokenizer, read_factory_meta

    torch.set_num_threads(1)
    job = FineTuneJob.objects.get(pk=args.job)
    model = FineTunedModel.objects.get(job=job)
    base_path = index_build._base_path(model)
    out = Path(args.out or tempfile.mkdtemp(prefix="demo-head-start-"))
    start = {"head_init": "random"} if args.random else {"head_init": "probe", "probe_norm": args.probe_norm}
    config = replace(factory_services.train_config_for(job, base_path), checkpoint_every=0, cpu_threads=1, **start)
    cpu0 = time.process_time()
    result = train(config, factory_services._examples(job.datanet_version), output_dir=out)
    trained_cpu = time.process_time() - cpu0
    adapter = Path(result.adapter_dir)
    meta = read_factory_meta(adapter)
    tok = load_tokenizer(str(adapter) if (adapter / "tokenizer_config.json").is_file() else base_path)
    labels = list(meta.get("labels") or model.labels)
    base = load_base(base_path, task="classification", labels=labels, pad_token_id=tok.pad_token_id)
    classifier = TextClassifier(PeftModel.from_pretrained(base, str(adapter)).eval(), tok, labels,
                                max_length=int(meta.get("max_length", 128)))
    train_ex, held, contributor_of = index_build.training_split(model, meta)
    records = [Record(id=str(e.record_id), text=e.text, label=e.label, contributor=str(contributor_of[e.record_id]))
               for e in train_ex]
    shutil.rmtree(out / "index", ignore_errors=True)
    engine = GradientEngine(**index_build.engine_settings(), directory=out / "index")
    fitted = engine.fit(classifier, records)
    run = index_build.model_weights_compute(model=model, engine=engine, fitted=fitted, held=held, train=train_ex)
    paid = run.paid
    names = usernames([int(c) for c in paid.weights])
    print(json.dumps({
        "job": args.job, "start": start, "trained_cpu_s": round(trained_cpu),
        "accuracy": result.metrics.get("accuracy"), "macro_f1": result.metrics.get("macro_f1"),
        "validation_source": run.query_source, "queries": run.queries, "signal": paid.signal, "rule": paid.rule,
        "weights": {names.get(int(c), c): round(float(w), 3) for c, w in paid.weights.items()},
        "harm_flags": [names.get(h["contributor_id"], h["contributor_id"]) for h in run.harms],
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
