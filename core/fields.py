"""Exact money on every database.

Django reads a `DecimalField` on SQLite through a float with 15 significant digits (and SQLite's NUMERIC
affinity stores a big value as a double), so a wei amount such as 79047737257405776 came back as
79047737257405800 and its Merkle proof failed on-chain. `ExactDecimalField` keeps PostgreSQL's exact
`numeric` and, on SQLite, stores the value as fixed-width, zero-padded TEXT: it round-trips every digit,
and because every stored string has the same width, text comparison is numeric comparison, so filters
(`weight__gt=0`) and ordering still work. SQLite cannot add TEXT exactly, so sums go through
`exact_sum` / `exact_sums_by`, which add in Python there and in SQL on PostgreSQL.
"""
from __future__ import annotations

import decimal
from collections import defaultdict
from decimal import Decimal

from django.core import checks
from django.db import connections, models

_WIDE = decimal.Context(prec=100)
NEGATIVE_ON_SQLITE = "an exact amount cannot be negative (stored as fixed-width text on SQLite): {value}"


class ExactDecimalField(models.DecimalField):
    """A non-negative decimal stored exactly: `numeric(p, s)` on PostgreSQL, padded TEXT on SQLite."""

    def get_internal_type(self) -> str:
        # Not "DecimalField": that name makes the SQLite backend add its 15-digit float converter.
        return "ExactDecimalField"

    def db_type(self, connection) -> str:
        if connection.vendor == "sqlite":
            return "text"
        return f"numeric({self.max_digits}, {self.decimal_places})"

    def cast_db_type(self, connection) -> str:
        return self.db_type(connection)

    def _check_decimal_places_and_max_digits(self, **kwargs):
        errors = super()._check_decimal_places_and_max_digits(**kwargs)
        if self.max_digits and self.max_digits > 78:
            errors.append(checks.Error("max_digits above 78 is more than any EVM amount needs", obj=self))
        return errors

    def _sqlite_text(self, value: Decimal) -> str:
        if value < 0:
            raise ValueError(NEGATIVE_ON_SQLITE.format(value=value))
        exact = value.quantize(Decimal(1).scaleb(-self.decimal_places), context=self.context)
        whole, _, frac = format(exact, "f").partition(".")
        width = self.max_digits - self.decimal_places
        if len(whole.lstrip("0")) > width:
            raise ValueError(f"{value} has more than {width} digits before the point")
        whole = whole.rjust(width, "0")
        return f"{whole}.{frac}" if self.decimal_places else whole

    def get_db_prep_value(self, value, connection, prepared=False):
        if not prepared:
            value = self.get_prep_value(value)
        if value is None:
            return None
        if hasattr(value, "as_sql"):  # an expression
            return value
        if connection.vendor == "sqlite":
            return self._sqlite_text(value)
        return connection.ops.adapt_decimalfield_value(value, self.max_digits, self.decimal_places)

    def from_db_value(self, value, expression, connection):
        if value is None:
            return None
        if isinstance(value, float):
            # Only a SQL aggregate over the column gives a float; `exact_sum` avoids that path.
            raise TypeError("an exact amount was read through a float: use core.fields.exact_sum")
        # A wide context: a SQL sum over the column (PostgreSQL) may hold more digits than one value does.
        return _WIDE.create_decimal(str(value)).quantize(Decimal(1).scaleb(-self.decimal_places), context=_WIDE)


def _vendor(queryset) -> str:
    return connections[queryset.db].vendor


def exact_sum(queryset, field: str) -> Decimal:
    """The exact sum of `field` over `queryset` (0 when empty)."""
    if _vendor(queryset) == "sqlite":
        with decimal.localcontext(decimal.Context(prec=100)):
            total = sum(queryset.values_list(field, flat=True), Decimal(0))
        return total
    return queryset.aggregate(s=models.Sum(field))["s"] or Decimal(0)


def exact_sums_by(queryset, field: str, *, by: str | tuple[str, ...]) -> dict:
    """{value of `by` (a tuple of values when `by` is a tuple): exact sum of `field`} over `queryset`."""
    keys = (by,) if isinstance(by, str) else tuple(by)

    def key(values):
        return values[0] if isinstance(by, str) else tuple(values)

    if _vendor(queryset) == "sqlite":
        totals: dict = defaultdict(Decimal)
        with decimal.localcontext(decimal.Context(prec=100)):
            for *group, amount in queryset.values_list(*keys, field):
                totals[key(group)] += amount or 0
        return dict(totals)
    rows = queryset.values(*keys).annotate(s=models.Sum(field)).order_by()
    return {key([row[k] for k in keys]): row["s"] or Decimal(0) for row in rows}


def _raw_to_decimal(value) -> Decimal | None:
    """A value read straight from the driver: int and Decimal are exact; a float is taken at its full repr."""
    if value is None:
        return None
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value))


def convert_to_exact(app_label: str, model_name: str, field_name: str, **field_kwargs) -> list:
    """Migration operations that move a `DecimalField` to `ExactDecimalField`, keeping every stored digit.

    A plain AlterField would let SQLite copy the old column into the new TEXT column itself, and SQLite
    writes a REAL as text with 15 significant digits, so the value is read here through the driver (an
    int or a full-precision float) into a new column, which then takes the old one's name.
    """
    from django.db import migrations

    temp = f"{field_name}_exact"

    def copy(apps, schema_editor):
        model = apps.get_model(app_label, model_name)
        table = schema_editor.quote_name(model._meta.db_table)
        column = schema_editor.quote_name(model._meta.get_field(field_name).column)
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(f"SELECT id, {column} FROM {table}")  # noqa: S608 - names come from the model
            rows = cursor.fetchall()
        for pk, raw in rows:
            model.objects.filter(pk=pk).update(**{temp: _raw_to_decimal(raw)})

    nullable = {k: v for k, v in field_kwargs.items() if k != "default"}
    return [
        migrations.AddField(model_name, temp, ExactDecimalField(null=True, **nullable)),
        migrations.RunPython(copy, migrations.RunPython.noop),
        migrations.RemoveField(model_name, field_name),
        migrations.RenameField(model_name, temp, field_name),
        migrations.AlterField(model_name, field_name, ExactDecimalField(**field_kwargs)),
    ]
