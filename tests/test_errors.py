"""errors.py: one line and exit 2 for a user's mistake; the whole cause with SEGMENTATION_DEBUG=1."""

import os
import signal
import time
import warnings
from pathlib import Path

import pytest

from errors import Notice, UserError, interrupt_quietly_while_starting, run_cli, user_errors


def failing_main(argv):
    with user_errors("--data photos"):
        try:
            raise OSError("disk on fire")
        except OSError as low_level:
            raise ValueError("photos/a.png holds values [7] outside the 3 classes") from low_level


def test_library_errors_become_one_line_naming_the_option(capsys, monkeypatch):
    monkeypatch.delenv("SEGMENTATION_DEBUG", raising=False)
    assert run_cli(failing_main, []) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "error: --data photos: photos/a.png holds values [7] outside the 3 classes"
    assert "Traceback" not in err and "disk on fire" not in err
    assert "SEGMENTATION_DEBUG=1" in err


def test_debug_variable_prints_the_whole_chain_of_causes(capsys, monkeypatch):
    monkeypatch.setenv("SEGMENTATION_DEBUG", "1")
    assert run_cli(failing_main, []) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "OSError: disk on fire" in err and "ValueError: photos/a.png" in err
    assert err.rstrip().splitlines()[-1] == "error: --data photos: photos/a.png holds values [7] outside the 3 classes"


def test_other_exceptions_are_not_translated():
    with pytest.raises(KeyError):
        with user_errors("--data photos"):
            raise KeyError("a bug, not a user's mistake")


def test_ctrl_c_exits_130(capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    assert run_cli(interrupted, []) == 130
    assert "interrupted" in capsys.readouterr().err


def test_os_errors_name_their_file(capsys):
    def missing(argv):
        with user_errors("--model"):
            open("/nonexistent/model.keras")

    assert run_cli(missing, []) == 2
    assert "error: --model: /nonexistent/model.keras: No such file or directory" in capsys.readouterr().err


def test_user_error_exit_code_is_two():
    assert UserError("x").exit_code == 2


def test_notices_print_as_one_line_without_the_source(capsys, monkeypatch):
    monkeypatch.delenv("SEGMENTATION_DEBUG", raising=False)

    def skipping(argv):
        warnings.warn("skipping photos/a.jpg: it has no mask in masks", Notice)

    show_before = warnings.showwarning
    assert run_cli(skipping, []) == 0
    assert capsys.readouterr().err == "warning: skipping photos/a.jpg: it has no mask in masks\n"
    assert warnings.showwarning is show_before


def test_ctrl_c_while_starting_exits_130_in_one_line_and_run_cli_restores_keyboard_interrupt(capsys):
    before = signal.getsignal(signal.SIGINT)
    try:
        interrupt_quietly_while_starting()
        with pytest.raises(SystemExit) as stopped:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs at the next bytecode; this never finishes
        assert stopped.value.code == 130 and capsys.readouterr().err == "\ninterrupted\n"
        assert run_cli(lambda argv: 0, []) == 0
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


LIGHT_MODULES = {"__future__", "argparse", "collections", "concurrent.futures", "csv", "dataclasses", "errors", "io",
                 "os", "pathlib", "sys", "tempfile", "time", "typing", "warnings"}


@pytest.mark.parametrize("script", ["train_unet.py", "train_mobilenet_unet.py", "evaluate.py", "predict.py", "export.py"])
def test_each_script_quiets_ctrl_c_before_importing_tensorflow(script):
    source = (Path(__file__).parent.parent / script).read_text()
    before_the_call = source[:source.index('if __name__ == "__main__":  # run as a script, not imported by the tests\n'
                                           "    interrupt_quietly_while_starting()\n")]
    imported = {line.split()[1] for line in before_the_call.splitlines() if line.startswith(("import ", "from "))}
    assert "errors" in imported and imported <= LIGHT_MODULES
