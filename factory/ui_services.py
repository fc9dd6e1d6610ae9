"""Reads and presentation helpers for the factory's pages and API: job filters, the curves drawn as inline
SVG on the server (no chart library, no CDN), a tiny safe markdown renderer for model cards, and the
optional blocks that other apps hang on the model page.

Writes live in factory/services.py; nothing here changes a row.
"""
from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field

from django.db.models import QuerySet
from django.template import TemplateDoesNotExist
from django.template.loader import get_template
from django.utils.safestring import SafeString, mark_safe

from factory.models import BaseModel, FineTunedModel, FineTuneJob, JobMetric

# --- selectors -------------------------------------------------------------------------------------

BASELINE_MARGIN = 0.0  # a model "beats" the majority baseline when strictly above it on accuracy and macro-F1
JOB_LIST_RELATED = ("owner", "base_model", "datanet_version__datanet")


def job_list(*, user=None, status: str = "", base_model_id: int | None = None, datanet_id: int | None = None,
             mine: bool = False) -> QuerySet[FineTuneJob]:
    """Jobs newest first, filtered; `mine` needs `user`. Every signed-in user may browse them (the model
    card publishes the same hyperparameters), only the owner may act on one."""
    qs = FineTuneJob.objects.select_related(*JOB_LIST_RELATED).order_by("-created_at", "-id")
    if status:
        qs = qs.filter(status=status)
    if base_model_id:
        qs = qs.filter(base_model_id=base_model_id)
    if datanet_id:
        qs = qs.filter(datanet_version__datanet_id=datanet_id)
    if mine and user is not None and user.is_authenticated:
        qs = qs.filter(owner=user)
    return qs


def job_get(*, pk: int) -> FineTuneJob:
    return FineTuneJob.objects.select_related(*JOB_LIST_RELATED).get(pk=pk)


def job_metrics(*, job: FineTuneJob) -> dict[str, list[JobMetric]]:
    rows = list(JobMetric.objects.filter(job=job).order_by("step", "id"))
    return {"train": [r for r in rows if r.kind == JobMetric.Kind.TRAIN],
            "eval": [r for r in rows if r.kind == JobMetric.Kind.EVAL]}


def model_list(*, base_model_id: int | None = None, task: str = "") -> QuerySet[FineTunedModel]:
    qs = FineTunedModel.objects.select_related("base_model", "datanet_version__datanet", "developer", "job")
    if base_model_id:
        qs = qs.filter(base_model_id=base_model_id)
    if task:
        qs = qs.filter(task=task)
    return qs.order_by("-created_at", "-id")


def base_model_list(*, active_only: bool = True) -> QuerySet[BaseModel]:
    qs = BaseModel.objects.all()
    return qs.filter(is_active=True) if active_only else qs


def base_model_builds() -> list[BaseModel]:
    """Bases being pre-trained here (queued, running or failed), for the catalog page."""
    return list(BaseModel.objects.exclude(status=BaseModel.BuildStatus.READY).order_by("name"))


# Final figures shown in tables: the headline metric of each task first.
HEADLINE_METRICS = ("macro_f1", "accuracy", "eval_loss", "perplexity")


def job_final_metrics(job: FineTuneJob) -> dict[str, float]:
    """The best epoch's scalar metrics (or, while running, the last evaluation's)."""
    metrics = job.metrics or {}
    if not metrics:
        last = JobMetric.objects.filter(job=job, kind=JobMetric.Kind.EVAL).order_by("-step").first()
        metrics = last.values if last else {}
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def job_baseline(job: FineTuneJob) -> dict | None:
    """The majority-class baseline of a classifier's evaluation split (always answering the training split's
    most common label) beside the model's best (or, while running, latest) evaluation; `beaten` is False
    when the model does not beat it on accuracy and on macro-F1. None for generation or before any evaluation."""
    metrics = job.metrics or {}
    if not metrics:
        last = JobMetric.objects.filter(job=job, kind=JobMetric.Kind.EVAL).order_by("-step").first()
        metrics = last.values if last else {}
    base = metrics.get("baseline")
    if not isinstance(base, dict) or "accuracy" not in metrics:
        return None
    beaten = (metrics["accuracy"] > base["accuracy"] + BASELINE_MARGIN
              and metrics.get("macro_f1", 0.0) > base["macro_f1"] + BASELINE_MARGIN)
    return {**base, "model_accuracy": metrics["accuracy"], "model_macro_f1": metrics.get("macro_f1", 0.0),
            "beaten": beaten, "final": bool(job.metrics)}


