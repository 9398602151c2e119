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


class utcago(FunctionElement):
    """The database clock minus `seconds` (a float): when something began that the caller timed on
    its own monotonic clock, written as a database time by a write that happens later anyway."""

    type = DateTime()
    inherit_cache = True
    name = "utcago"

    def __init__(self, seconds):
        from sqlalchemy import Float, literal

        super().__init__(literal(float(seconds), Float()))


@compiles(utcago)
def _ago_default(element, compiler, **kw):
    raise NotImplementedError("utcago() is defined for SQLite and PostgreSQL only")


@compiles(utcago, "sqlite")
def _ago_sqlite(element, compiler, **kw):
    seconds = compiler.process(element.clauses, **kw)
    return f"strftime('%Y-%m-%d %H:%M:%f', 'now', printf('-%.6f seconds', {seconds}))"


@compiles(utcago, "postgresql")
def _ago_postgresql(element, compiler, **kw):
    seconds = compiler.process(element.clauses, **kw)
    return f"((now() AT TIME ZONE 'utc') - make_interval(secs => {seconds}))"
