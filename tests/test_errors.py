"""errors.py: one line and exit 2 for a user's mistake; the whole cause with SEGMENTATION_DEBUG=1."""

import warnings

import pytest

from errors import Notice, UserError, run_cli, user_errors


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