def job_early_stop(job: FineTuneJob, *, evaluations: int) -> dict | None:
    """A finished run that early stopping ended before its last epoch: {"epochs_run", "epochs", "patience"}."""
    hp = job.hyperparameters or {}
    if job.status != FineTuneJob.Status.SUCCEEDED or not hp.get("patience") or evaluations >= hp.get("epochs", 0):
        return None
    return {"epochs_run": evaluations, "epochs": hp["epochs"], "patience": hp["patience"]}


# --- charts ----------------------------------------------------------------------------------------

PALETTE = ("#4f46e5", "#dc2626", "#059669", "#d97706", "#0891b2", "#9333ea", "#be185d", "#4d7c0f")
MAX_POINTS = 300  # per series: a long run's curve is thinned so the page stays small


@dataclass
class Series:
    name: str
    points: list[tuple[float, float]]
    color: str = PALETTE[0]
    dashed: bool = False
    markers: bool = False
    svg_points: str = ""
    dots: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Chart:
    title: str
    width: int
    height: int
    series: list[Series]
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    x_label: str
    y_label: str
    left: int
    top: int
    right: int
    bottom: int

    @property
    def empty(self) -> bool:
        return not any(s.points for s in self.series)


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / step) * step
    ticks, value = [], start
    while value <= high + step * 1e-9 and len(ticks) < 12:
        ticks.append(round(value, 10))
        value += step
    if ticks and ticks[-1] < high:
        ticks.append(round(value, 10))
    return ticks


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return points
    stride = len(points) / MAX_POINTS
    kept = [points[int(i * stride)] for i in range(MAX_POINTS)]
    return kept if kept[-1] == points[-1] else [*kept, points[-1]]


def chart_build(*, title: str, series: list[Series], x_label: str = "step", y_label: str = "",
                width: int = 640, height: int = 260, y_min: float | None = None,
                y_max: float | None = None) -> Chart:
    """Lay out line series in an SVG viewBox: axes with round ticks, points mapped to pixels. The
    template draws it; every text goes through Django's autoescape."""
    left, right, top, bottom = 56, 16, 28, 40
    clean = []
    for s in series:
        pts = [(float(x), float(y)) for x, y in s.points
               if x is not None and y is not None and math.isfinite(float(y)) and math.isfinite(float(x))]
        clean.append(Series(name=s.name, points=_thin(pts), color=s.color, dashed=s.dashed, markers=s.markers))
    xs = [x for s in clean for x, _ in s.points]
    ys = [y for s in clean for _, y in s.points]
    chart = Chart(title=title, width=width, height=height, series=clean, x_ticks=[], y_ticks=[], x_label=x_label,
                  y_label=y_label, left=left, top=top, right=width - right, bottom=height - bottom)
    if not xs:
        return chart
    x_ticks = _nice_ticks(min(0.0, min(xs)), max(xs))
    y_ticks = _nice_ticks(min(ys) if y_min is None else y_min, max(ys) if y_max is None else y_max)
    x0, x1 = x_ticks[0], x_ticks[-1]
    y0, y1 = y_ticks[0], y_ticks[-1]
    plot_w, plot_h = chart.right - left, chart.bottom - top

    def px(x: float) -> float:
        return round(left + (x - x0) / ((x1 - x0) or 1) * plot_w, 1)

    def py(y: float) -> float:
        return round(chart.bottom - (y - y0) / ((y1 - y0) or 1) * plot_h, 1)

    for s in clean:
        mapped = [(px(x), py(y)) for x, y in s.points]
        s.svg_points = " ".join(f"{a},{b}" for a, b in mapped)
        s.dots = mapped if (s.markers or len(mapped) == 1) else []
    chart.x_ticks = [(px(t), _fmt(t)) for t in x_ticks]
    chart.y_ticks = [(py(t), _fmt(t)) for t in y_ticks]
    return chart


