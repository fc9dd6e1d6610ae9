"""Small display filters for the factory's pages."""
from django import template

from factory.models import FineTuneJob

register = template.Library()

STATUS_BADGE = {
    FineTuneJob.Status.SUCCEEDED: "ok", FineTuneJob.Status.RUNNING: "", FineTuneJob.Status.QUEUED: "warn",
    FineTuneJob.Status.FAILED: "err", FineTuneJob.Status.CANCELLED: "err",
}


@register.filter
def duration(seconds) -> str:
    """4000 -> '1 h 6 min'; 75 -> '1 min 15 s'; 0.2 -> 'under 1 s'."""
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "—"
    if s < 1:
        return "under 1 s"
    s = round(s)
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


@register.filter
def status_badge(status: str) -> str:
    return STATUS_BADGE.get(status, "")


@register.filter
def metric(value) -> str:
    """Metrics to 4 significant digits; other values as they are."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—" if value is None else str(value)
    return f"{value:.4g}"


@register.filter
def lookup(mapping, key):
    try:
        return mapping.get(key)
    except AttributeError:
        return None


@register.filter
def listing(value) -> str:
    return ", ".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
