"""Message templates: a logic-less Mustache subset, within one budget."""

from __future__ import annotations

import pytest

from app.delivery.templating import (
    MAX_MESSAGE_CHARS,
    MAX_RENDER_STEPS,
    compile_template,
    render_message,
)
from app.errors import InvalidTemplate, PermanentError

CONTEXT = {
    "trigger": {"id": "0b0e7a5c-0000-4000-8000-000000000001", "name": "nightly report"},
    "invocation": "7d7c1b8e-0000-4000-8000-000000000002",
    "scheduled_for": "2026-03-07T05:00:00+00:00",
    "attempt": 2,
    "payload": {"team": "ops", "count": 3, "tags": ["a", "b"], "none": None, "empty": [],
                "on": True, "people": [{"name": "Ada"}, {"name": "Lin"}],
                "owner": {"name": "Grace", "mail": "g@example.com"}},
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("plain text", "plain text"),
        ("{{ trigger.name }} at {{ scheduled_for }}",
         "nightly report at 2026-03-07T05:00:00+00:00"),
        ("#{{attempt}} for {{payload.team}}", "#2 for ops"),
        ("{{ invocation }}", "7d7c1b8e-0000-4000-8000-000000000002"),
        # Nothing is escaped: the message is JSON-encoded by the caller.
        ("<b>&{{ payload.team }}\"", "<b>&ops\""),
        ("{{{ payload.team }}}|{{& payload.team }}", "ops|ops"),
        # Values that are not strings show as JSON.
        ("{{ payload.count }}|{{ payload.on }}|{{ payload.none }}|{{ payload.tags }}",
         '3|true|null|["a", "b"]'),
        ("{{ payload.owner }}", '{"name": "Grace", "mail": "g@example.com"}'),
        ("{{ payload.tags.1 }}|{{ payload.people.0.name }}", "b|Ada"),
        # Sections: once per item of a list, once into an object, never for false.
        ("{{#payload.tags}}[{{.}}]{{/payload.tags}}", "[a][b]"),
        ("{{# payload.people }}{{ name }};{{/ payload.people }}", "Ada;Lin;"),
        ("{{#payload.owner}}{{name}} <{{mail}}>{{/payload.owner}}", "Grace <g@example.com>"),
        ("{{#payload.on}}on{{/payload.on}}{{#payload.none}}x{{/payload.none}}", "on"),
        ("{{#payload.people}}{{name}} of {{payload.team}},{{/payload.people}}",
         "Ada of ops,Lin of ops,"),
        # Inverted sections show where a section would not.
        ("{{^payload.empty}}no items{{/payload.empty}}{{^payload.on}}off{{/payload.on}}",
         "no items"),
        ("a{{! a comment }}b", "ab"),
        ("line\n", "line\n"),
        # Jinja syntax is only text now.
        ("{% if x %}", "{% if x %}"),
    ],
)
def test_a_template_renders_the_occurrence_s_values(source: str, expected: str) -> None:
    compile_template(source)
    assert render_message(source, CONTEXT) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ ", "does not compile: line 1: a tag is never closed (a {{ without its }})"),
        ("a\n{{#payload.tags}}", "does not compile: line 2: {{#payload.tags}} is never closed"),
        ("{{/x}}", "does not compile: line 1: {{/x}} closes no section (none is open)"),
        ("{{#a}}\n{{/b}}", "does not compile: line 2: {{/b}} closes no section ({{#a}} is open)"),
        ("{{}}", "does not compile: line 1: an empty tag"),
        ("{{ x | upper }}", "does not compile: line 1: 'x | upper' is not a name"),
        ("{{{x}}", "does not compile: line 1: the braces of a tag do not match ({{{ closes "
                   "with }}})"),
    ],
)
def test_a_template_that_does_not_parse_is_refused_at_save_with_the_line(
    source: str, message: str
) -> None:
    with pytest.raises(InvalidTemplate) as refused:
        compile_template(source)
    assert refused.value.message == message
    with pytest.raises(InvalidTemplate):
        render_message(source, CONTEXT)


@pytest.mark.parametrize(
    ("source", "name"),
    [("Hello {{ recipient }}", "recipient"), ("{{ payload.missing }}", "payload.missing"),
     ("{{ payload.tags.7 }}", "payload.tags.7"), ("{{#nothing}}x{{/nothing}}", "nothing")],
)
def test_a_name_the_occurrence_lacks_is_an_error_not_an_empty_string(
    source: str, name: str
) -> None:
    compile_template(source)
    with pytest.raises(InvalidTemplate) as failed:
        render_message(source, CONTEXT)
    assert failed.value.message == f"message template error: {name!r} is undefined"
    assert isinstance(failed.value, PermanentError)


def test_a_message_longer_than_the_cap_is_refused() -> None:
    context = {"payload": {"text": "x" * 1000, "items": list(range(100))}}
    source = "{{#payload.items}}{{payload.text}}{{/payload.items}}"
    assert len(render_message("{{payload.text}}", context)) == 1000
    with pytest.raises(InvalidTemplate) as refused:
        render_message(source, context)  # 100,000 characters
    assert refused.value.message == (
        f"message template renders more than {MAX_MESSAGE_CHARS} characters")


def test_nested_sections_over_a_big_list_stop_at_the_step_budget_at_once() -> None:
    context = {"payload": list(range(5000))}
    source = "{{#payload}}{{#payload}}{{/payload}}{{/payload}}"  # 25 million items
    # A budget of steps, not of seconds: it holds whatever the machine's speed.
    with pytest.raises(InvalidTemplate) as refused:
        render_message(source, context)
    assert refused.value.message == (
        f"message template takes more than {MAX_RENDER_STEPS} steps to render")


def test_a_render_within_the_budget_is_complete() -> None:
    context = {"payload": list(range(300))}
    rendered = render_message("{{#payload}}{{.}},{{/payload}}", context)
    assert rendered == "".join(f"{n}," for n in range(300))
