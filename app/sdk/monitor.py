"""``@monitor_prediction``: a serving function's calls as prediction events.

Each call of a decorated function (plain or ``async def``) is timed to completion and sent
through a :class:`~mlpulse.sdk.producer.Telemetry` with its status, prediction and the
segment, features and event id drawn from its arguments; :func:`last_event_id` gives that
id back for the call's feedback::

    @monitor_prediction(model="fraud", version="v3", telemetry=telemetry,
                        segment=lambda request: {"region": request.region})
    async def predict(request): ...           # plain functions too

    result = await predict(request)
    telemetry.feedback(model="fraud", event_id=last_event_id(), label=True,
                       outcomes={"converted": True})
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar, cast

from .producer import Telemetry, default_telemetry

__all__ = ["last_event_id", "monitor_prediction"]

log = logging.getLogger("mlpulse.sdk")

P = ParamSpec("P")
R = TypeVar("R")

_event_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mlpulse_event_id", default=None)


def last_event_id() -> str | None:
    """The event id of the latest ``@monitor_prediction`` call in this context: inside the
    decorated function, its own call's; after it returns (or raises), in the caller's
    thread or asyncio task, that call's. Send it back with :meth:`Telemetry.feedback`.

    >>> @monitor_prediction(model="m", telemetry=Telemetry.disabled(),
    ...                     event_id=lambda request_id: request_id)
    ... def predict(request_id: str) -> int:
    ...     assert last_event_id() == request_id
    ...     return 1
    >>> predict("req-42"), last_event_id()
    (1, 'req-42')
    """
    return _event_id.get()


def monitor_prediction(
    *, model: str, version: str = "unknown", telemetry: Telemetry | None = None,
    confidence: Callable[[Any], float | None] | None = None,
    prediction: Callable[[Any], Any] | None = None,
    segment: Mapping[str, str] | Callable[..., Mapping[str, str] | None] | None = None,
    features: Callable[..., Mapping[str, Any] | None] | None = None,
    event_id: Callable[..., str] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: log latency, status (error type on exceptions) and the returned prediction
    of each call, of a plain function or an ``async def`` one (timed to completion).

    * ``telemetry`` defaults to :func:`default_telemetry`, looked up at the first call;
    * ``confidence`` and ``prediction`` extract them from the result (the default
      prediction: the result itself if it is a number, string or boolean);
    * ``segment``: the call's slice, static (``{"region": "eu"}``) or a callable of the
      call's arguments; ``features``: a callable of the call's arguments;
    * ``event_id``: a callable of the call's arguments (e.g. your request id); by default a
      fresh id. Either way :func:`last_event_id` gives it, to send feedback later.

    A callable that raises is skipped (the field is left out, the call goes on).

    >>> @monitor_prediction(model="fraud", version="v3", telemetry=Telemetry.disabled(),
    ...                     features=lambda x: {"x": x}, segment={"region": "eu"})
    ... def predict(x: float) -> float:
    ...     return x * 2
    >>> predict(2.0)
    4.0
    """

    def fields(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"model": model, "model_version": version}
        for name, source in (("segment", segment), ("features", features)):
            if source is None:
                continue
            value = _call(source, args, kwargs) if callable(source) else source
            if value:
                out[name] = dict(value)
        return out

    def log(sink: Telemetry, base: dict[str, Any], started: float, result: Any,
            error: BaseException | None) -> None:
        latency_ms = (time.perf_counter() - started) * 1000
        if error is not None:
            sink.log_prediction(**base, status="error", error_type=type(error).__name__,
                                latency_ms=latency_ms)
            return
        predicted = (_call(prediction, (result,), {}) if prediction is not None else
                     result if isinstance(result, (int, float, str, bool)) else None)
        sink.log_prediction(**base, latency_ms=latency_ms, prediction=predicted,
                            confidence=_call(confidence, (result,), {}) if confidence else None)

    def start(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Telemetry, dict[str, Any]]:
        sink = telemetry or default_telemetry()
        base = fields(args, kwargs)
        given = _call(event_id, args, kwargs) if event_id is not None else None
        base["event_id"] = str(given) if given else sink.new_event_id()
        _event_id.set(base["event_id"])
        return sink, base

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                sink, base = start(args, kwargs)
                started = time.perf_counter()
                try:
                    result = await func(*args, **kwargs)
                except Exception as exc:
                    log(sink, base, started, None, exc)
                    raise
                log(sink, base, started, result, None)
                return result

            return cast(Callable[P, R], run_async)

        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            sink, base = start(args, kwargs)
            started = time.perf_counter()
            try:
                result = func(*args, **kwargs)
            except Exception as exc:
                log(sink, base, started, None, exc)
                raise
            log(sink, base, started, result, None)
            return result

        return run

    return decorate


def _call(source: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``source(*args, **kwargs)``, or None if it raises (telemetry must not break a call)."""
    try:
        return source(*args, **kwargs)
    except Exception:   # the user's extractor: the call itself goes on
        log.warning("mlpulse: a monitor_prediction extractor failed", exc_info=True)
        return None
