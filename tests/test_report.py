"""report.py on two small fake run folders: the pdf, the markdown table, each run's settings, the bars."""
import importlib.util
import json
import shutil

import matplotlib
import numpy as np
import pytest
from omegaconf import OmegaConf

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import report  # noqa: E402

HOPPER = {"name": "hopper", "id": "Hopper-v4", "target_return": 3600, "ref_min_score": -20.272305,
          "ref_max_score": 3234.3, "max_episode_len": 1000}
HALFCHEETAH = {"name": "halfcheetah", "id": "HalfCheetah-v4", "target_return": 6000, "ref_min_score": -280.178953,
               "ref_max_score": 12135.0, "max_episode_len": 1000}


def write_csv(path, header, rows):
    path.write_text("\n".join([",".join(header), *(",".join(map(str, r)) for r in rows)]) + "\n")


def make_run(run_dir, env, lr, final_scores, eval_scores, resume=None, top_percent=100.0, precision="bf16"):
    """A finished run: config.yaml, summary.json, results.png and per seed train.csv, eval.csv, final.json.

    eval_scores[seed] are the periodic eval scores at steps 100 and 200.
    """
    run_dir.mkdir(parents=True)
    config = {"env": env, "buffer": {"dataset": "medium", "context_len": 20, "top_percent": top_percent},
              "model": {"embed_dim": 128}, "train": {"steps": 200, "lr": lr, "precision": precision},
              "eval": {"episodes": 10, "final_episodes": 100},
              "seeds": list(range(len(final_scores))), "device": "cpu", "resume": resume}
    OmegaConf.save(OmegaConf.create(config), run_dir / "config.yaml")
    finals = []
    for seed, (final, evals) in enumerate(zip(final_scores, eval_scores)):
        seed_dir = run_dir / f"seed{seed}"
        seed_dir.mkdir()
        write_csv(seed_dir / "train.csv", ["step", "loss", "lr"], [(100, 0.5, lr), (200, 0.2, lr)])
        write_csv(seed_dir / "eval.csv", ["step", "return_mean", "return_std", "score_mean", "score_std"],
                  [(step, 10 * s, 1.0, s, 1.0) for step, s in zip((100, 200), evals)])
        finals.append({"seed": seed, "episodes": 100, "return_mean": 10 * final, "return_std": 1.0,
                       "score_mean": final, "score_std": 1.0, "train_seconds": 1.0, "final_eval_seconds": 1.0})
        (seed_dir / "final.json").write_text(json.dumps(finals[-1]))
    summary = {"env": env["name"], "dataset": "medium", "seeds": [f["seed"] for f in finals], "missing_seeds": [],
               "score_mean": float(np.mean(final_scores)), "score_std": float(np.std(final_scores)),
               "per_seed": finals}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    plt.imsave(run_dir / "results.png", np.zeros((8, 8, 3)))
    return run_dir


@pytest.fixture
def runs(tmp_path):
    """hopper at lr 1e-4 (final 60 +- 1.6: passes > 50); halfcheetah at lr 3e-4 (final 35 +- 0.8: fails > 40)."""
    hopper = make_run(tmp_path / "runs" / "day" / "hopper", HOPPER, 1e-4, [58.0, 60.0, 62.0],
                      [[40.0, 55.0], [50.0, 45.0], [45.0, 50.0]])
    cheetah = make_run(tmp_path / "runs" / "day" / "cheetah", HALFCHEETAH, 3e-4, [34.0, 35.0, 36.0],
                       [[30, 33], [32, 35], [31, 34]], resume="runs/day/cheetah")
    return hopper, cheetah


@pytest.fixture
def outputs(runs, tmp_path):
    report.main([str(r) for r in runs] + ["--out", str(tmp_path / "out" / "report")])
    return tmp_path / "out"


