"""Read model instances with hand-written SQL on the request path.

Building a queryset and compiling it to SQL costs about 0.5 ms per query on the
2-core machines the benchmarks run on, five times the round trip to PostgreSQL
itself. The few reads that every recommendation request makes (API key, policy,
user, budget) use these helpers instead: the SQL is a fixed string and the row becomes
a model instance through ``Model.from_db``, as the ORM would build it.

Only models whose fields need no conversion from the database value may be read this
way: no JSON, decimal or vector fields. ``columns`` raises for any other model, so a
field of such a type added later fails loudly instead of being read wrongly.
"""

from functools import cache

from django.db import DEFAULT_DB_ALIAS, connection


@cache
def _field_names(model) -> tuple[str, ...]:
    fields = model._meta.concrete_fields
    converted = [field.name for field in fields if field.get_db_converters(connection)]
    if converted:
        raise TypeError(
            f"{model.__name__} has fields that need conversion from the database ({', '.join(converted)}); "
            "read it with the ORM instead."
        )
    return tuple(field.attname for field in fields)


@cache
def columns(model, alias: str) -> str:
    """Return the select list of every concrete column of ``model`` under the table alias ``alias``."""
    _field_names(model)
    return ", ".join(f'{alias}."{field.column}"' for field in model._meta.concrete_fields)


def instance(model, row, start: int = 0):
    """Return the ``model`` instance held in ``row`` from position ``start`` (as ``columns`` selected it)."""
    names = _field_names(model)
    return model.from_db(DEFAULT_DB_ALIAS, list(names), list(row[start:start + len(names)]))


def width(model) -> int:
    """Return how many columns ``columns(model, ...)`` selects."""
    return len(_field_names(model))


def fetch_row(sql: str, params) -> tuple | None:
    """Run ``sql`` and return its first row, or None."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()