# Metrics drawn on the second chart of a job (scores between 0 and 1).
SCORE_METRICS = ("accuracy", "macro_f1")


def job_charts(*, job: FineTuneJob, metrics: dict[str, list[JobMetric]] | None = None) -> list[Chart]:
    """The job page's curves: training and evaluation loss by step; evaluation scores by step."""
    metrics = metrics if metrics is not None else job_metrics(job=job)
    loss = chart_build(title="Loss", y_label="loss", series=[
        Series(name="training loss", points=[(m.step, m.loss) for m in metrics["train"] if m.loss is not None],
               color=PALETTE[0]),
        Series(name="evaluation loss", points=[(m.step, m.loss) for m in metrics["eval"] if m.loss is not None],
               color=PALETTE[1], dashed=True, markers=True),
    ])
    charts = [loss]
    present = [k for k in SCORE_METRICS if any(k in m.values for m in metrics["eval"])]
    if present:
        charts.append(chart_build(title="Evaluation", y_label="score", y_min=0.0, y_max=1.0, series=[
            Series(name=k.replace("_", "-"), color=PALETTE[2 + i], markers=True,
                   points=[(m.step, m.values[k]) for m in metrics["eval"] if isinstance(m.values.get(k), int | float)])
            for i, k in enumerate(present)
        ]))
    elif any("perplexity" in m.values for m in metrics["eval"]):
        charts.append(chart_build(title="Perplexity", y_label="perplexity", series=[
            Series(name="perplexity", color=PALETTE[2], markers=True,
                   points=[(m.step, m.values["perplexity"]) for m in metrics["eval"]
                           if isinstance(m.values.get("perplexity"), int | float)])]))
    return charts


def jobs_loss_chart(*, jobs: list[FineTuneJob]) -> Chart:
    """Training loss of several runs overlaid, one colour each (the comparison page)."""
    rows = JobMetric.objects.filter(job__in=jobs, kind=JobMetric.Kind.TRAIN, loss__isnull=False).order_by("step")
    by_job: dict[int, list[tuple[float, float]]] = {j.id: [] for j in jobs}
    for job_id, step, loss in rows.values_list("job_id", "step", "loss"):
        by_job[job_id].append((step, loss))
    return chart_build(title="Training loss", y_label="loss", width=960, height=320, series=[
        Series(name=f"#{j.id} {j.name}", points=by_job[j.id], color=PALETTE[i % len(PALETTE)])
        for i, j in enumerate(jobs)
    ])


# --- comparison ------------------------------------------------------------------------------------

def hyperparameter_keys(hyperparameters: dict) -> list[str]:
    """The form's order (rank, alpha, ... seed), then anything else alphabetically; the database's JSON
    does not keep the order they were written in."""
    from factory.services import PARAM_LABELS

    known = [k for k in PARAM_LABELS if k in hyperparameters]
    return known + sorted(set(hyperparameters) - set(known))


def hyperparameter_rows(job: FineTuneJob) -> list[tuple[str, str, object]]:
    """(key, label, value) for the job page's table."""
    from factory.services import PARAM_LABELS

    hp = job.hyperparameters or {}
    return [(k, PARAM_LABELS.get(k, k), hp[k]) for k in hyperparameter_keys(hp)]


def jobs_compare(*, jobs: list[FineTuneJob]) -> dict:
    """Rows of hyperparameters and final metrics, one column per job; rows that differ are flagged."""
    hp_keys = hyperparameter_keys({k: None for j in jobs for k in (j.hyperparameters or {})})
    finals = [job_final_metrics(j) for j in jobs]
    metric_keys = [k for k in HEADLINE_METRICS if any(k in f for f in finals)]
    metric_keys += sorted({k for f in finals for k in f} - set(metric_keys))

    def show(value) -> str:
        if value is None:
            return "—"
        if isinstance(value, list):
            return ", ".join(str(v) for v in value)
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    hp_rows = []
    for key in hp_keys:
        values = [show((j.hyperparameters or {}).get(key)) for j in jobs]
        hp_rows.append({"name": key, "values": values, "differs": len(set(values)) > 1})
    metric_rows = []
    for key in metric_keys:
        values = [f.get(key) for f in finals]
        present = [v for v in values if v is not None]
        best = None
        if present:
            best = min(present) if key in ("eval_loss", "perplexity", "loss") else max(present)
        metric_rows.append({"name": key, "values": [{"text": show(v), "best": v is not None and v == best
                                                     and len(present) > 1} for v in values]})
    return {"hp_rows": hp_rows, "metric_rows": metric_rows}


