"""Runs the bad-input table (`tests/bad_inputs.py`) and checks `docs/reliability.md`.

CLI cases call the CLI's `main(argv)` in-process: an exception escaping `main` is the
traceback a user would see, and fails the case. Cases waiting for a fix on another branch
are `xfail(strict=True)`, so they flip to failures the moment the fix lands.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
from bad_inputs import AREAS, CASES, OUTCOMES, Case, Env, digest
from render_reliability import DOC, render

# `error: ...` (our CLIs) or `prog: error: ...` (argparse).
ERROR_LINE = re.compile(r"^(error:|python -m [\w.]+: error: )")


@pytest.fixture(scope="session")
def env(tmp_path_factory):
    return Env(tmp_path_factory.mktemp("bad_inputs"))


def _params():
    params = []
    for case in CASES:
        marks = []
        if case.fixed_on:
            marks.append(pytest.mark.xfail(strict=True, reason=f"fixed on branch {case.fixed_on}"))
        if case.integration:
            marks.append(pytest.mark.integration)
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


def _has(text: str, name) -> bool:
    return any(n in text for n in name) if isinstance(name, tuple) else name in text


def _run_cli(case: Case, call, capsys):
    try:
        code = call.main([str(a) for a in call.argv])
    except SystemExit as exit:  # argparse
        code = exit.code
    except Exception as error:
        raise AssertionError(
            f"{case.id}: traceback {type(error).__name__}: {str(error)[:300]}"
        ) from error
    out, err = capsys.readouterr()
    return code, out, err


def _check_error_line(case: Case, call, code, err) -> None:
    assert code not in (0, None), f"{case.id}: exit {code}, expected an error"
    assert "Traceback" not in err, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, f"{case.id}: no error message"
    last = lines[-1]
    assert ERROR_LINE.match(last), f"{case.id}: the last stderr line is not an error: {last!r}"
    assert sum(1 for line in lines if ERROR_LINE.match(line)) == 1, lines
    for name in call.names:
        assert _has(last, name), f"{case.id}: {name!r} not in {last!r}"
    for wrong in call.absent:
        assert wrong not in last, f"{case.id}: {wrong!r} in {last!r}"


@pytest.mark.parametrize("case", _params())
def test_bad_input(case: Case, env, tmp_path, capsys):
    call = case.build(env, tmp_path)
    before = {str(p): digest(p) for p in call.preserved}
    if call.main is not None:
        code, out, err = _run_cli(case, call, capsys)
        if case.expect == "ok":
            assert code == 0, f"{case.id}: exit {code}: {err[-2000:]}"
            call.check((out, err))
        else:
            _check_error_line(case, call, code, err)
    elif case.expect == "ok":
        call.check(call.func())
    else:
        with pytest.raises(call.error) as raised:
            call.func()
        message = str(raised.value)
        if call.one_line:
            assert "\n" not in message.strip(), f"{case.id}: a multi-line message: {message!r}"
        for name in call.names:
            assert _has(message, name), f"{case.id}: {name!r} not in {message[:2000]!r}"
        for wrong in call.absent:
            assert wrong not in message, f"{case.id}: {wrong!r} in {message[:2000]!r}"
    after = {str(p): digest(p) for p in call.preserved}
    assert after == before, f"{case.id}: preserved files changed or vanished"


def test_table_shape():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    assert len(CASES) >= 60
    assert set(Counter(case.expect for case in CASES)) == set(OUTCOMES)
    assert set(case.area for case in CASES) == set(AREAS)
    for case in CASES:
        assert case.fixed_on in (None, "core", "export", "train"), case.id
        assert case.feeds and case.command and case.expected, case.id


def test_reliability_doc_is_the_rendered_table():
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/reliability.md is out of date: run `python tests/render_reliability.py`"
    )