def row(md, label):
    """The cells of the markdown table row that starts with `label`."""
    line = next(line for line in md.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_pdf_and_loss_figure_are_written(outputs):
    assert (outputs / "report.pdf").read_bytes().startswith(b"%PDF")
    assert (outputs / "report_loss.png").stat().st_size > 0


def test_each_run_has_a_row_with_its_final_score_mean_and_std_over_seeds(outputs):
    md = (outputs / "report.md").read_text()
    assert row(md, "day/hopper")[1:4] == ["hopper-medium", "0, 1, 2", "60.0 ± 1.6 (100 ep)"]
    assert row(md, "day/cheetah")[1:4] == ["halfcheetah-medium", "0, 1, 2", "35.0 ± 0.8 (100 ep)"]


def test_a_single_seed_shows_no_std_and_does_not_settle_the_bar(tmp_path):
    run = make_run(tmp_path / "runs" / "day" / "walker", {**HOPPER, "name": "walker2d"}, 1e-4, [71.0], [[60, 70]])
    report.main([str(run), "--out", str(tmp_path / "report")])
    assert row((tmp_path / "report.md").read_text(), "day/walker")[3:] == ["71.0 (100 ep)", "70.0 (200)", "> 70",
                                                                           "n/a (1 seed)", "74.0"]


def test_best_eval_is_the_best_step_of_the_seed_mean(outputs):
    md = (outputs / "report.md").read_text()
    assert row(md, "day/hopper")[4] == "50.0 (200)"  # steps 100, 200: means 45 and 50 (not the single best, 55)


def test_pass_is_the_3_seed_final_score_against_the_assignment_bar(outputs):
    md = (outputs / "report.md").read_text()
    assert row(md, "day/hopper")[5:] == ["> 50", "yes", "67.6"]
    assert row(md, "day/cheetah")[5:] == ["> 40", "no", "42.6"]


def test_each_run_s_settings_are_its_overrides_of_the_defaults(outputs):
    settings = (outputs / "report.md").read_text().split("## Settings of each run")[1].split("##")[0]
    assert row(settings, "day/hopper")[1] == "env=hopper train.steps=200"  # lr 1e-4 and the env's values are cfgs/'
    assert row(settings, "day/cheetah")[1] == "env=halfcheetah env.target_return=6000.0 train.steps=200 train.lr=0.0003"


def test_a_tall_figure_is_narrowed_to_fit_a_page_and_a_wide_one_fills_the_width(tmp_path):
    plt.imsave(tmp_path / "tall.png", np.zeros((300, 100, 3)))
    plt.imsave(tmp_path / "wide.png", np.zeros((100, 300, 3)))
    assert report.figure_width(tmp_path / "tall.png") * report.TEXT_WIDTH_CM * 3 == pytest.approx(
        report.FIGURE_HEIGHT_CM)
    assert report.figure_width(tmp_path / "wide.png") == 1.0


def test_markdown_links_each_runs_figure_relative_to_the_report(outputs):
    md = (outputs / "report.md").read_text()
    assert "](../runs/day/hopper/results.png)" in md and "](../runs/day/cheetah/results.png)" in md
    assert "](report_loss.png)" in md


def test_standin_flag_labels_the_title_and_table(runs, tmp_path):
    report.main([str(r) for r in runs] + ["--out", str(tmp_path / "standin"), "--standin"])
    md = (tmp_path / "standin.md").read_text()
    assert md.startswith("# Decision Transformer on D4RL MuJoCo (stand-in data)")
    assert "## Results (stand-in data)" in md


def test_folder_without_summary_is_refused_with_its_name(runs, tmp_path):
    (runs[1] / "summary.json").unlink()
    with pytest.raises(SystemExit, match=r"day/cheetah: no summary.json") as error:
        report.main([str(r) for r in runs] + ["--out", str(tmp_path / "report")])
    assert str(runs[1]) in str(error.value)
    assert not (tmp_path / "report.pdf").exists()


def test_without_out_the_report_never_replaces_an_existing_file(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "a"
    make_run(run, HOPPER, 1e-4, [50.0], [[40.0, 50.0]])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "report.md").write_text("my notes")
    report.main([str(run)])
    assert (tmp_path / "report.md").read_text() == "my notes"
    assert (tmp_path / "report-1.md").exists() and (tmp_path / "report-1.pdf").exists()


def test_the_report_names_the_dataset_file_without_the_machines_folders(tmp_path):
    first, second = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    make_run(first, HOPPER, 1e-4, [50.0], [[40.0, 50.0]])
    make_run(second, HOPPER, 1e-4, [50.0], [[40.0, 50.0]])
    for run, folder in ((first, "/home/me/data"), (second, "/scratch/data")):
        config = OmegaConf.load(run / "config.yaml")
        config.buffer.file = f"{folder}/hopper_medium-v2.hdf5"
        OmegaConf.save(config, run / "config.yaml")
    report.main([str(first), str(second), "--out", str(tmp_path / "report")])
    md = (tmp_path / "report.md").read_text()
    assert "/home/me" not in md and "/scratch" not in md


def pdf_text(path):
    from pypdf import PdfReader
    return " ".join(page.extract_text() for page in PdfReader(path).pages).replace("\u200b", "")


def test_the_pdf_is_typeset_with_the_tables_notes_and_every_figure(outputs):
    pytest.importorskip("pypdf")
    text = pdf_text(outputs / "report.pdf")
    for words in ("Results", "hopper-medium", "60.0 ± 1.6 (100 ep)", "Settings of each run", "train.lr",
                  "Training loss"):
        assert words in text, words
    assert text.count("Figure") == 3, "the loss figure and each run's results.png"


def test_a_study_gets_a_table_against_the_default_a_figure_and_what_the_numbers_say(tmp_path):
    day = tmp_path / "runs" / "day"
    base = make_run(day / "p100", HOPPER, 1e-4, [60.0, 61.0, 62.0], [[50, 60]] * 3)
    better = make_run(day / "p10", HOPPER, 1e-4, [70.0, 71.0, 72.0], [[50, 70]] * 3, top_percent=10.0)
    same = make_run(day / "p25", HOPPER, 1e-4, [59.0, 62.0, 63.0], [[50, 60]] * 3, top_percent=25.0)
    again = make_run(day / "p100-again", HOPPER, 1e-4, [61.0], [[50, 60]])  # the same setting: pooled
    findings = tmp_path / "findings.md"
    findings.write_text("## Findings\n\nKeeping the top 10% (`buffer.top_percent=10`) helps here.\n\n- a **bold** "
                        "bullet\n  that goes on\n\n## In short\n\nTop 10% wins.\n\n## Not known\n\n- D4RL\n")
    report.main([str(r) for r in (better, same, base, again)] + ["--out", str(tmp_path / "report"), "--findings",
                                                                 str(findings)])
    md = (tmp_path / "report.md").read_text()
    assert row(md, "buffer.top_percent=100.0 (default)")[1:5] == ["day/p100, day/p100-again", "4", "61.0 ± 0.7", "-"]
    assert row(md, "buffer.top_percent=10.0")[3:5] == ["71.0 ± 0.8", "+10.0"]
    assert "buffer.top_percent=10.0: 71.0 ± 0.8 against 61.0 ± 0.7 for the default, +10.0: better, beyond the " \
           "seeds' spread (1.5)." in md
    assert "buffer.top_percent=25.0: 61.3 ± 1.7 against 61.0 ± 0.7 for the default, +0.3: within the seeds' " \
           "spread (2.4): no clear effect." in md
    assert "](report_study.png)" in md and (tmp_path / "report_study.png").stat().st_size > 0
    assert "## Findings\n\nKeeping the top 10% (`buffer.top_percent=10`) helps here.\n\n- a **bold** bullet that " \
           "goes on\n\n## Not known\n\n- D4RL" in md
    assert md.index("## In short\n\nTop 10% wins.") < md.index("## Results") < md.index("## Studies") \
        < md.index("## Findings"), "the summary opens the report, the other findings close it"
    if importlib.util.find_spec("pypdf"):
        text = pdf_text(tmp_path / "report.pdf")
        assert "Keeping the top 10% (buffer.top_percent=10) helps here." in text and "a bold bullet" in text


def test_a_precision_study_takes_the_reference_runs_bf16_as_the_default(tmp_path):
    day = tmp_path / "runs" / "day"
    bf16 = make_run(day / "bf16", HOPPER, 1e-4, [60.0, 61.0, 62.0], [[50, 60]] * 3)
    fp32 = make_run(day / "fp32", HOPPER, 1e-4, [58.0, 59.0, 60.0], [[50, 60]] * 3, precision="fp32")
    report.main([str(fp32), str(bf16), "--out", str(tmp_path / "report")])
    md = (tmp_path / "report.md").read_text()
    assert row(md, "train.precision=bf16 (default)")[1:5] == ["day/bf16", "3", "61.0 ± 0.8", "-"]
    assert row(md, "train.precision=fp32")[3:5] == ["59.0 ± 0.8", "-2.0"]


def test_a_setting_of_a_study_over_several_keys_is_named_by_where_it_differs_from_the_default(tmp_path):
    day = tmp_path / "runs" / "day"
    base = make_run(day / "base", HOPPER, 1e-4, [60.0, 61.0, 62.0], [[50, 60]] * 3)
    fp32 = make_run(day / "fp32", HOPPER, 1e-4, [58.0, 59.0, 60.0], [[50, 60]] * 3, precision="fp32")
    top10 = make_run(day / "top10", HOPPER, 1e-4, [70.0, 71.0, 72.0], [[50, 70]] * 3, top_percent=10.0)
    report.main([str(r) for r in (fp32, top10, base)] + ["--out", str(tmp_path / "report")])
    md = (tmp_path / "report.md").read_text()
    assert "### hopper-medium: buffer.top_percent, train.precision" in md
    assert row(md, "buffer.top_percent=100.0, train.precision=bf16 (default)")[1] == "day/base"
    assert row(md, "train.precision=fp32")[1:5] == ["day/fp32", "3", "59.0 ± 0.8", "-2.0"]
    assert row(md, "buffer.top_percent=10.0")[1:5] == ["day/top10", "3", "71.0 ± 0.8", "+10.0"]


def test_a_runs_return_to_go_sweep_is_summarized_with_its_best_target(tmp_path):
    run = make_run(tmp_path / "runs" / "day" / "swept", HOPPER, 1e-4, [60.0, 62.0], [[50, 60]] * 2)
    targets = [1000.0, 2000.0, 3000.0]
    rows = ["seed,target,episode,return,score"]
    for seed in (0, 1):
        for target, achieved in zip(targets, (30.0, 60.0, 58.0)):
            rows += [f"{seed},{target},{episode},0,{achieved + seed + episode}" for episode in (0, 1)]
    (run / "sweep_final.csv").write_text("\n".join(rows) + "\n")
    report.main([str(run), "--out", str(tmp_path / "report")])
    md = (tmp_path / "report.md").read_text()
    assert "day/swept (hopper-medium, 2 seeds, 2 episodes per target and seed): the achieved score goes from " \
           "31.0 at the lowest target (31.3) to 59.0 at the highest (92.8); the best, 61.0, at target 2000" in md
    assert row(md, "2000")[1:] == ["62.1", "61.0 ± 0.5"]


def test_publish_copies_a_run_to_share_without_training_state_or_the_machines_paths(tmp_path):
    run = make_run(tmp_path / "runs" / "day" / "run", HOPPER, 1e-4, [50.0], [[40.0, 50.0]])
    config = OmegaConf.load(run / "config.yaml")
    config.buffer.file = str(report.Path(report.__file__).resolve().parents[1] / "shared" / "hopper_medium-v2.hdf5")
    OmegaConf.save(config, run / "config.yaml")
    (run / "main.log").write_text(f"resumed {report.Path(report.__file__).resolve().parent}/runs/day/run\n")
    for name in ("last.pt", "best.pt", "final.pt"):
        (run / "seed0" / name).write_bytes(b"weights")
    (run / ".hydra").mkdir()
    (run / ".hydra" / "hydra.yaml").write_text("/home/me")
    (run / "MUJOCO_LOG.TXT").write_text("WARNING: a deprecated compiler attribute")  # MuJoCo's, not the run's
    plt.imsave(run / "results.png", np.zeros((4, 4, 3)))  # stands for a figure titled with this machine's path
    (run / "seed1").mkdir()  # a seed still training: left out, and out of the figure drawn again
    write_csv(run / "seed1" / "train.csv", ["step", "loss", "lr"], [(100, 0.5, 1e-4)])
    report.main([str(run), "--publish", str(tmp_path / "shared")])
    shared = tmp_path / "shared"
    assert sorted(p.name for p in (shared / "seed0").iterdir()) == ["eval.csv", "final.json", "final.pt", "train.csv"]
    assert not (shared / "seed1").exists() and plt.imread(shared / "results.png").shape[0] > 8
    assert OmegaConf.load(shared / "config.yaml").buffer.file == "../shared/hopper_medium-v2.hdf5"
    assert (shared / "main.log").read_text() == "resumed runs/day/run\n" and not (shared / ".hydra").exists()
    assert not (shared / "MUJOCO_LOG.TXT").exists()
    with pytest.raises(SystemExit, match="exists already"):
        report.main([str(run), "--publish", str(shared)])
    shutil.rmtree(run / "seed1")  # every seed finished: the figure is still drawn again, never copied
    report.main([str(run), "--publish", str(tmp_path / "finished")])
    assert plt.imread(tmp_path / "finished" / "results.png").shape[0] > 8
    (run / "seed0" / "final.json").unlink()
    with pytest.raises(SystemExit, match="no seed has finished"):
        report.main([str(run), "--publish", str(tmp_path / "unfinished")])
