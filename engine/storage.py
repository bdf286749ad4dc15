"""The engine's view of the store: transactions whose failures are the engine's errors.

The storage layer (:mod:`casework.persistence`) raises its own errors; every service of
the engine opens its transactions here, so a stale row version becomes
:class:`ConflictError` and an unreachable or locked database :class:`StoreError`, with
the database's own message (which may quote stored data) kept to the masked log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from loguru import logger
from sqlalchemy.exc import SQLAlchemyError

from .errors import CaseAltered, ConflictError, StoreError
from .persistence import DatabaseUnavailable, RowAltered, StaleVersion, Store
from .persistence.store import NestedWrite, StoreClosed
from .persistence.tx import ReadTx, WriteTx

T = TypeVar("T")


class Storage:
    """Read and write transactions on one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._finish: Callable[[WriteTx], None] | None = None

    def on_written(self, finish: Callable[[WriteTx], None]) -> None:
        """Run ``finish(tx)`` at the end of every unit of write work, inside its
        transaction (the maintained report figures: every way a case changes passes here)."""
        self._finish = finish

    @property
    def backend(self) -> str:
        return self.store.backend

    @contextmanager
    def read(self) -> Iterator[ReadTx]:
        with _mapped(), self.store.read() as tx:
            yield tx

    @contextmanager
    def write(self, *, retryable: bool = False) -> Iterator[WriteTx]:
        """One write transaction. ``retryable``: leave :class:`DatabaseUnavailable` to the
        caller, which may try again (the command pipeline with an idempotency key)."""
        with _mapped(retryable), self.store.write() as tx:
            yield tx
            if self._finish is not None:
                self._finish(tx)

    def submit(self, work: Callable[[WriteTx], T], *, retryable: bool = False) -> T:
        """Run one command's ``work(tx)`` in the store's write lane (committed with the
        commands waiting beside it on SQLite, see :meth:`Store.submit`); what it returned,
        once committed. ``retryable`` as for :meth:`write`."""
        finish = self._finish
        if finish is None:
            with _mapped(retryable):
                return self.store.submit(work)

        def finished(tx: WriteTx) -> T:
            try:
                out = work(tx)
                finish(tx)
            except BaseException:
                tx.take_touched()  # this command rolls back alone; its cases are not counted
                raise
            return out

        with _mapped(retryable):
            return self.store.submit(finished)

    def errors(self, retryable: bool = False) -> Any:
        """A context in which the storage layer's errors become the engine's (for work
        that runs on the store without a transaction of this class: reports, ledgers)."""
        return _mapped(retryable)

    def dispose(self) -> None:
        self.store.dispose()


@contextmanager
def _mapped(retryable: bool = False) -> Iterator[None]:
    try:
        yield
    except StaleVersion as e:
        raise ConflictError(e.case_id, e.expected, e.actual) from None
    except RowAltered as e:
        raise CaseAltered(e.case_id, e.why) from None
    except StoreClosed:
        raise StoreError("the engine was closed before the command could run; nothing of it "
                         "was written") from None
    except NestedWrite:
        raise StoreError("a command was started inside another command's transaction (from a "
                         "guard, an action or a hook); on SQLite it can only run after it") from None
    except DatabaseUnavailable as e:
        if retryable:
            raise
        logger.bind(case_id="-", workflow="-").warning("database unavailable: {}", first_line(e))
        raise StoreError("the database is unavailable (locked or unreachable); try again") from None
    except SQLAlchemyError as e:
        logger.bind(case_id="-", workflow="-").error("database error: {}", first_line(e))
        raise StoreError(f"the database refused the operation ({type(e).__name__})") from None


def first_line(error: BaseException) -> str:
    """A database error's own message without the lines that may quote stored data
    (PostgreSQL's DETAIL and CONTEXT, SQLAlchemy's statement and parameters)."""
    orig = getattr(error, "orig", None) or error
    text = str(orig).strip().splitlines()
    line = text[0] if text else type(orig).__name__
    return line[:200]
