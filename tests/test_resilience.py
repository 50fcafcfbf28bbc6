"""Long runs: SIGTERM and kill -9 leave a run that --resume finishes; extension; two workers; determinism."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import pytest

import train_unet
from conftest import REPO, schedule_config
from rundir import RunDir
from test_training import SMALL_UNET, check_run_folder, read_history, saved_model

LONG = ["--data", "synthetic", "--image-size", "64", "--limit", "64", "--batch-size", "8", "--seed", "1",
        "--val-examples", "8", "--repeat", "1"] + SMALL_UNET
QUICK = ["--data", "synthetic", "--image-size", "64", "--limit", "16", "--batch-size", "8", "--seed", "1",
         "--repeat", "1"] + SMALL_UNET


def start(argv, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "train_unet.py", *map(str, argv)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def wait_for_epochs(run, process, epochs: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = run / "state.json"
        if state.exists() and json.loads(state.read_text())["completed_epochs"] >= epochs:
            return
        if process.poll() is not None:
            raise AssertionError(f"training ended early: {process.communicate()[1][-2000:]}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError("no epoch finished in time")


def consistent(run) -> int:
    """The run folder's finished epochs, checked against history.csv and the saved model."""
    completed = json.loads((run / "state.json").read_text())["completed_epochs"]
    assert [int(row["epoch"]) for row in read_history(run)][:completed] == list(range(1, completed + 1))
    # the model --resume loads (a kill may land between counting an epoch and renaming its models)
    steps = int(keras.models.load_model(RunDir(run).committed_file("last.keras")).optimizer.iterations.numpy())
    assert steps == completed * 8  # 64 examples in batches of 8: the model is that of the last finished epoch
    return completed


@pytest.mark.slow
def test_sigterm_stops_at_the_next_batch_and_resume_finishes(tmp_path):
    run = tmp_path / "run"
    process = start(LONG + ["--epochs", "6", "--output", run])
    wait_for_epochs(run, process, 1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143
    assert "stopped by SIGTERM" in stderr and f"continue with --resume {run}" in stderr and "Traceback" not in stderr
    assert 1 <= consistent(run) < 6 and not (run / "metrics.json").exists()
    assert train_unet.main(["--resume", str(run)]) == 0
    check_run_folder(run, epochs=6, test_images=64)


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_reaches_the_planned_count(tmp_path):
    run = tmp_path / "run"
    process = start(LONG + ["--epochs", "6", "--output", run])
    wait_for_epochs(run, process, 1)
    time.sleep(0.3)  # into the next epoch, or its saves
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    completed = consistent(run)
    (run / ".last.tmp-99999.keras").write_bytes(b"half a zip")  # what a kill during a save leaves
    assert train_unet.main(["--resume", str(run)]) == 0
    check_run_folder(run, epochs=6, test_images=64)  # also: no temporary file left
    assert completed < 6


def test_resume_extends_a_finished_run_and_its_schedule(tmp_path):
    run = tmp_path / "run"
    assert train_unet.main(QUICK + ["--epochs", "2", "--output", str(run)]) == 0
    assert train_unet.main(["--resume", str(run), "--epochs", "4"]) == 0
    check_run_folder(run, epochs=4)
    model = saved_model(run / "last.keras")
    assert int(model.optimizer.iterations.numpy()) == 8  # 4 epochs of 2 steps: continued, not restarted
    schedule = schedule_config(model.optimizer)
    assert (schedule["warmup_steps"], schedule["decay_steps"]) == (2, 6)  # the new plan: 8 steps, 2 of warm-up
    assert json.loads((run / "config.json").read_text())["epochs"] == 2  # the start is recorded as it was
    assert json.loads((run / "state.json").read_text()) == {"completed_epochs": 4, "planned": {"epochs": 4}}
    assert json.loads((run / "metrics.json").read_text())["settings"]["epochs"] == 4


def test_deterministic_runs_give_identical_histories(tmp_path):
    histories = []
    for name in ("a", "b"):
        run = tmp_path / name
        assert train_unet.main(QUICK + ["--epochs", "2", "--deterministic", "--output", str(run)]) == 0
        histories.append((run / "history.csv").read_text())
    assert histories[0] == histories[1]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.mark.slow
def test_two_workers_train_together_and_only_the_chief_writes(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    run = tmp_path / "run"
    processes = []
    try:
        for index in range(2):
            env = dict(os.environ, TMPDIR=str(scratch),
                       TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
            processes.append(start(QUICK + ["--epochs", "2", "--strategy", "multiworker", "--output", run], env=env))
        outputs = [process.communicate(timeout=240) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    digests = [line for stdout, _ in outputs for line in stdout.splitlines() if line.startswith("weights digest")]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert "(a worker: the chief writes the run folder)" in outputs[1][0]
    check_run_folder(run, epochs=2)
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("segmentation-worker-")]  # removed


def test_deterministic_needs_a_seed(capsys):
    from conftest import run_main

    status, _, err = run_main(train_unet.main, ["--data", "synthetic", "--deterministic"], capsys)
    assert status == 2 and "--deterministic needs --seed" in err


def test_disk_cache_lives_in_the_run_and_is_reused_on_resume(tmp_path):
    run = tmp_path / "run"
    assert train_unet.main(QUICK + ["--epochs", "1", "--cache", "disk", "--output", str(run)]) == 0
    cached = {p.name: p.stat().st_mtime_ns for p in (run / "cache").iterdir()}
    assert len([name for name in cached if name.endswith(".index")]) == 2  # train and test
    assert train_unet.main(["--resume", str(run), "--epochs", "2"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (run / "cache").iterdir()} == cached  # read, not rewritten
    check_run_folder(run, epochs=2)
