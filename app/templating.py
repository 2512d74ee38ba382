"""Rendering a trigger's message template in Jinja2's sandbox.

Templates are written by tenants and rendered on our workers, so they run in
:class:`SandboxedEnvironment` (no ``__class__``/``__globals__`` escapes, no unsafe
callables), with :class:`StrictUndefined` (a misspelt variable is an error the user sees,
not an empty string delivered), autoescape off (the message is JSON-encoded by the
caller, not embedded in HTML) and budgets: the rendered text, ``range()`` items per render,
and the sizes ``*`` and ``**`` may produce. The budgets make accidents cheap; a template
that still burns CPU is bounded by the invocation's lease.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sized
from typing import Any

from jinja2 import StrictUndefined
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from app.errors import InvalidTemplate

# The message travels inside every webhook body and task message; 64 KiB is far above
# any sensible notification text and far below what would strain a broker.
MAX_MESSAGE_CHARS = 64 * 1024
# range() items one render may produce in total, nested loops included.
MAX_RANGE_ITEMS = 10_000
# ``"ab" * n`` and ``[x] * n`` may build at most this many items; ``a ** b`` keeps its
# exponent this small (9 ** 9 ** 9 would otherwise run for minutes before any output).
MAX_REPEAT_ITEMS = MAX_MESSAGE_CHARS
MAX_EXPONENT = 1024


class _BudgetedSandbox(SandboxedEnvironment):
    """The sandbox with ``*`` and ``**`` bounded (``range`` is budgeted per render)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator_: str, left: Any, right: Any) -> Any:
        """Apply ``*`` or ``**`` after checking the size it would produce.

        Raises:
            SecurityError: the result would exceed the budget.
        """
        if operator_ == "*":
            for seq, count in ((left, right), (right, left)):
                if (
                    isinstance(seq, Sized)
                    and isinstance(count, int)
                    and len(seq) * count > MAX_REPEAT_ITEMS
                ):
                    raise SecurityError(f"repetition longer than {MAX_REPEAT_ITEMS} items")
            return operator.mul(left, right)
        if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent larger than {MAX_EXPONENT}")
        return operator.pow(left, right)


_ENV = _BudgetedSandbox(autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True)


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


def render_message(source: str, context: Mapping[str, Any]) -> str:
    """Render ``source`` with ``context`` in the sandbox.

    Returns:
        The rendered message.

    Raises:
        InvalidTemplate: the template does not compile, uses an undefined variable,
            attempts something the sandbox forbids, raises any other error, or renders
            more than :data:`MAX_MESSAGE_CHARS` characters. The message says which.
    """
    # A fresh range per render: the budget is per message, not per worker process.
    variables = {**context, "range": _budgeted_range()}
    chunks: list[str] = []
    size = 0
    try:
        template = _ENV.from_string(source)
        # generate() yields as it goes, so a runaway loop stops at the bound instead of
        # building the whole string first.
        for chunk in template.generate(variables):
            size += len(chunk)
            if size > MAX_MESSAGE_CHARS:
                raise InvalidTemplate(
                    f"message template renders more than {MAX_MESSAGE_CHARS} characters"
                )
            chunks.append(chunk)
    except InvalidTemplate:
        raise
    except Exception as exc:
        # Any error at all: the template is user code, and whatever it raises (undefined
        # names, SecurityError, ZeroDivisionError, TypeError...) means this message
        # cannot be rendered, now or on a retry.
        raise InvalidTemplate(f"message template error: {type(exc).__name__}: {exc}") from exc
    return "".join(chunks)
