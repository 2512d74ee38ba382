"""The Jinja2 sandbox message templates render in, with every way to build a value bounded.

On top of :class:`SandboxedEnvironment` (no ``__class__``/``__globals__`` escapes, no
unsafe callables), each intercepted operator (``* ** % +``), call, filter, ``~``
concatenation, literal, block buffer and ``{{ output }}`` passes the size checks of
:mod:`app.template_limits`, and a deadline check, so a render outside the main thread
(where no SIGALRM can interrupt it) still stops. For-loops draw on a per-render item
budget. ``lipsum`` is gone from the globals.

Jinja's compile-time constant folding is off (``optimized=False``, and a finalize that
takes the context), because it would evaluate expressions without these checks.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
import operator
import re
import time
import types
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any

from jinja2 import StrictUndefined, nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Context, markup_join
from jinja2.sandbox import (
    SandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
    SecurityError,
    modifies_known_mutable,
)
from markupsafe import Markup, soft_str

from app.template_limits import (
    FILTER_CHECKS,
    MAX_ESTIMATE,
    MAX_INT_BITS,
    MAX_LOOP_ITEMS,
    MAX_REPEAT_ITEMS,
    MAX_VALUE_SIZE,
    check_estimate,
    check_power,
    check_printf,
    check_size,
    check_width,
    estimate_method,
    int_bits,
    value_size,
)


class RenderTimedOut(BaseException):
    """The render ran past its deadline.

    A BaseException, like KeyboardInterrupt, so the ``except Exception`` clauses in Jinja
    and in filters the template calls cannot swallow it.
    """


@dataclasses.dataclass
class RenderBudget:
    """What one render may still spend."""

    deadline: float
    loop_items_left: int = MAX_LOOP_ITEMS


render_budget: contextvars.ContextVar[RenderBudget | None] = contextvars.ContextVar(
    "cronbeat_template_budget", default=None
)


def check_deadline() -> None:
    budget = render_budget.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise RenderTimedOut


class _BoundedFormatterMixin:
    """``str.format`` with its widths and total size bounded."""

    _estimate = 0

    def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
        self._estimate = len(format_string)
        return super().vformat(format_string, args, kwargs)  # type: ignore[misc]

    def format_field(self, value: Any, format_spec: str) -> Any:
        check_deadline()
        # Every number in the spec may be a width or precision ("0>9", ".3f", ",").
        for number in re.findall(r"\d+", format_spec):
            self._estimate += check_width("a format width", int(number[:7]))
        self._estimate += value_size(value, MAX_ESTIMATE)
        check_estimate("str.format()", self._estimate)
        return super().format_field(value, format_spec)  # type: ignore[misc]


class _BoundedFormatter(_BoundedFormatterMixin, SandboxedFormatter):
    pass


class _BoundedEscapeFormatter(_BoundedFormatterMixin, SandboxedEscapeFormatter):
    pass


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap filter ``func``: a deadline check, an estimate for widening filters, a result check."""
    target = inspect.unwrap(func)
    signature = inspect.signature(target)
    # Jinja's async_variant filters take an eval context their sync function does not.
    passed = int(
        target is not func
        and hasattr(func, "jinja_pass_arg")
        and not hasattr(target, "jinja_pass_arg")
    )
    check = FILTER_CHECKS.get(name)

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        check_deadline()
        if check is not None:
            bound = signature.bind(*args[passed:], **kwargs)
            bound.apply_defaults()
            check(bound.arguments)
            args = (*args[:passed], *bound.args)
            kwargs = bound.kwargs
        return check_size(func(*args, **kwargs))

    return bounded


