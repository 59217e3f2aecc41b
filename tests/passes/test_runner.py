"""The pass runner: results by name, one timed debug line per pass, the failing pass named, lint between passes."""

import logging

import pytest

from only_train_once.passes import LINT_ENV, Pass, run_passes


class Failure(ValueError):
    """A library-specific error type the runner must let through unchanged."""


def _append(letter):
    def run(target):
        target.append(letter)
        return len(target)
    return run


def _fail(target):
    raise Failure("bad input: fix it")


PASSES = (Pass("first", _append("a"), "toy"), Pass("second", _append("b"), "toy"))


def test_passes_run_in_order_and_results_are_kept_by_name():
    target = []
    results = run_passes(PASSES, target)
    assert target == ["a", "b"]
    assert results == {"first": 1, "second": 2}


def test_each_pass_logs_one_debug_line_with_its_time(caplog):
    with caplog.at_level(logging.DEBUG, logger="only_train_once.passes.runner"):
        run_passes(PASSES, [])
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("pass first: ") and lines[0].endswith(" ms")
    assert lines[1].startswith("pass second: ")


def test_a_failing_pass_keeps_its_exception_type_and_message_and_is_named():
    target = []
    with pytest.raises(Failure) as caught:
        run_passes(PASSES[:1] + (Pass("broken", _fail, "toy"),) + PASSES[1:], target)
    assert caught.value.args == ("bad input: fix it",)
    assert target == ["a"]  # the passes after the failing one did not run
    assert any("'broken'" in note for note in caught.value.__notes__)


@pytest.mark.parametrize("setting, expected", [("1", 2), ("0", 0), ("", 0)])
def test_lint_runs_after_every_pass_only_when_enabled(monkeypatch, setting, expected):
    monkeypatch.setenv(LINT_ENV, setting)
    calls = []
    run_passes(PASSES, [], lint=lambda: calls.append(1))
    assert len(calls) == expected


def test_a_lint_failure_names_the_pass_that_broke_the_graph(monkeypatch):
    monkeypatch.setenv(LINT_ENV, "1")
    target = []

    def lint():
        if "b" in target:
            raise AssertionError("invariant broken")

    with pytest.raises(AssertionError, match="invariant broken") as caught:
        run_passes(PASSES, target, lint=lint)
    assert any("after the pass 'second'" in note for note in caught.value.__notes__)