# --- model card ------------------------------------------------------------------------------------

_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*")
_BULLET = re.compile(r"^\s*[-*]\s+")


def _inline(text: str) -> str:
    """Escape, then turn `code` and **bold** into tags (the escaped text cannot smuggle tags in)."""
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        out.append(f"<code>{html.escape(m.group(1))}</code>" if m.group(1) is not None
                   else f"<strong>{html.escape(m.group(2))}</strong>")
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _cells(line: str) -> list[str]:
    body = line.strip().strip("|")
    # `\|` is an escaped pipe inside a cell (artifacts._md writes it).
    return [c.strip().replace("\x00", "|") for c in body.replace("\\|", "\x00").split("|")]


def markdown_render(text: str) -> SafeString:
    """The subset of markdown that model cards use: headings, paragraphs, lists, tables, code fences,
    inline code and bold. Every piece of text is HTML-escaped before any tag is added."""
    lines = (text or "").splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            i += 1
        elif stripped.startswith("```"):
            block = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                block.append(lines[i])
                i += 1
            i += 1
            out.append(f"<pre><code>{html.escape(chr(10).join(block))}</code></pre>")
        elif m := re.match(r"^(#{1,6})\s+(.*)$", stripped):
            level = min(6, len(m.group(1)) + 1)  # the page has its own h1
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
            i += 1
        elif stripped.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(lines[i])
                i += 1
            is_sep = [bool(re.fullmatch(r"\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?", r.strip().replace(" ", "")))
                      for r in rows]
            head = _cells(rows[0]) if len(rows) > 1 and is_sep[1] else None
            body = [r for r, sep in zip(rows[1:] if head else rows, is_sep[1:] if head else is_sep, strict=True)
                    if not sep]
            parts = ['<table class="table">']
            if head:
                parts.append("<thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead>")
            parts.append("<tbody>" + "".join(
                "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in _cells(r)) + "</tr>" for r in body) + "</tbody>")
            parts.append("</table>")
            out.append("".join(parts))
        elif re.match(r"^[-*]\s+", stripped):
            items = []
            while i < len(lines) and _BULLET.match(lines[i]):
                items.append("<li>" + _inline(_BULLET.sub("", lines[i])) + "</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(r"^(#{1,6}\s|```|\||[-*]\s)", lines[i].strip()):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return mark_safe("\n".join(out))  # noqa: S308 - built only from html.escape()d text and fixed tags


# --- optional blocks of other apps on the model page ------------------------------------------------

# The attribution app shows the model's top contributors; the serving app a paid-inference playground.
# Each is included only when its template exists, so the page works before (or without) those apps.
MODEL_PAGE_EXTRAS = {
    "contributors": ("attribution/_model_contributors.html",),
    "paid_inference": ("serving/_model_playground.html",),
}


def model_page_extras() -> dict[str, str]:
    """{slot: template name} for the extra blocks whose templates are installed."""
    found = {}
    for slot, names in MODEL_PAGE_EXTRAS.items():
        for name in names:
            try:
                get_template(name)
            except TemplateDoesNotExist:
                continue
            found[slot] = name
            break
    return found


def model_page_queryset() -> QuerySet[FineTunedModel]:
    return FineTunedModel.objects.select_related("base_model", "datanet_version__datanet", "developer", "job")


def model_page_context(*, model: FineTunedModel) -> dict:
    """The model page's context; the serving app's playground renders the same page after a run without
    JavaScript, adding its own keys."""
    extras = model_page_extras()
    return {
        "model": model, "card_html": markdown_render(model.model_card),
        "metrics": {k: v for k, v in (model.metrics or {}).items() if isinstance(v, int | float)},
        "extras": extras,
        "contributors_template": extras.get("contributors", ""),
        "paid_inference_template": extras.get("paid_inference", ""),
    }
