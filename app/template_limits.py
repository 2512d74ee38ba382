"""Size bounds of what a message template may build (pure: no Jinja rendering here).

A value's *size* is the characters of a string, or the items of a container counted
through the containers inside it, shared references each time they occur (printing the
value costs that much). Operations that build a big result in one C call, which no timer
interrupts, are judged before they run by an upper bound of their result
(:func:`check_estimate`); every result is then held to :data:`MAX_VALUE_SIZE`
(:func:`check_size`). :mod:`app.template_sandbox` applies these to the template's
operators, calls and filters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sized
from typing import Any

from jinja2.sandbox import SecurityError
from jinja2.utils import Namespace
from markupsafe import soft_str

# The message travels inside every webhook body and task message; 64 KiB is far above
# any sensible notification text and far below what would strain a broker.
MAX_MESSAGE_CHARS = 64 * 1024
# The largest value a template may hold: characters of a string, or items of a container
# counted through the containers inside it (a list holding one list of 1000 items 1001
# times over is 1002002). Twice the message, so building text and then truncating it
# still works; the payload (64 KiB of JSON) always fits.
MAX_VALUE_SIZE = 2 * MAX_MESSAGE_CHARS
# Upper bounds of a result are often loose (a replace() that may hit every character);
# an operation is refused before it runs only when even this is exceeded, which keeps a
# single allocation to a few megabytes. The result is then held to MAX_VALUE_SIZE.
MAX_ESTIMATE = 32 * MAX_VALUE_SIZE
# A width, padding or precision wider than the whole message can never be rendered.
MAX_WIDTH = MAX_MESSAGE_CHARS
# Items all for-loops of one render may take together: a loop over a 60000-character
# string nested in another would otherwise run 3.6e9 times.
MAX_LOOP_ITEMS = 100_000
# ``"ab" * n`` and ``[x] * n`` may build at most this many items.
MAX_REPEAT_ITEMS = MAX_MESSAGE_CHARS
# The largest integer ``*`` and ``**`` may produce, in bits (4096 bits is 1234 digits).
# Big-integer arithmetic is one C call that no timer interrupts: ((9**999)**999)**999
# would run for minutes.
MAX_INT_BITS = 4096


def value_size(value: Any, limit: int = MAX_VALUE_SIZE) -> int:
    """Return ``value``'s size (see :data:`MAX_VALUE_SIZE`), counting at most to past ``limit``.

    Shared references count each time they occur: that is what printing the value costs.
    """
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str | bytes | bytearray):
            total += len(item)
        elif isinstance(item, Mapping):
            total += len(item)
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += len(item)
            if total <= limit:
                stack.extend(item)
        elif isinstance(item, Namespace):
            stack.append(object.__getattribute__(item, "_Namespace__attrs"))
        else:
            total += 1
    return total


def nesting_depth(value: Any, limit: int = MAX_VALUE_SIZE) -> int:
    """Return how deeply containers nest in ``value`` (visiting at most ``limit`` items)."""
    deepest = 0
    stack = [(value, 0)]
    visited = 0
    while stack and visited <= limit:
        item, depth = stack.pop()
        visited += 1
        deepest = max(deepest, depth)
        if isinstance(item, Mapping):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend((child, depth + 1) for child in item)
    return deepest


def check_size(value: Any) -> Any:
    """Return ``value`` if it is within :data:`MAX_VALUE_SIZE`.

    Raises:
        SecurityError: it is larger.
    """
    if value_size(value) > MAX_VALUE_SIZE:
        raise SecurityError(f"a value larger than {MAX_VALUE_SIZE} characters or items")
    return value


def check_estimate(what: str, estimate: int) -> None:
    if estimate > MAX_ESTIMATE:
        raise SecurityError(f"{what} would build more than {MAX_ESTIMATE} characters")


def check_width(what: str, width: Any) -> int:
    if isinstance(width, int | float) and not isinstance(width, bool) and width > MAX_WIDTH:
        raise SecurityError(f"{what} wider than {MAX_WIDTH}")
    return int(width) if isinstance(width, int | float) and width > 0 else 0


# printf-style conversions: %% or %(key)flags width .precision length. A mapping key
# cut short at an inner ")" only makes this see more widths than Python does, never fewer.
_PRINTF_SPEC = re.compile(r"%(?:%|(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d*))?)")


def check_printf(fmt: str, args: Any) -> None:
    """Refuse ``fmt % args`` if its widths or its result could be too large.

    Raises:
        SecurityError: a ``*`` or too large width or precision, or a too large result.
    """
    widths = 0
    conversions = 0
    for match in _PRINTF_SPEC.finditer(fmt):
        conversions += 1
        for number in match.groups():
            if number == "*":
                raise SecurityError("'*' widths are not allowed in % formatting")
            if number:
                widths += check_width("a % format width", int(number[:7]))
    # A %(key)s may repeat one big argument any number of times.
    check_estimate("% formatting", len(fmt) + widths + conversions * value_size(args, MAX_ESTIMATE))


def int_bits(value: Any) -> int:
    return value.bit_length() if isinstance(value, int) else 0


def check_power(left: Any, right: Any) -> None:
    """Refuse an integer ``left ** right`` of more than :data:`MAX_INT_BITS` bits.

    Raises:
        SecurityError: it would be larger (judged before computing it).
    """
    # left ** right has right * log2|left| bits, give or take one. Floats need no check:
    # they overflow at once (OverflowError), and negative exponents give floats.
    if (
        isinstance(left, int)
        and isinstance(right, int)
        and abs(left) > 1
        and right * math.log2(abs(left)) > MAX_INT_BITS
    ):
        raise SecurityError(f"a power larger than {MAX_INT_BITS} bits")


def _arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str,
         default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _estimate_padding(name: str, s: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
                      ) -> int:
    return len(s) + check_width(f"{name}()", _arg(args, kwargs, 0, "width", 0))


def _estimate_expandtabs(s: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    tab = "\t" if isinstance(s, str) else b"\t"
    tabsize = check_width("expandtabs()", _arg(args, kwargs, 0, "tabsize", 8))
    return len(s) + s.count(tab) * tabsize


def _estimate_replace(s: Any, old: Any, new: Any, count: Any) -> int:
    if not isinstance(old, str | bytes) or not isinstance(new, str | bytes):
        return len(s)
    hits = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * max(0, len(new) - len(old))


def _estimate_join(separator: Any, items: Iterable[Any]) -> int:
    parts = list(items)
    return len(separator) * max(0, len(parts) - 1) + value_size(parts, MAX_ESTIMATE)


def _estimate_translate(s: Any, table: Any) -> int:
    replacements = table.values() if isinstance(table, Mapping) else table
    longest = 1
    if isinstance(replacements, Iterable) and not isinstance(table, bytes):
        longest = max((len(r) for r in replacements if isinstance(r, str | bytes)), default=1)
    return len(s) * longest


def estimate_method(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
                     ) -> tuple[int, tuple[Any, ...]]:
    """Return an upper bound of a str/bytes/int method's result, and the args to call with.

    ``join`` may be given a generator; it is drained here and the items passed on.
    """
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if isinstance(owner, int) and name == "to_bytes":
        return check_width("to_bytes()", _arg(args, kwargs, 0, "length", 1)), args
    if not isinstance(owner, str | bytes):
        return 0, args
    if name in ("center", "ljust", "rjust", "zfill"):
        return _estimate_padding(name, owner, args, kwargs), args
    if name == "expandtabs":
        return _estimate_expandtabs(owner, args, kwargs), args
    if name == "replace":
        return _estimate_replace(owner, _arg(args, kwargs, 0, "old"),
                                 _arg(args, kwargs, 1, "new"),
                                 _arg(args, kwargs, 2, "count", -1)), args
    if name == "join" and args:
        items = tuple(args[0]) if not isinstance(args[0], Sized) else args[0]
        return _estimate_join(owner, items), (items, *args[1:])
    if name == "translate" and args:
        return _estimate_translate(owner, args[0]), args
    if name == "encode":
        return 4 * len(owner) + 4, args
    return 0, args


def _check_center_filter(a: dict[str, Any]) -> None:
    check_width("center()", a["width"])


def _check_indent_filter(a: dict[str, Any]) -> None:
    width = a["width"]
    per_line = len(width) if isinstance(width, str) else check_width("indent()", width)
    text = soft_str(a["s"])
    check_estimate("indent()", len(text) + (text.count("\n") + 1) * per_line)


def _check_wordwrap_filter(a: dict[str, Any]) -> None:
    text = soft_str(a["s"])
    wrap = len(a["wrapstring"]) if isinstance(a["wrapstring"], str) else 2
    width = a["width"] if isinstance(a["width"], int) and a["width"] > 0 else 1
    # A line holds at least about half its width unless a newline ends it earlier.
    lines = min(len(text), 2 * len(text) // width + text.count("\n")) + 1
    check_estimate("wordwrap()", len(text) + lines * wrap)


def _check_format_filter(a: dict[str, Any]) -> None:
    check_printf(soft_str(a["value"]), (a["args"], a["kwargs"]))


def _check_replace_filter(a: dict[str, Any]) -> None:
    s = soft_str(a["s"])
    estimate = _estimate_replace(s, soft_str(a["old"]), soft_str(a["new"]), a["count"])
    check_estimate("replace()", estimate)


def _check_join_filter(a: dict[str, Any]) -> None:
    # Drained once here and handed on as a list: value may be a generator.
    a["value"] = items = list(a["value"])
    check_estimate("join()", _estimate_join(soft_str(a["d"]), items))


def _check_count_filter(what: str, key: str) -> Callable[[dict[str, Any]], None]:
    def check(a: dict[str, Any]) -> None:
        count = a[key]
        if isinstance(count, int) and count > MAX_VALUE_SIZE:
            raise SecurityError(f"{what}() count larger than {MAX_VALUE_SIZE}")

    return check


def _check_tojson_filter(a: dict[str, Any]) -> None:
    indent = check_width("tojson() indent", a["indent"] or 0)
    value = a["value"]
    # \uXXXX\uXXXX escapes are 12 characters; each line is indented indent * depth.
    check_estimate("tojson()",
                    value_size(value, MAX_ESTIMATE) * (12 + indent * nesting_depth(value)))


def _check_pprint_filter(a: dict[str, Any]) -> None:
    value = a["value"]
    check_estimate("pprint()", value_size(value, MAX_ESTIMATE) * (12 + nesting_depth(value)))


def _check_sum_filter(a: dict[str, Any]) -> None:
    # sum() of lists copies the growing total at each step: quadratic, in one C call.
    if not isinstance(a["start"], int | float):
        raise SecurityError("sum() start must be a number")


FILTER_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "center": _check_center_filter,
    "indent": _check_indent_filter,
    "wordwrap": _check_wordwrap_filter,
    "format": _check_format_filter,
    "replace": _check_replace_filter,
    "join": _check_join_filter,
    "batch": _check_count_filter("batch", "linecount"),
    "slice": _check_count_filter("slice", "slices"),
    "tojson": _check_tojson_filter,
    "pprint": _check_pprint_filter,
    "sum": _check_sum_filter,
}