class _OutputBuffer(list[str]):
    """The output of a macro, call, filter or set block: at most MAX_VALUE_SIZE characters."""

    _chars = 0

    def _count(self, chunks: Iterable[str]) -> None:
        check_deadline()
        self._chars += sum(len(chunk) for chunk in chunks)
        if self._chars > MAX_VALUE_SIZE:
            raise SecurityError(f"a block rendering more than {MAX_VALUE_SIZE} characters")

    def append(self, chunk: str) -> None:
        self._count((chunk,))
        super().append(chunk)

    def extend(self, chunks: Iterable[str]) -> None:
        chunks = list(chunks)
        self._count(chunks)
        super().extend(chunks)


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, routing what it would build unchecked through the env."""

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.output_buffer()")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            markup = "context.eval_ctx.volatile"
        else:
            markup = repr(bool(frame.eval_ctx.autoescape))
        self.write("environment.concat_parts((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(f"), {markup})")

    def _checked(self, visit: Callable[[Any, Frame], None], node: Any, frame: Frame) -> None:
        self.write("environment.checked(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._checked(super().visit_List, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._checked(super().visit_Dict, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx == "store":  # an assignment target, not a value
            super().visit_Tuple(node, frame)
        else:
            self._checked(super().visit_Tuple, node, frame)

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        if not isinstance(node.iter, nodes.Call) or not _is_loop_budget(node.iter):
            node.iter = nodes.Call(
                nodes.EnvironmentAttribute("loop_budget"), [node.iter], [], None, None,
                lineno=node.lineno,
            )
        super().visit_For(node, frame)


def _is_loop_budget(call: nodes.Call) -> bool:
    target = call.node
    return isinstance(target, nodes.EnvironmentAttribute) and target.name == "loop_budget"


class _BoundedSandbox(SandboxedEnvironment):
    """The sandbox with every way to build a value bounded (see the module docstring)."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def call_binop(self, context: Context, operator_: str, left: Any, right: Any) -> Any:
        """Apply an intercepted operator after checking the size it would produce.

        Raises:
            SecurityError: the result would exceed a bound.
        """
        check_deadline()
        if operator_ == "*":
            for seq, count in ((left, right), (right, left)):
                if (
                    isinstance(seq, Sized)
                    and isinstance(count, int)
                    and len(seq) * count > MAX_REPEAT_ITEMS
                ):
                    raise SecurityError(f"repetition longer than {MAX_REPEAT_ITEMS} items")
            if int_bits(left) + int_bits(right) > MAX_INT_BITS:
                raise SecurityError(f"a product larger than {MAX_INT_BITS} bits")
            return check_size(operator.mul(left, right))
        if operator_ == "**":
            check_power(left, right)
            return operator.pow(left, right)
        if operator_ == "%":
            if isinstance(left, str):
                check_printf(left, right)
            return check_size(operator.mod(left, right))
        return check_size(operator.add(left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Call ``__obj`` from the template, bounding what a str/bytes/int method builds.

        Raises:
            SecurityError: the call is unsafe, or its result or the object it changed
                would exceed a bound.
        """
        check_deadline()
        estimate, args = estimate_method(__obj, args, kwargs)
        check_estimate(f"{getattr(__obj, '__name__', 'the call')}()", estimate)
        result = check_size(super().call(__context, __obj, *args, **kwargs))
        owner = getattr(__obj, "__self__", None)
        if isinstance(__obj, types.BuiltinMethodType) and modifies_known_mutable(
            owner, __obj.__name__
        ):
            check_size(owner)  # list.append and friends grow a value in place
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Return ``str.format``/``format_map`` with widths and size bounded (see Jinja's)."""
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        owner: str = value.__self__
        formatter: SandboxedFormatter
        if isinstance(owner, Markup):
            formatter = _BoundedEscapeFormatter(self, escape=owner.escape)
        else:
            formatter = _BoundedFormatter(self)
        is_format_map = value.__name__ == "format_map"

        @functools.wraps(value)
        def bounded(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                args, kwargs = (), args[0]
            return type(owner)(formatter.vformat(owner, args, kwargs))

        return bounded

    @staticmethod
    def output_buffer() -> _OutputBuffer:
        return _OutputBuffer()

    @staticmethod
    def checked(value: Any) -> Any:
        check_deadline()
        return check_size(value)

    @staticmethod
    def concat_parts(parts: tuple[Any, ...], markup: bool) -> str:
        """``a ~ b``: the parts as text, refused once they add up past MAX_VALUE_SIZE."""
        check_deadline()
        texts: list[str] = []
        chars = 0
        for part in parts:
            text = soft_str(part) if markup else str(part)
            chars += len(text)
            if chars > MAX_VALUE_SIZE:
                raise SecurityError(f"a value larger than {MAX_VALUE_SIZE} characters or items")
            texts.append(text)
        return check_size(markup_join(texts)) if markup else "".join(texts)

    @staticmethod
    def loop_budget(iterable: Iterable[Any]) -> Iterator[Any]:
        budget = render_budget.get()
        for item in iterable:
            if budget is not None:
                budget.loop_items_left -= 1
                if budget.loop_items_left < 0:
                    raise SecurityError(f"loops took more than {MAX_LOOP_ITEMS} items")
                if time.monotonic() > budget.deadline:
                    raise RenderTimedOut
            yield item


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    # Every {{ output }} passes here; taking the context also stops Jinja from folding
    # outputs to constants at compile time, unchecked.
    check_deadline()
    return check_size(value)


def new_environment() -> _BoundedSandbox:
    env = _BoundedSandbox(
        autoescape=False,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        finalize=_finalize,
        optimized=False,
    )
    # lipsum(n) writes n paragraphs: lipsum(2000000) runs for minutes in one call.
    del env.globals["lipsum"]
    env.filters = {name: _bounded_filter(name, func) for name, func in env.filters.items()}
    return env

