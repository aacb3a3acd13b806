"""Feedback on long work: each seed's progress (step, loss, score, ETA), main_mp.py's line over its seeds, and a
Ctrl-C's message on a line of its own on a terminal."""
import fcntl
import multiprocessing
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from types import SimpleNamespace

import pytest

import core
import utils
from conftest import ROOT, TINY, compose, entry_env, run_entry
from plumbing import progress
from plumbing.progress import Bar, SeedProgress, SeedsLine
from plumbing.record import SeedRecord
from plumbing.runfolder import Run


def measured(seed=0, step=50, steps=100, loss=0.25, score=40.0, evals=1, left=None):
    """A SeedProgress measured just now, its seed `left` seconds from its end."""
    return SeedProgress(seed, step, steps, loss, score, evals, None if left is None else time.time() + left)


def test_a_seeds_end_is_its_attempts_pace_so_far_times_the_steps_left(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(progress.time, "time", lambda: now[0])
    resumed = SimpleNamespace(started=now[0], first_step=100, cfg=SimpleNamespace(train=SimpleNamespace(steps=1000)))
    assert SeedRecord.ends(resumed, 100) is None and progress.eta(None) == "?"  # a resumed seed measures its attempt
    now[0] += 50.0  # 100 steps, evals included, in 50 s
    assert SeedRecord.ends(resumed, 200) == now[0] + 400.0
    assert progress.eta(now[0] + 400.0) == "06:40" and progress.eta(now[0] - 1) == "00:00"


def test_off_a_terminal_main_pys_bar_shows_nothing(capsys, caplog):
    bar = Bar()
    bar(measured(step=0, loss=None, score=None))
    bar(measured(step=50, left=50.0))
    bar.close()
    assert capsys.readouterr() == ("", "") and not caplog.messages


def test_a_seed_reports_its_step_loss_score_and_an_eta_from_its_first_log_interval(hopper_file, tmp_path):
    class Recorder:
        reports, closed = [], False

        def __call__(self, progress):
            self.reports.append(progress)

        def close(self):
            self.closed = True

    recorder = Recorder()
    core.train(compose(f"buffer.path={hopper_file}"), 0, Run(tmp_path), recorder)  # 20 steps, evals at 10 and 20
    reports = recorder.reports
    train, evals = utils.read_csv(tmp_path / "seed0" / "train.csv"), utils.read_csv(tmp_path / "seed0" / "eval.csv")
    assert reports[0] == SeedProgress(0, 0, 20, None, None, 0, None)  # shown at the start
    assert [(r.step, r.evals) for r in reports[1:]] == [(5, 0), (10, 0), (10, 1), (15, 1), (20, 1), (20, 2)]
    assert [r.loss for r in reports[1:] if r.evals == 0] == pytest.approx(list(train["loss"][:2]))
    assert [r.score for r in reports if r.evals] == pytest.approx([evals["score_mean"][0]] * 3 + [evals["score_mean"][1]])
    assert all(r.ends is not None for r in reports[1:])  # from the first log on
    assert recorder.closed


def test_without_a_terminal_main_py_logs_a_line_with_the_seeds_eta_per_eval_and_no_bar(hopper_file, tmp_path):
    result = run_entry("main.py", tmp_path, f"buffer.path={hopper_file}", "seeds=[0]")
    assert len(re.findall(r"seed 0 step (10|20): .*, seed ETA [\d:]+\n", result.stdout)) == 2, result.stdout
    assert "it/s" not in result.stdout + result.stderr and "step 5/20" not in result.stdout


def test_main_mps_line_shows_each_seeds_step_loss_score_and_eta_and_the_slowest_as_the_runs(caplog):
    line = SeedsLine([0, 1], multiprocessing.get_context("spawn"), every=3600)
    caplog.set_level("INFO", logger="plumbing.progress")
    line.senders[0](measured(seed=0, step=4200, steps=20000, loss=0.0123, score=45.1, left=723.5))
    line.update(ended=set())  # a new eval: the line now
    assert caplog.messages == ["seed 0: step 4200/20000, loss 0.0123, score 45.1, ETA 12:03 | seed 1: starting | "
                               "run ETA ?"]
    line.senders[1](measured(seed=1, step=4100, steps=20000, evals=1, left=900.5))
    line.senders[0](measured(seed=0, step=4300, steps=20000, evals=1, left=700.5))
    line.update(ended=set())
    assert caplog.messages[-1].endswith(", ETA 11:40 | seed 1: step 4100/20000, loss 0.2500, score 40.0, ETA 15:00 | "
                                        "run ETA 15:00")
    line.senders[1](measured(seed=1, step=4200, steps=20000, evals=1, left=890.5))
    line.update(ended=set())  # no new eval, and `every` seconds have not passed
    assert len(caplog.messages) == 2
    line.senders[0](measured(seed=0, step=4400, steps=20000, evals=2, left=600.5))
    line.update(ended={1})
    assert caplog.messages[-1].endswith("seed 1: step 4200/20000, loss 0.2500, score 40.0, ended | run ETA 10:00")


def test_a_seeds_cause_comes_through_its_progress_pipe_even_after_its_progress_closed():
    line = SeedsLine([0, 1], multiprocessing.get_context("spawn"), every=3600)
    line.senders[1](measured(seed=1, step=20, steps=20, evals=2, left=0.0))
    line.senders[1].close()  # the seed's end of progress (its final evaluation starts): the pipe stays open
    line.senders[1].stopped("seed 1: the final evaluation scored nan")
    line.update(ended={1})
    assert line.causes == {1: "seed 1: the final evaluation scored nan"} and line.latest[1].step == 20


def test_main_mp_logs_the_line_of_its_seeds_progress(hopper_file, tmp_path):
    result = run_entry("main_mp.py", tmp_path, f"buffer.path={hopper_file}", "seeds=[0,1]")
    for seed in (0, 1):
        pattern = rf"seed {seed}: step \d+/20, loss \d\.\d{{4}}, score -?\d+\.\d, (ETA [\d:]+|ended) \|"
        assert re.search(pattern, result.stdout), result.stdout
    assert re.search(r"\| run ETA [\d:?]+\n", result.stdout)


# On a terminal: what the user sees

def screen(output):
    """The lines a terminal shows for `output`: '\\r' returns to the start of the line, and what follows
    overwrites what was there."""
    lines = []
    for raw in output.replace("\r\n", "\n").split("\n"):
        shown = ""
        for part in raw.split("\r"):
            shown = part + shown[len(part):]
        lines.append(shown)
    return lines


def ctrl_c_on_a_terminal(script, *args, when):
    """`python <script> <args>` on a pseudo-terminal of 120 columns (its controlling terminal), Ctrl-C typed once
    `when` shows; everything it printed, as the terminal received it."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=entry_env(), stdin=slave,
                               stdout=slave, stderr=slave, start_new_session=True,
                               preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    output, typed, deadline = b"", False, time.time() + 600
    try:
        while time.time() < deadline:
            if select.select([master], [], [], 1)[0]:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the program has ended and closed the terminal
                    break
                if not data:
                    break
                output += data
            if not typed and when.encode() in output:
                os.write(master, b"\x03")  # the terminal echoes ^C and sends SIGINT to the program
                typed = True
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        os.close(master)
    assert typed, output.decode(errors="replace")
    return output.decode(errors="replace")


@pytest.mark.parametrize("script, when", [("main.py", "loss="), ("main_mp.py", "[plumbing.progress]")])
def test_after_ctrl_c_every_message_is_on_a_line_of_its_own(hopper_file, tmp_path, script, when):
    """main.py: its bar; main_mp.py: its line; then Ctrl-C: the message after it, not inside the bar or after ^C."""
    lines = screen(ctrl_c_on_a_terminal(script, *TINY, f"buffer.path={hopper_file}", "seeds=[0]",
                                        "train.steps=100000", f"hydra.run.dir={tmp_path}", when=when))
    (message,) = [i for i, line in enumerate(lines) if "interrupted:" in line]
    assert lines[message].startswith("interrupted: seed"), lines
    assert all(line.endswith("^C") for line in lines if "^C" in line), lines  # nothing printed after an echoed ^C
    assert all(line.startswith("[20") for line in lines if "][INFO]" in line or "][WARNING]" in line), lines
    if script == "main.py":
        assert re.match(r"seed 0: +\d+%\|.*<[\d:]+, .*, loss=", lines[message - 1]), lines  # its last state, above
