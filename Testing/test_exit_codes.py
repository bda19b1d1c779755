"""One place ends every command (``errors.run_guarded``): the message, the JSON event and the exit code of a
cancellation, a refusal, a failure described elsewhere (a server's command) and an error, with or without a result
folder at stake."""

import signal

import pytest

from MedSynLib.errors import (EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_INTERNAL, EXIT_OUT_OF_MEMORY, EXIT_UNTRUSTED,
                              DescribedError, Failure, MedSynError, Refusal, run_guarded)


class _Unfit(Refusal):
    kind = "unfit"

    def details(self) -> dict:
        return {"figures": {"dice": 0.4}}


def _run(work, writes_result=True):
    events = []
    return run_guarded(work, events.append, writes_result), events


def _raise(exc):
    def work():
        raise exc
    return work


def test_done_is_0_and_sigterm_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    assert _run(lambda: None) == (0, [])
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_cancels_like_ctrl_c(capsys):
    code, events = _run(lambda: signal.raise_signal(signal.SIGTERM))
    assert code == EXIT_CANCELLED and events == [{"event": "cancelled"}]
    assert capsys.readouterr().err == "medsyn: cancelled; nothing was written for the unfinished run\n"
    assert run_guarded(_raise(KeyboardInterrupt())) == EXIT_CANCELLED
    assert capsys.readouterr().err == "medsyn: cancelled\n"  # a command without a result folder says no more


def test_a_refusal_is_exit_code_4_with_its_figures(capsys):
    code, events = _run(_raise(_Unfit("the lungs do not fit. Fix: check the CT")))
    assert code == EXIT_UNTRUSTED
    assert events == [{"event": "error", "message": "the lungs do not fit", "fix": "check the CT", "kind": "unfit",
                       "figures": {"dice": 0.4}}]
    assert capsys.readouterr().err == "medsyn: error: the lungs do not fit\nfix: check the CT\nnothing was written\n"


@pytest.mark.parametrize("exc, code, kind", [(MedSynError("2 of 4 cases failed", "correct those rows"), EXIT_BAD_INPUT,
                                               "bad_input"),
                                              (MemoryError(), EXIT_OUT_OF_MEMORY, "out_of_memory"),
                                              (KeyError("x"), EXIT_INTERNAL, "internal")])
def test_errors_are_described_once(exc, code, kind, capsys):
    result, events = _run(_raise(exc))
    err = capsys.readouterr().err
    assert result == code and events[0]["kind"] == kind and events[0]["fix"]
    assert err.startswith("medsyn: error: ") and "Traceback" not in err
    assert err.endswith("nothing was written\n") == (code == EXIT_OUT_OF_MEMORY)


def test_a_failure_described_elsewhere_is_passed_on_as_it_was_told(capsys):
    told = "medsyn: error: the CT cannot be used: no lungs\nfix: --force runs it anyway\nnothing was written"
    code, events = _run(_raise(DescribedError(Failure(EXIT_UNTRUSTED, "the CT cannot be used: no lungs",
                                                      "--force runs it anyway", "scan_refused"), told)))
    assert code == EXIT_UNTRUSTED and events[0]["kind"] == "scan_refused"
    assert capsys.readouterr().err == told + "\n"  # not a second "nothing was written"
    code, events = _run(_raise(DescribedError(Failure(EXIT_CANCELLED, "the job was cancelled"))))
    assert code == EXIT_CANCELLED and events == []
