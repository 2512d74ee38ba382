"""Message templates render in a bounded sandbox; every failure is an InvalidTemplate."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from app.errors import InvalidTemplate, PermanentError
from app.template_limits import MAX_LOOP_ITEMS, MAX_VALUE_SIZE
from app.templating import (
    _ENV,
    MAX_MESSAGE_CHARS,
    MAX_RANGE_ITEMS,
    TEMPLATE_RENDER_TIMEOUT_S,
    compile_template,
    render_message,
)

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
        # What the bounds must leave working.
        ("{{ 2 ** 10 }}|{{ 2 ** -1 }}|{{ 1 ** 100000 }}", "1024|0.5|1"),
        ("{{ (2 ** 4096) // 2 ** 4095 }}|{{ (-2) ** 4095 < 0 }}", "2|True"),
        ("{{ payload.count * 1000000 }}", "3000000"),
        ("{{ '%05.1f|%-4s|' % (3.14159, 'ab') }}{{ '%(team)s' % payload }}", "003.1|ab  |ops"),
        ("{{ '%s items'|format(payload.count) }}", "3 items"),
        ("{{ '{:>5}|{:.2f}|{team}'.format('ab', 2.5, team='ops') }}", "   ab|2.50|ops"),
        ("{{ 'ab'|center(6) }}|{{ 'ab'.rjust(4, '.') }}|{{ '7'.zfill(3) }}", "  ab  |..ab|007"),
        ("{{ 'a\nb'|indent(2, true) }}|{{ 'a b c'|wordwrap(3) }}", "  a\n  b|a b\nc"),
        ("{{ 'a-b'.replace('-', '+') }}|{{ 'a-b'|replace('-', '') }}", "a+b|ab"),
        ("{{ ', '.join(payload.tags) }}|{{ payload.tags|map('upper')|join('/') }}", "a, b|A/B"),
        ("{{ 'a' ~ 1 ~ payload.tags }}|{{ payload.tags + ['c'] }}",
         "a1['a', 'b']|['a', 'b', 'c']"),
        ("{{ {'x': [1, 2]}|tojson }}|{{ [1]|tojson(2) }}", '{"x": [1, 2]}|[\n  1\n]'),
        ("{% for k, v in {'a': 1}.items() %}{{ k }}={{ v }}{% endfor %}", "a=1"),
        ("{% set l = [] %}{{ l.append(1) or l }}", "[1]"),
        ("{% set ns = namespace(n=0) %}{% for t in payload.tags %}{% set ns.n = ns.n + 1 %}"
         "{% endfor %}{{ ns.n }}", "2"),
        ("{% macro m(x) %}<{{ x }}>{% endmacro %}{{ m(1) }}{% filter upper %}ok{% endfilter %}",
         "<1>OK"),
        ("{% set t %}{{ trigger.name }}{% endset %}{{ t|truncate(9, true, '', 0) }}", "nightly r"),
        ("{{ [3, 1]|sum }}|{{ [[1], [2]]|batch(1)|list|length }}", "4|2"),
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
        ("{{ cycler.__init__.__globals__ }}", "SecurityError: access to attribute"),
        ("{{ cycler.__init__.__globals__.os }}", "SecurityError: access to attribute"),
        ("{{ 'ab'.__len__() }}", "SecurityError: access to attribute '__len__'"),
        # Budgets on what one expression may build.
        ("{{ 'x' * 100000 }}", "SecurityError: repetition longer than"),
        ("{{ 2 ** 100000 }}", "SecurityError: a power larger than 4096 bits"),
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


# Each of these held a worker for minutes or allocated hundreds of megabytes before the
# first output character was counted. Each must now fail at once, naming the bound.
RUNAWAY = "x" * 60000


@pytest.mark.parametrize(
    ("source", "error"),
    [
        # Unbounded globals are gone.
        ("{{ lipsum(2000000) }}", "UndefinedError: 'lipsum' is undefined"),
        # Powers are bounded by the result's size, not the exponent alone.
        ("{{ ((9 ** 999) ** 999) ** 999 }}", "a power larger than 4096 bits"),
        ("{{ 10 ** 5000 }}", "a power larger than 4096 bits"),
        ("{{ 2 ** 4097 }}", "a power larger than 4096 bits"),
        ("{{ 2.5 ** 1000000 }}", "OverflowError"),
        ("{% set ns = namespace(n=3) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}"
         "{% endfor %}", "a product larger than 4096 bits"),
        # Widths, paddings and precisions.
        ('{{ "%0300000000d" % 1 }}', "a % format width wider than"),
        ('{{ "%.300000000f" % 1.0 }}', "a % format width wider than"),
        ('{{ "%*d" % (300000000, 1) }}', "'*' widths are not allowed"),
        ('{{ "%0300000000d"|format(1) }}', "a % format width wider than"),
        ('{{ "{:>300000000}".format("x") }}', "a format width wider than"),
        ('{{ "{:0{}}".format(1, 300000000) }}', "a format width wider than"),
        ('{{ "x"|center(3e8) }}', "center() wider than"),
        ('{{ "x"|center(300000000) }}', "center() wider than"),
        ('{{ "x"|indent(300000000) }}', "indent() wider than"),
        ('{{ "x".center(300000000) }}', "center() wider than"),
        ('{{ "x".ljust(300000000) }}', "ljust() wider than"),
        ('{{ "x".zfill(300000000) }}', "zfill() wider than"),
        ('{{ "x".expandtabs(300000000) }}', "expandtabs() wider than"),
        ('{{ (1).to_bytes(300000000, "big") }}', "to_bytes() wider than"),
        ('{{ [1]|tojson(300000000) }}', "tojson() indent wider than"),
        ('{{ [1]|batch(300000000, 0)|list }}', "batch() count larger than"),
        # One call multiplying two bounded values.
        (f'{{{{ "{RUNAWAY}".replace("x", "{RUNAWAY}") }}}}', "replace() would build"),
        (f'{{{{ "{RUNAWAY}"|replace("x", "{RUNAWAY}") }}}}', "replace() would build"),
        (f'{{{{ "{RUNAWAY}".join(["a"] * 60000) }}}}', "join() would build"),
        (f'{{{{ (["a"] * 60000)|join("{RUNAWAY}") }}}}', "join() would build"),
        (f'{{{{ "{RUNAWAY}".translate({{120: "{RUNAWAY}"}}) }}}}', "translate() would build"),
        ('{{ ("x\\n" * 30000)|indent("y" * 5000) }}', "indent() would build"),
        ('{{ "%(a)s" * 100 % {"a": "x" * 60000} }}', "% formatting would build"),
        ('{{ ([[1]] * 40000)|sum(start=[]) }}', "sum() start must be a number"),
        # Growing a value step by step, which no single check sees as large.
        ('{% set ns = namespace(s="x") %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}'
         "{% endfor %}", f"a value larger than {MAX_VALUE_SIZE}"),
        ('{% set ns = namespace(s="x") %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}'
         "{% endfor %}", f"a value larger than {MAX_VALUE_SIZE}"),
        ('{% set a = [1] * 60000 %}{% set b = [a, a, a] %}', "a value larger than"),
        ('{% set a = [1] * 60000 %}{% set b = {"x": a, "y": a, "z": a} %}', "a value larger than"),
        ('{% set l = [] %}{% for i in range(20) %}{{ l.append("x" * 60000) or "" }}{% endfor %}',
         "a value larger than"),
        ('{% set s = "x" * 60000 %}{% macro m() %}{% for i in range(100) %}{{ s }}{% endfor %}'
         "{% endmacro %}{{ m()|length }}", "a block rendering more than"),
        ('{% set s = "x" * 60000 %}{% set t %}{{ s }}{{ s }}{{ s }}{% endset %}',
         "a block rendering more than"),
        # Loops over anything, not only range().
        (f'{{% for i in "{RUNAWAY}" %}}{{% for j in "{RUNAWAY}" %}}{{% endfor %}}{{% endfor %}}',
         f"loops took more than {MAX_LOOP_ITEMS} items"),
        ('{% for i in "x" * 60000 %}{% for j in "x" * 60000 %}{% endfor %}{% endfor %}',
         f"loops took more than {MAX_LOOP_ITEMS} items"),
    ],
)
def test_a_template_that_would_run_away_is_refused_at_once(source: str, error: str) -> None:
    started = time.monotonic()
    with pytest.raises(InvalidTemplate) as caught:
        render_message(source, CONTEXT)
    assert error in caught.value.message
    assert time.monotonic() - started < 1.0


SLOW = "{% for i in range(10000) %}{% set x = i ~ i ~ i %}{% endfor %}" * 9


def test_a_render_past_its_deadline_fails_naming_the_timeout() -> None:
    with pytest.raises(InvalidTemplate, match=r"^message template took longer than 0\.001 s"):
        render_message(SLOW, CONTEXT, timeout_s=0.001)


def test_the_default_deadline_is_two_seconds() -> None:
    assert TEMPLATE_RENDER_TIMEOUT_S == 2


def test_the_alarm_stops_work_that_passes_no_check_in_the_main_thread() -> None:
    # Compiling runs no template code, so only SIGALRM can interrupt it.
    source = "{{ trigger.name }}" * 4000
    assert threading.current_thread() is threading.main_thread()
    with pytest.raises(InvalidTemplate, match="took longer than"):
        render_message(source, CONTEXT, timeout_s=0.001)


def test_a_render_outside_the_main_thread_is_stopped_by_the_deadline_checks() -> None:
    errors: list[str] = []

    def render() -> None:
        try:
            render_message(SLOW, CONTEXT, timeout_s=0.001)
        except InvalidTemplate as exc:
            errors.append(exc.message)

    worker = threading.Thread(target=render)
    worker.start()
    worker.join(10)
    assert errors == ["message template took longer than 0.001 s to render"]


def test_the_callers_alarm_handler_and_timer_are_restored() -> None:
    fired: list[int] = []

    def handler(signum: int, frame: object) -> None:
        fired.append(signum)

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        assert render_message("{{ attempt }}", CONTEXT) == "2"
        with pytest.raises(InvalidTemplate):
            render_message(SLOW, CONTEXT, timeout_s=0.001)
        assert signal.getsignal(signal.SIGALRM) is handler
        remaining_s, interval_s = signal.getitimer(signal.ITIMER_REAL)
        assert 25.0 < remaining_s <= 30.0
        assert interval_s == 0.0
        assert fired == []
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_no_alarm_of_ours_is_left_armed_after_a_render() -> None:
    # Compared with the state before: pytest-timeout may have its own alarm running.
    handler = signal.getsignal(signal.SIGALRM)
    remaining_s = signal.getitimer(signal.ITIMER_REAL)[0]
    render_message("{{ attempt }}", CONTEXT)
    with pytest.raises(InvalidTemplate):
        render_message(SLOW, CONTEXT, timeout_s=0.001)
    assert signal.getsignal(signal.SIGALRM) is handler
    assert signal.getitimer(signal.ITIMER_REAL)[0] <= remaining_s


def test_a_template_that_compiles_passes_the_save_check() -> None:
    assert compile_template("Hello {{ payload.name | upper }}") is None


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("{{ x ", "does not compile: line 1: unexpected end of template, expected 'end of print"
                  " statement'."),
        ("line one\n{% for %}", "does not compile: line 2: Expected an expression, got"
                                 " 'end of statement block'"),
        ("{{" * 100_000, "does not compile: RecursionError"),
    ],
    ids=["unclosed", "line-two", "deep-nesting"],
)
def test_a_template_that_does_not_compile_is_an_invalid_template(source: str, error: str) -> None:
    with pytest.raises(InvalidTemplate) as caught:
        compile_template(source)
    assert caught.value.message == error


def test_the_private_environment_name_still_works_for_existing_importers() -> None:
    _ENV.compile("{{ 1 }}")
