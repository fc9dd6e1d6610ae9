from decimal import Decimal

from django import template

register = template.Library()
WEI = Decimal(10**18)


@register.filter
def open_from_wei(value) -> str:
    """A wei amount as OPEN, without trailing zeros (never in float)."""
    if value in (None, ""):
        return "0"
    amount = (Decimal(value) / WEI).normalize()
    return f"{amount:f}"


@register.filter
def open_amount(value) -> str:
    if value in (None, ""):
        return "0"
    return f"{Decimal(value).normalize():f}"


@register.filter
def short_hash(value: str, n: int = 10) -> str:
    value = str(value or "")
    return value if len(value) <= 2 * n + 2 else f"{value[:n + 2]}…{value[-n:]}"
