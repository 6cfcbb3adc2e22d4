"""Stopping and continuing a run: SIGTERM / SIGINT save the current step and exit 143 / 130, and the same command
resumes from it (unet_jax.signals); a finished run continues with a raised train.num_steps (train longer)."""
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from unet_jax import checkpoint as ck
from unet_jax import train
from unet_jax import workdir as wd
from unet_jax.signals import StopSignals, TrainingInterrupted
from unet_jax.step import create_learning_rate_schedule
from test_train import FAST_COMPILE, REPO, tiny_config, _records  # noqa: F401

from test_train import data_dir  # noqa: F401,E402

# `unet-jax` itself, each step slowed to 0.2 s so that a signal lands mid-run; prints STEP=n after each step.
SCRIPT = r"""
import sys, time
from unet_jax import cli
real = cli.train_and_evaluate
def slowed(config, workdir, *, callbacks=()):
    def report(step, state):
        print(f"STEP={step}", flush=True)
        time.sleep(0.2)
    return real(config, workdir, callbacks=[*callbacks, report])
cli.train_and_evaluate = slowed
sys.exit(cli.main(sys.argv[1:]))
"""

CONFIG = """
import json
import ml_collections


def get_config():
    return ml_collections.ConfigDict(json.loads({text!r}))
"""


def _start(tmp_path, workdir):
    env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_DISABLE="1", JAX_PLATFORMS="cpu", XLA_FLAGS=FAST_COMPILE)
    return subprocess.Popen([sys.executable, "-c", SCRIPT, "train", "--config", str(tmp_path / "config.py"),
                             "--workdir", str(workdir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=REPO)


def _signal_after(proc, step, signum, timeout=600):
    """Send ``signum`` once the run printed STEP=``step``; returns (exit code, steps printed, stderr)."""
    steps, deadline = [], time.time() + timeout
    for line in proc.stdout:
        if line.startswith("STEP="):
            steps.append(int(line[5:]))
            if steps[-1] == step:
                proc.send_signal(signum)
        assert time.time() < deadline, "the run did not get going"
    proc.wait(timeout=120)
    return proc.returncode, steps, proc.stderr.read()


def _saved(workdir):
    return sorted(int(p.name) for p in ck.checkpoint_dir(workdir).iterdir() if p.name.isdigit())


def test_sigterm_and_sigint_save_the_step_and_resume(tmp_path, data_dir):  # noqa: F811
    config = tiny_config(data_dir)
    config.train.update(num_steps=16, checkpoint_every=5, eval_every=0, log_every=5)
    (tmp_path / "config.py").write_text(CONFIG.format(text=json.dumps(config.to_dict())))
    workdir = tmp_path / "w"

    code, steps, err = _signal_after(_start(tmp_path, workdir), 7, signal.SIGTERM)
    stopped = steps[-1]
    assert code == 143 and 7 <= stopped < 16, (code, steps, err[-2000:])
    assert f"unet-jax: SIGTERM: stopped after step {stopped} and saved it" in err and "Traceback" not in err
    assert stopped in _saved(workdir)                       # the step itself, not only the last periodic one

    code, steps, err = _signal_after(_start(tmp_path, workdir), stopped + 2, signal.SIGINT)
    assert steps[0] == stopped + 1                          # resumed from the saved step
    assert code == 130 and f"unet-jax: SIGINT: stopped after step {steps[-1]} and saved it" in err, err[-2000:]
    again = steps[-1]
    assert again in _saved(workdir)

    proc = _start(tmp_path, workdir)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    steps = [int(s) for s in re.findall(r"^STEP=(\d+)$", out, re.M)]
    assert steps[0] == again + 1 and steps[-1] == 16
    logged = [r["step"] for r in _records(workdir, "train")]
    assert logged == sorted(set(logged)) and logged[-1] == 16


def test_stop_signals_ask_once_then_stop():
    """The first signal only asks (SIGUSR1: SLURM's warning ahead of a time limit), a second one stops at once;
    the previous handlers come back."""
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stops:
        os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(100):
            if stops.received:
                break
            time.sleep(0.01)
        assert stops.received == signal.SIGUSR1 and stops.requested(3, 5) == signal.SIGUSR1
        with pytest.raises(KeyboardInterrupt, match="second signal"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) is before
    stopped = TrainingInterrupted(signal.SIGUSR1, 7, "/w/checkpoints")
    assert stopped.exit_code == 138 and str(stopped).startswith("SIGUSR1: stopped after step 7 and saved it")


def test_train_longer_continues_a_finished_run(tmp_path, data_dir, caplog):  # noqa: F811
    """Raising train.num_steps on a finished workdir resumes it (not refused as a changed config), with one line
    on what happened to the learning-rate schedule, which then runs over the new total."""
    config = tiny_config(data_dir)
    config.train.update(num_steps=4, checkpoint_every=2, eval_every=0, log_every=1)
    config.optimizer.update(schedule="cosine")
    assert train.train_and_evaluate(config, tmp_path / "w")["step"] == 4
    config.train.num_steps = 8
    with caplog.at_level(logging.WARNING):
        result = train.train_and_evaluate(config, tmp_path / "w")
    assert result["step"] == 8
    assert re.search(r"train.num_steps 4 -> 8: continuing from step 4 to step 8; the cosine learning-rate schedule "
                     r"now spans 8 steps: the rate at step 4 is 0.005 \(it was 0 on the 4-step schedule\)",
                     caplog.text), caplog.text
    rows = {r["step"]: r for r in _records(tmp_path / "w", "train")}
    schedule = create_learning_rate_schedule(config.optimizer, 8)
    for step in (5, 8):
        assert rows[step]["learning_rate"] == pytest.approx(float(schedule(step - 1)))
    history = [json.loads(line) for line in (tmp_path / "w" / wd.CONFIG_HISTORY_FILE).read_text().splitlines()]
    assert [h["step"] for h in history] == [0, 4] and history[1]["config"]["train"]["num_steps"] == 8
