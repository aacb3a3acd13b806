"""Feedback on long work: each seed's progress (step, loss, score, ETA), the whole run's ETA, main_mp.py's line,
and a Ctrl-C's message on a line of its own on a terminal."""
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

import pytest

import core
import utils
from conftest import ROOT, TINY, compose, entry_env, run_entry
from plumbing import progress
from plumbing.progress import Bar, Pace, SeedProgress, SeedsLine, estimate
from plumbing.runfolder import Run


def measured(seed=0, step=50, steps=100, loss=0.25, score=40.0, evals=1, seconds_left=None, seed_seconds=None):
    """A SeedProgress measured just now."""
    return SeedProgress(seed, step, steps, loss, score, evals, seconds_left, seed_seconds, at=time.time())


def test_a_seeds_eta_covers_its_steps_and_evals_left_its_final_evaluation_and_its_video():
    cfg = compose("train.steps=100", "train.eval_every=50", "eval.episodes=10", "eval.final_episodes=100",
                  "eval.video=true")
    final_and_video = 2.0 * (100 / 10 + 1)  # a periodic eval's 2 s, times 10 for 100 episodes, and one for the video
    left, whole = estimate(cfg, step=50, step_seconds=1.0, eval_seconds=2.0)
    assert left == 50 * 1.0 + 1 * 2.0 + final_and_video  # 50 steps and the eval at step 100 left
    assert whole == 100 * 1.0 + 2 * 2.0 + final_and_video
    assert estimate(cfg, step=100, step_seconds=1.0, eval_seconds=2.0)[0] == final_and_video
    no_video = compose("train.steps=100", "train.eval_every=50", "eval.episodes=10", "eval.final_episodes=100")
    assert estimate(no_video, step=100, step_seconds=1.0, eval_seconds=2.0)[0] == 2.0 * 100 / 10


def test_a_pause_stops_counting_in_the_eta_once_the_window_has_passed_it(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(progress.time, "time", lambda: clock[0])
    cfg = compose("train.steps=1000", "train.eval_every=1000", "eval.episodes=10", "eval.final_episodes=10")
    pace = Pace(started=clock[0], window=3)
    with pace.timing_eval():  # an eval of 5 s: its time is not the steps'
        clock[0] += 5.0
    left = []
    for step in range(100, 700, 100):  # 100 steps in 10 s each, and a pause of 600 s before step 200
        clock[0] += 10.0 + 600.0 * (step == 200)
        left.append(pace.estimate(cfg, step)[0])
    end = 5.0 + 5.0  # the eval at step 1000 and the final evaluation (10 episodes, as a periodic eval)
    assert left[0] == pytest.approx(900 * 0.1 + end)
    assert left[1] > 800 * 0.1 + end + 100  # the pause still counts ...
    assert left[-1] == pytest.approx(400 * 0.1 + end)  # ... and no more, three estimates after it


def test_main_pys_run_eta_adds_the_later_seeds_one_after_another():
    bar = Bar(later_seeds=2)
    progress = measured(seconds_left=74.5, seed_seconds=126.0)
    assert bar.run_left(progress) == pytest.approx(74.5 + 2 * 126.0, abs=0.5)
    assert bar.postfix(progress) == "loss 0.2500, score 40.0, run ETA 05:26"
    assert bar.postfix(measured(loss=None, score=None)) == "run ETA ?"  # before the first eval: not known yet


def test_a_seed_reports_its_step_loss_and_score_and_an_eta_from_its_first_eval(hopper_file, tmp_path):
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
    assert reports[0] == SeedProgress(0, 0, 20, None, None, 0, None, None, reports[0].at)  # shown at the start
    assert [(r.step, r.evals) for r in reports[1:]] == [(5, 0), (10, 0), (10, 1), (15, 1), (20, 1), (20, 2)]
    assert [r.loss for r in reports[1:] if r.evals == 0] == pytest.approx(list(train["loss"][:2]))
    assert [r.score for r in reports if r.evals] == pytest.approx([evals["score_mean"][0]] * 3 + [evals["score_mean"][1]])
    assert all(r.seconds_left is None for r in reports if r.evals == 0)  # the evals' cost is not known yet
    assert all(0 <= r.seconds_left <= r.seed_seconds for r in reports if r.evals)
    assert recorder.closed


def test_main_mps_line_shows_each_seeds_step_loss_score_and_eta_and_the_slowest_as_the_runs(caplog):
    line = SeedsLine([0, 1], multiprocessing.get_context("spawn"), every=3600)
    caplog.set_level("INFO", logger="progress")
    line.senders[0](measured(seed=0, step=4200, steps=20000, loss=0.0123, score=45.1, seconds_left=723.5))
    line.update(ended=set())  # a new eval: the line now
    assert caplog.messages == ["seed 0: step 4200/20000, loss 0.0123, score 45.1, ETA 12:03 | seed 1: starting | "
                               "run ETA ?"]
    line.senders[1](measured(seed=1, step=4100, steps=20000, evals=1, seconds_left=900.5))
    line.senders[0](measured(seed=0, step=4300, steps=20000, evals=1, seconds_left=700.5))
    line.update(ended=set())
    assert caplog.messages[-1].endswith(", ETA 11:40 | seed 1: step 4100/20000, loss 0.2500, score 40.0, ETA 15:00 | "
                                        "run ETA 15:00")
    line.senders[1](measured(seed=1, step=4200, steps=20000, evals=1, seconds_left=890.5))
    line.update(ended=set())  # no new eval, and `every` seconds have not passed
    assert len(caplog.messages) == 2
    line.senders[0](measured(seed=0, step=4400, steps=20000, evals=2, seconds_left=600.5))
    line.update(ended={1})
    assert caplog.messages[-1].endswith("seed 1: step 4200/20000, loss 0.2500, score 40.0, ended | run ETA 10:00")


def test_a_seeds_cause_comes_through_its_progress_pipe_even_after_its_progress_closed():
    line = SeedsLine([0, 1], multiprocessing.get_context("spawn"), every=3600)
    line.senders[1](measured(seed=1, step=20, steps=20, evals=2, seconds_left=3.0))
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


@pytest.mark.parametrize("script, when", [("main.py", "it/s"), ("main_mp.py", "[progress]")])
def test_after_ctrl_c_every_message_is_on_a_line_of_its_own(hopper_file, tmp_path, script, when):
    """main.py: its bar; main_mp.py: its line; then Ctrl-C: the message after it, not inside the bar or after ^C."""
    lines = screen(ctrl_c_on_a_terminal(script, *TINY, f"buffer.path={hopper_file}", "seeds=[0]",
                                        "train.steps=100000", f"hydra.run.dir={tmp_path}", when=when))
    (message,) = [i for i, line in enumerate(lines) if "interrupted:" in line]
    assert lines[message].startswith("interrupted: seed"), lines
    assert all(line.endswith("^C") for line in lines if "^C" in line), lines  # nothing printed after an echoed ^C
    assert all(line.startswith("[20") for line in lines if "][INFO]" in line or "][WARNING]" in line), lines
    if script == "main.py":
        assert re.match(r"seed 0: +\d+%\|.*run ETA", lines[message - 1]), lines  # the bar's last state, above
