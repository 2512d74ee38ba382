"""Message templates: a logic-less Mustache subset, rendered within one budget (pure).

A trigger's ``message_template`` is text with tags that read the occurrence's values:

* ``{{ name }}``, ``{{ payload.team }}``: a value (dotted names walk into objects).
  Strings show as they are; numbers, booleans, null, lists and objects as JSON. Nothing
  is escaped: the message travels JSON-encoded inside the body, never as HTML.
  ``{{{ name }}}`` and ``{{& name }}`` are the same thing.
* ``{{# name }}...{{/ name }}``: a section. Shown once if the value is true or an object
  (whose keys it may then read directly), once per item if it is a non-empty list
  (``{{ . }}`` is the item), and not at all if it is false, null, empty or zero.
* ``{{^ name }}...{{/ name }}``: the inverse, shown only where a section would not be.
* ``{{! a comment }}``: left out.

A name that is not there is an error the user sees (``message template error:
'recipient' is undefined``), not an empty string delivered. There are no partials, no
lambdas, no delimiter changes and no code: a template cannot loop but over the values
it is given, so one budget bounds every render: at most :data:`MAX_MESSAGE_CHARS`
characters out, and at most :data:`MAX_RENDER_STEPS` tags and sections visited.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from app.errors import InvalidTemplate

__all__ = ["MAX_MESSAGE_CHARS", "MAX_RENDER_STEPS", "compile_template", "render_message"]

#: The message travels inside every webhook body and task message; 64 KiB is far above
#: any sensible notification text and far below what would strain a broker.
MAX_MESSAGE_CHARS = 64 * 1024
#: Tags, text pieces and section items one render may visit: a section over a list
#: nested in another over the same list is a square; this bounds the work, whatever the
#: payload, to a few milliseconds.
MAX_RENDER_STEPS = 100_000

_TAG = re.compile(r"\{\{(\{)?\s*([#^/!&]?)\s*(.*?)\s*(\})?\}\}", re.DOTALL)
_NAME = re.compile(r"\.|[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*")


@dataclasses.dataclass(frozen=True)
class _Text:
    text: str


@dataclasses.dataclass(frozen=True)
class _Value:
    name: str
    line: int


@dataclasses.dataclass(frozen=True)
class _Section:
    name: str
    inverted: bool
    body: tuple[_Text | _Value | _Section, ...]
    line: int


_Node = _Text | _Value | _Section


def _parse(source: str) -> tuple[_Node, ...]:
    """Parse ``source``; raises InvalidTemplate with the line of the first problem."""
    stack: list[tuple[str, bool, int, list[_Node]]] = []
    nodes: list[_Node] = []
    position = 0
    for match in _TAG.finditer(source):
        line = source.count("\n", 0, match.start()) + 1
        if match.start() > position:
            nodes.append(_text(source, position, match.start()))
        position = match.end()
        triple_open, sigil, name, triple_close = match.groups()
        if sigil == "!":
            continue
        if bool(triple_open) != bool(triple_close) or (triple_open and sigil):
            raise InvalidTemplate(f"does not compile: line {line}: the braces of a tag do "
                                  "not match ({{{ closes with }}})")
        if not _NAME.fullmatch(name):
            what = f"{name!r} is not a name" if name else "an empty tag"
            raise InvalidTemplate(f"does not compile: line {line}: {what}")
        if sigil in ("#", "^"):
            stack.append((name, sigil == "^", line, nodes))
            nodes = []
        elif sigil == "/":
            if not stack or stack[-1][0] != name:
                opened = f"{{{{#{stack[-1][0]}}}}} is open" if stack else "none is open"
                raise InvalidTemplate(f"does not compile: line {line}: {{{{/{name}}}}} "
                                      f"closes no section ({opened})")
            opened_name, inverted, opened_line, outer = stack.pop()
            outer.append(_Section(opened_name, inverted, tuple(nodes), opened_line))
            nodes = outer
        else:  # "" or "&"
            nodes.append(_Value(name, line))
    if stack:
        name, _, line, _ = stack[-1]
        raise InvalidTemplate(f"does not compile: line {line}: {{{{#{name}}}}} is never "
                              "closed")
    if position < len(source):
        nodes.append(_text(source, position, len(source)))
    return tuple(nodes)


def _text(source: str, start: int, end: int) -> _Text:
    # Text between tags holding "{{" is a tag that never closes.
    opened = source.find("{{", start, end)
    if opened >= 0:
        line = source.count("\n", 0, opened) + 1
        raise InvalidTemplate(f"does not compile: line {line}: a tag is never closed "
                              "(a {{ without its }})")
    return _Text(source[start:end])


class _Undefined(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class _Render:
    """One render: the output so far and what is left of the budget."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_RENDER_STEPS:
            raise InvalidTemplate(
                f"message template takes more than {MAX_RENDER_STEPS} steps to render")

    def emit(self, text: str) -> None:
        self.size += len(text)
        if self.size > MAX_MESSAGE_CHARS:
            raise InvalidTemplate(
                f"message template renders more than {MAX_MESSAGE_CHARS} characters")
        self.parts.append(text)

    def nodes(self, nodes: Sequence[_Node], scopes: list[Any]) -> None:
        for node in nodes:
            self.step()
            if isinstance(node, _Text):
                self.emit(node.text)
            elif isinstance(node, _Value):
                self.emit(_shown(_lookup(node.name, scopes)))
            else:
                self.section(node, scopes)

    def section(self, node: _Section, scopes: list[Any]) -> None:
        value = _lookup(node.name, scopes)
        shown = bool(value)
        if node.inverted:
            if not shown:
                self.nodes(node.body, scopes)
            return
        if not shown:
            return
        items = value if isinstance(value, list) else [value]
        for item in items:
            self.step()
            self.nodes(node.body, [*scopes, item])


def _lookup(name: str, scopes: list[Any]) -> Any:
    if name == ".":
        return scopes[-1]
    first, *rest = name.split(".")
    for scope in reversed(scopes):
        if isinstance(scope, Mapping) and first in scope:
            value = scope[first]
            break
    else:
        raise _Undefined(first)
    walked = first
    for part in rest:
        walked += f".{part}"
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise _Undefined(walked)
    return value


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def compile_template(source: str) -> None:
    """Check ``source`` at save, as the workers will parse it.

    Parsing does not render it: a template that parses may still fail at render (a name
    the occurrence lacks, the budget), which only a run can tell.

    Raises:
        InvalidTemplate: it does not parse; the message gives the line and the reason.
    """
    _parse(source)


def render_message(source: str, context: Mapping[str, Any]) -> str:
    """Render ``source`` with the occurrence's values ``context``, within the budget.

    Returns:
        The rendered message.

    Raises:
        InvalidTemplate: the template does not parse, names a value the occurrence does
            not have, or goes past :data:`MAX_MESSAGE_CHARS` or :data:`MAX_RENDER_STEPS`.
            The message says which.
    """
    render = _Render()
    try:
        render.nodes(_parse(source), [context])
    except _Undefined as exc:
        raise InvalidTemplate(f"message template error: {exc.name!r} is undefined") from None
    return "".join(render.parts)
