"""Message templates render in a bounded sandbox; every failure is an InvalidTemplate."""

from __future__ import annotations

import pytest

from app.errors import InvalidTemplate, PermanentError
from app.templating import MAX_MESSAGE_CHARS, MAX_RANGE_ITEMS, render_message

CONTEXT = {
    "trigger": {"id": "0b0e7a5c-0000-4000-8000-000000000001", "name": "nightly report"},
    "invocation": "7d7c1b8e-0000-4000-8000-000000000002",
    "scheduled_for": "2026-03-07T05:00:00+00:00",
    "attempt": 2,
    "payload": {"team": "ops", "count": 3, "tags": ["a", "b"]},
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("plain text", "plain text"),
        ("{{ trigger.name }} at {{ scheduled_for }}",
         "nightly report at 2026-03-07T05:00:00+00:00"),
        ("#{{ attempt }} for {{ payload.team }}", "#2 for ops"),
        ("{{ invocation }}", "7d7c1b8e-0000-4000-8000-000000000002"),
        ("{{ payload.tags | join(',') }}", "a,b"),
        ("{% for t in payload.tags %}[{{ t }}]{% endfor %}", "[a][b]"),
        # Autoescape is off: the caller JSON-encodes the message, HTML escaping would
        # corrupt it.
        ("{{ '<b>&' }}", "<b>&"),
        ("{{ payload['count'] * 2 }}", "6"),
        ("{{ 'ab' * 3 }}", "ababab"),
        ("line\n", "line\n"),
    ],
)
def test_a_template_renders_with_the_occurrence_and_payload(source: str, expected: str) -> None:
    assert render_message(source, CONTEXT) == expected


@pytest.mark.parametrize(
    ("source", "error"),
    [
        # StrictUndefined: a misspelt name is an error, not an empty string.
        ("{{ paylod.team }}", "UndefinedError: 'paylod' is undefined"),
        ("{{ payload.missing.deeper }}", "UndefinedError: 'dict object' has no attribute"),
        # The sandbox blocks the classic escapes through dunder attributes.
        ("{{ payload.__class__ }}", "SecurityError: access to attribute '__class__'"),
        ("{{ ''.__class__.__mro__ }}", "SecurityError: access to attribute '__class__'"),
        ("{{ lipsum.__globals__ }}", "SecurityError: access to attribute '__globals__'"),
        ("{{ cycler.__init__.__globals__.os }}", "SecurityError: access to attribute"),
        ("{{ 'ab'.__len__() }}", "SecurityError: access to attribute '__len__'"),
        # Budgets on what one expression may build.
        ("{{ 'x' * 100000 }}", "SecurityError: repetition longer than"),
        ("{{ 2 ** 100000 }}", "SecurityError: exponent larger than"),
        (
            "{% for i in range(200) %}{% for j in range(200) %}{% endfor %}{% endfor %}",
            f"SecurityError: range() produced more than {MAX_RANGE_ITEMS} items",
        ),
        # Compile and runtime errors of any kind.
        ("{% if %}", "TemplateSyntaxError"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
    ],
)
def test_a_bad_template_is_an_invalid_template_naming_the_error(source: str, error: str) -> None:
    with pytest.raises(InvalidTemplate) as caught:
        render_message(source, CONTEXT)
    assert caught.value.message.startswith("message template error: ")
    assert error in caught.value.message


def test_an_invalid_template_is_permanent_so_it_is_not_retried() -> None:
    assert issubclass(InvalidTemplate, PermanentError)


def test_output_of_exactly_the_bound_renders() -> None:
    source = "{% for i in range(" + str(MAX_MESSAGE_CHARS // 8) + ") %}12345678{% endfor %}"
    assert len(render_message(source, CONTEXT)) == MAX_MESSAGE_CHARS


def test_output_one_character_past_the_bound_is_refused() -> None:
    source = (
        "{% for i in range(" + str(MAX_MESSAGE_CHARS // 8) + ") %}12345678{% endfor %}!"
    )
    with pytest.raises(InvalidTemplate, match=f"renders more than {MAX_MESSAGE_CHARS} char"):
        render_message(source, CONTEXT)


def test_the_range_budget_is_per_render_not_per_process() -> None:
    source = "{{ range(" + str(MAX_RANGE_ITEMS) + ") | length }}"
    assert render_message(source, CONTEXT) == str(MAX_RANGE_ITEMS)
    assert render_message(source, CONTEXT) == str(MAX_RANGE_ITEMS)
