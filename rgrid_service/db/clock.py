"""`utcnow()`: the database clock in SQL, with sub-second precision on every backend.

SQLite's CURRENT_TIMESTAMP only has whole seconds, too coarse for leases and dispatch timings.
"""
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import DateTime


class utcnow(FunctionElement):
    type = DateTime()
    inherit_cache = True
    name = "utcnow"


@compiles(utcnow)
def _default(element, compiler, **kw):
    return "CURRENT_TIMESTAMP"


@compiles(utcnow, "sqlite")
def _sqlite(element, compiler, **kw):
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


@compiles(utcnow, "postgresql")
def _postgresql(element, compiler, **kw):
    return "(now() AT TIME ZONE 'utc')"
