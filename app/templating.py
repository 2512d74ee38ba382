"""Rendering a trigger's message template in a bounded Jinja2 sandbox.

Templates are written by tenants and rendered on our workers, in the sandbox of
:mod:`app.template_sandbox`, with :class:`StrictUndefined` (a misspelt variable is an
error the user sees, not an empty string delivered) and autoescape off (the message is
JSON-encoded by the caller, not embedded in HTML).

A worker renders one template at a time, so a template must not be able to hold it for
long or exhaust its memory: one ``* * * * *`` trigger would otherwise stop every
tenant's deliveries. The sandbox bounds the size of every value a template builds and
the items its loops take (:mod:`app.template_limits`); a render is also stopped after
:data:`TEMPLATE_RENDER_TIMEOUT_S`, by ``SIGALRM`` in the main thread (where Celery's
prefork children run tasks) and by the sandbox's deadline checks everywhere else.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import types
from collections.abc import Iterator, Mapping
from typing import Any

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SecurityError

from app.errors import InvalidTemplate
from app.template_limits import MAX_MESSAGE_CHARS
from app.template_sandbox import RenderBudget, RenderTimedOut, new_environment, render_budget

__all__ = [
    "MAX_MESSAGE_CHARS",
    "MAX_RANGE_ITEMS",
    "TEMPLATE_RENDER_TIMEOUT_S",
    "compile_template",
    "render_message",
]

# A render that takes longer is stopped. Real templates render in milliseconds.
TEMPLATE_RENDER_TIMEOUT_S = 2.0
# range() items one render may produce in total, nested loops included.
MAX_RANGE_ITEMS = 10_000
# How often the alarm fires again once the deadline passed, in case the first exception
# was caught by code between the template and us.
_ALARM_REPEAT_S = 0.05

_ENV = new_environment()


def _budgeted_range() -> Any:
    remaining = MAX_RANGE_ITEMS

    def budgeted_range(*args: int) -> range:
        nonlocal remaining
        items = range(*args)
        remaining -= len(items)
        if remaining < 0:
            raise SecurityError(f"range() produced more than {MAX_RANGE_ITEMS} items")
        return items

    return budgeted_range


def _on_alarm(signum: int, frame: types.FrameType | None) -> None:
    raise RenderTimedOut


@contextlib.contextmanager
def _alarm(timeout_s: float) -> Iterator[None]:
    """Raise RenderTimedOut in this thread after ``timeout_s``, if it is the main thread.

    Only the main thread receives signals; elsewhere this does nothing and the deadline
    checks of the environment stop the render instead. A timer the caller had set is
    restored afterwards, less the time spent here.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous_handler = signal.signal(signal.SIGALRM, _on_alarm)
    previous_delay_s, previous_interval_s = signal.setitimer(
        signal.ITIMER_REAL, timeout_s, _ALARM_REPEAT_S
    )
    started = time.monotonic()
    try:
        yield
    finally:
        # The alarm may fire between the render's end and the timer being disarmed;
        # it repeats, so disarm until it stays disarmed.
        while True:
            try:
                signal.setitimer(signal.ITIMER_REAL, 0)
                break
            except RenderTimedOut:
                continue
        # None: the previous handler was not installed from Python; the default is all
        # we can put back.
        signal.signal(signal.SIGALRM, signal.SIG_DFL if previous_handler is None
                      else previous_handler)
        if previous_delay_s:
            remaining_s = previous_delay_s - (time.monotonic() - started)
            # Already due: fire it at once rather than lose it.
            signal.setitimer(signal.ITIMER_REAL, max(remaining_s, 1e-6), previous_interval_s)


def compile_template(source: str) -> None:
    """Compile ``source`` in the sandbox the workers render it in, to refuse it at save.

    Compiling does not run the template: a template that compiles may still fail to
    render (an undefined variable, a size bound), which only a run can tell.

    Raises:
        InvalidTemplate: it does not compile. The message gives the line and Jinja's
            reason for a syntax error, and only the exception's type for anything else
            (RecursionError on deep nesting, for one).
    """
    try:
        _ENV.compile(source)
    except TemplateSyntaxError as exc:
        raise InvalidTemplate(f"does not compile: line {exc.lineno}: {exc.message}") from None
    except Exception as exc:
        # Templates are user code: whatever compiling raises, every run would fail alike.
        raise InvalidTemplate(f"does not compile: {type(exc).__name__}") from None


def render_message(
    source: str, context: Mapping[str, Any], *, timeout_s: float = TEMPLATE_RENDER_TIMEOUT_S
) -> str:
    """Render ``source`` with ``context`` in the sandbox, within the module's bounds.

    Returns:
        The rendered message.

    Raises:
        InvalidTemplate: the template does not compile, uses an undefined variable,
            attempts something the sandbox forbids, exceeds a size bound, takes longer
            than ``timeout_s``, raises any other error, or renders more than
            :data:`MAX_MESSAGE_CHARS` characters. The message says which.
    """
    # A fresh range and budget per render: the budget is per message, not per process.
    variables = {**context, "range": _budgeted_range()}
    chunks: list[str] = []
    size = 0
    token = render_budget.set(RenderBudget(deadline=time.monotonic() + timeout_s))
    try:
        with _alarm(timeout_s):
            template = _ENV.from_string(source)
            # generate() yields as it goes, so a runaway loop stops at the bound instead
            # of building the whole string first.
            for chunk in template.generate(variables):
                size += len(chunk)
                if size > MAX_MESSAGE_CHARS:
                    raise InvalidTemplate(
                        f"message template renders more than {MAX_MESSAGE_CHARS} characters"
                    )
                chunks.append(chunk)
    except InvalidTemplate:
        raise
    except RenderTimedOut:
        raise InvalidTemplate(
            f"message template took longer than {timeout_s:g} s to render"
        ) from None
    except MemoryError:
        raise InvalidTemplate("message template error: MemoryError") from None
    except Exception as exc:
        # Any error at all: the template is user code, and whatever it raises (undefined
        # names, SecurityError, ZeroDivisionError, TypeError...) means this message
        # cannot be rendered, now or on a retry.
        raise InvalidTemplate(f"message template error: {type(exc).__name__}: {exc}") from exc
    finally:
        render_budget.reset(token)
    return "".join(chunks)
