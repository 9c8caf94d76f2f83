"""How Remedy wraps plain functions as Prefect tasks: retry transient I/O failures, never cache."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import httpx
from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from sqlalchemy.exc import DBAPIError, OperationalError

P = ParamSpec("P")
R = TypeVar("R")

TRANSIENT = (OperationalError, httpx.TransportError, ConnectionError, TimeoutError)


def is_transient(exc: BaseException) -> bool:
    """Tell whether an error is worth retrying (a connection or lock problem, not a refusal)."""
    if isinstance(exc, TRANSIENT):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code >= 500


def _retry_transient(_task: Task[Any, Any], _run: TaskRun, state: State[Any]) -> bool:
    try:
        state.result(raise_on_failure=True)
    except BaseException as exc:
        return is_transient(exc)
    return False


def remedy_task(fn: Callable[P, R], *, name: str, retries: int = 4) -> Task[P, R]:
    """Wrap fn as a task that retries transient failures with backoff and caches nothing.

    Every task is a unit of work that is safe to repeat (idempotent by key), and a step re-runs
    from the top when it resumes: a cached result would hide what the store says now.
    """
    return task(
        name=name,
        retries=retries,
        retry_delay_seconds=[1.0, 4.0, 15.0, 60.0][:retries],
        retry_condition_fn=_retry_transient,
        cache_policy=NO_CACHE,
        persist_result=False,
        log_prints=False,
    )(fn)
