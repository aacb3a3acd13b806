"""report.py on small fake run folders: the short paper, its results table, the question figures, the appendix."""
import importlib.util
import json

import matplotlib
import numpy as np
import pytest
from omegaconf import OmegaConf

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import report  # noqa: E402
from conftest import write_d4rl_file  # noqa: E402
from tools import typeset  # noqa: E402

HOPPER = {"name": "hopper", "id": "Hopper-v4", "target_return": 3600, "ref_min_score": -20.272305,
          "ref_max_score": 3234.3, "max_episode_len": 1000}
HALFCHEETAH = {"name": "halfcheetah", "id": "HalfCheetah-v4", "target_return": 12000, "ref_min_score": -280.178953,
               "ref_max_score": 12135.0, "max_episode_len": 1000}

WALKER = {"name": "walker2d", "id": "Walker2d-v4", "target_return": 5000, "ref_min_score": 1.629008,
          "ref_max_score": 4592.3, "max_episode_len": 1000}


def write_csv(path, header, rows):
    path.write_text("\n".join([",".join(header), *(",".join(map(str, r)) for r in rows)]) + "\n")


def make_run(run_dir, env, final_scores, eval_scores=None, **settings):
    """A finished run: config.yaml, summary.json and per seed train.csv, eval.csv, final.json.

    settings: dotted config keys and their values (train.lr=3e-4 as {"train.lr": 3e-4}, via **{...});
    eval_scores[seed] are the periodic eval scores at steps 100 and 200.
    """
    run_dir.mkdir(parents=True)
    config = OmegaConf.create({"env": env, "buffer": {"dataset": "medium"}, "train": {"steps": 200},
                               "seeds": list(range(len(final_scores))), "device": "cpu"})
    for key, value in settings.items():
        OmegaConf.update(config, key, value)
    OmegaConf.save(config, run_dir / "config.yaml")
    finals = []
    for seed, final in enumerate(final_scores):
        evals = eval_scores[seed] if eval_scores else [final - 10, final]
        seed_dir = run_dir / f"seed{seed}"
        seed_dir.mkdir()
        write_csv(seed_dir / "train.csv", ["step", "loss", "lr"], [(100, 0.5, 1e-4), (200, 0.2, 1e-4)])
        write_csv(seed_dir / "eval.csv", ["step", "return_mean", "return_std", "score_mean", "score_std"],
                  [(step, 10 * s, 1.0, s, 1.0) for step, s in zip((100, 200), evals)])
        finals.append({"seed": seed, "episodes": 100, "return_mean": 10 * final, "return_std": 1.0,
                       "score_mean": final, "score_std": 1.0, "train_seconds": 1.0, "final_eval_seconds": 1.0})
        (seed_dir / "final.json").write_text(json.dumps(finals[-1]))
    summary = {"env": env["name"], "dataset": OmegaConf.select(config, "buffer.dataset"),
               "seeds": [f["seed"] for f in finals], "missing_seeds": [],
               "score_mean": float(np.mean(final_scores)), "score_std": float(np.std(final_scores)),
               "per_seed": finals}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def write(runs, out, *options):
    report.main([str(r) for r in runs] + ["--out", str(out), *options])
    return (out.parent / f"{out.name}.md").read_text()


def row(md, label):
    """The cells of the first markdown table row that starts with `label`."""
    line = next(line for line in md.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def pdf_pages(path):
    from pypdf import PdfReader
    return [page.extract_text().replace("\u200b", "") for page in PdfReader(path).pages]


@pytest.fixture
def study(tmp_path):
    """hopper-medium: the default, percentile BC and the auxiliary losses; halfcheetah-medium: the default."""
    day = tmp_path / "runs" / "day"
    return [make_run(day / "hopper", HOPPER, [58.0, 60.0, 62.0], [[40, 55], [50, 45], [45, 50]]),
            make_run(day / "top10", HOPPER, [70.0, 71.0, 72.0], **{"buffer.top_percent": 10.0}),
            make_run(day / "top25", HOPPER, [59.0, 62.0, 63.0], **{"buffer.top_percent": 25.0}),
            make_run(day / "bc", HOPPER, [40.0, 41.0, 42.0], **{"model.condition_on_return": False}),
            make_run(day / "aux", HOPPER, [60.0, 61.0, 62.0], **{"train.aux_state_coef": 1.0,
                                                                 "train.aux_rtg_coef": 1.0}),
            make_run(day / "fp32", HOPPER, [57.0, 58.0, 59.0], **{"train.precision": "fp32"}),
            make_run(day / "cheetah", HALFCHEETAH, [34.0, 35.0, 36.0])]


@pytest.fixture
def outputs(study, tmp_path):
    findings = tmp_path / "findings.md"
    findings.write_text("## In short\n\n- Top 10% wins.\n\n## Method and data\n\nA **bold** claim on `code`.\n")
    md = write(study, tmp_path / "out" / "report", "--findings", str(findings), "--standin")
    return tmp_path / "out", md


def test_the_answers_open_the_report_then_the_results_the_figures_the_method_and_the_appendix(outputs):
    _, md = outputs
    order = ["## In short\n\n- Top 10% wins.", "## Results", "report_training.png", "report_percentile.png",
             "report_aux.png", "## Method and data", "# Appendix: every run"]
    assert [md.index(part) for part in order] == sorted(md.index(part) for part in order)


def test_each_task_has_one_row_with_its_default_runs_scores_the_bar_and_the_paper(outputs):
    _, md = outputs
    assert row(md, "hopper-medium (train.steps=200)")[1:5] == ["60.0 ± 1.6", "58.0, 60.0, 62.0", "> 50: yes", "67.6"]
    assert row(md, "halfcheetah-medium (train.steps=200)")[1:5] == ["35.0 ± 0.8", "34.0, 35.0, 36.0", "> 40: no",
                                                                    "42.6"]


def test_a_single_seed_shows_no_std_and_does_not_settle_the_bar(tmp_path):
    run = make_run(tmp_path / "runs" / "day" / "walker", WALKER, [71.0])
    md = write([run], tmp_path / "report")
    assert row(md, "walker2d-medium (train.steps=200)")[1:5] == ["71.0", "71.0", "> 70: n/a (1 seed)", "74.0"]


def test_settings_are_named_in_words_and_the_appendix_gives_the_overrides_that_repeat_them(outputs):
    _, md = outputs
    appendix = md.split("# Appendix: every run")[1]
    assert row(appendix, "DT, top 10%")[1:5] == ["day/top10", "71.0 ± 0.8", "70.0, 71.0, 72.0", "+11.0"]
    assert row(appendix, "BC, all data")[5] == "env=hopper model.condition_on_return=False train.steps=200"
    assert row(appendix, "DT, all data, + next state and return-to-go")[1] == "day/aux"
    assert row(appendix, "DT, all data, fp32")[1] == "day/fp32"


def test_each_question_gets_a_figure_and_a_sentence_on_what_moved_beyond_the_seeds_spread(outputs):
    folder, md = outputs
    assert (folder / "report_percentile.png").stat().st_size > 0 and (folder / "report_aux.png").stat().st_size > 0
    assert ("Against DT, all data, beyond the seeds' spread: hopper-medium, DT, top 10%: 71.0 ± 0.8 (+11.0); "
            "hopper-medium, BC, all data: 41.0 ± 0.8 (-19.0). Within it: 1 other setting-task pair.") in md
    assert "Against action only, beyond the seeds' spread: none." in md


def test_the_main_part_is_at_most_six_pages_and_no_sentence_says_nan_or_inf(outputs, tmp_path):
    pytest.importorskip("pypdf")
    folder, md = outputs
    pages = pdf_pages(folder / "report.pdf")
    appendix = next(i for i, text in enumerate(pages) if "Appendix: every run" in text)
    assert 1 <= appendix <= 6, "the appendix starts on a page of its own after at most 6 pages"
    words = set(" ".join(pages).lower().replace(",", " ").replace(".", " ").split()) | set(md.lower().split())
    assert not words & {"nan", "inf", "-inf", "+nan"}


def test_a_run_with_a_nan_score_is_named_and_left_out_of_the_numbers(study, tmp_path):
    summary = json.loads((study[1] / "summary.json").read_text())
    summary["per_seed"][0]["score_mean"] = float("nan")
    (study[1] / "summary.json").write_text(json.dumps(summary))
    md = write(study, tmp_path / "report")
    assert "left out of every number here (its main.log says why): day/top10 (seed 0)." in md
    assert row(md.split("# Appendix")[1], "DT, top 10%")[2:4] == ["71.5 ± 0.5", "71.0, 72.0 (NaN score: day/top10: 0)"]


def test_missing_seeds_are_named_in_the_appendix(tmp_path):
    run = make_run(tmp_path / "runs" / "day" / "hopper", HOPPER, [58.0, 60.0])
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "missing_seeds": [2]}))
    md = write([run], tmp_path / "report")
    assert row(md.split("# Appendix")[1], "DT, all data")[3] == "58.0, 60.0 (missing seeds: day/hopper: 2)"


def test_every_figure_is_drawn_at_the_width_it_is_placed_at(outputs):
    folder, _ = outputs
    from PIL import Image
    for png in folder.glob("report_*.png"):
        with Image.open(png) as image:
            assert image.size[0] / typeset.DPI == pytest.approx(typeset.TEXT_WIDTH_IN, abs=0.01), png.name
        assert typeset.placed_width_in(png) == pytest.approx(image.size[0] / typeset.DPI)


@pytest.mark.parametrize("flaw, problem", [
    (lambda fig, ax: ax.set_title("small", fontsize=5), "'small' is 5 pt"),
    (lambda fig, ax: [ax.plot([0, 1], label=f"run {i}") for i in range(9)] and ax.legend(), "a legend of 9 entries"),
    (lambda fig, ax: ax.set_xticks(range(0, 40, 4), [f"setting number {i}" for i in range(10)]), "overlap"),
    (lambda fig, ax: fig.suptitle("a title far too long for its figure " * 4), "cut off"),
])
def test_the_legibility_check_finds_small_text_long_legends_overlapping_ticks_and_cut_off_titles(flaw, problem):
    fig, ax = report.pyplot().subplots(figsize=(typeset.TEXT_WIDTH_IN / 2, 2))
    flaw(fig, ax)
    assert any(problem in p for p in report.legibility_problems(fig))
    with pytest.raises(AssertionError, match="illegible"):
        report.save_figure(fig, "unused.png")


def test_the_legibility_check_passes_a_plain_figure():
    fig, ax = report.pyplot().subplots(figsize=(typeset.TEXT_WIDTH_IN, 2))
    ax.plot([0, 1], label="one")
    ax.set_title("a title")
    ax.legend()
    assert report.legibility_problems(fig) == []
    plt.close(fig)


def test_the_datasets_mean_and_best_come_from_each_runs_file(tmp_path):
    data = write_d4rl_file(tmp_path / "hopper_medium-v2.hdf5")
    run = make_run(tmp_path / "runs" / "day" / "hopper", HOPPER, [50.0], **{"buffer.file": str(data)})
    md = write([run], tmp_path / "report")
    scores = report.trajectory_scores(data.resolve())
    assert row(md, "hopper-medium (train.steps=200)")[5:] == [f"{scores.mean():.1f}", f"{scores.max():.1f}"]
    assert (tmp_path / "report_datasets.png").exists()


def test_runs_on_different_files_of_the_same_name_are_said_to_be(tmp_path):
    day = tmp_path / "runs" / "day"
    first = make_run(day / "a", HOPPER, [50.0], **{"buffer.file": "/x/hopper_medium-v2.hdf5",
                                                   "buffer.sha256": "a" * 64})
    second = make_run(day / "b", HOPPER, [52.0], **{"buffer.file": "/y/hopper_medium-v2.hdf5",
                                                    "buffer.top_percent": 10.0, "buffer.sha256": "b" * 64})
    md = write([first, second], tmp_path / "report")
    assert ("Runs on different files named hopper_medium-v2.hdf5: day/a (SHA-256 aaaaaaaaaaaa); day/b (SHA-256 "
            "bbbbbbbbbbbb).") in md
    assert row(md.split("# Appendix")[1], "DT, all data")[6] == "hopper_medium-v2.hdf5 (aaaaaaaaaaaa)"


def test_a_runs_return_to_go_sweep_is_drawn(tmp_path):
    run = make_run(tmp_path / "runs" / "day" / "swept", HOPPER, [60.0, 62.0])
    rows = ["seed,target,episode,return,score"]
    for seed in (0, 1):
        rows += [f"{seed},{target},0,0,{achieved + seed}" for target, achieved in ((1000.0, 30.0), (3000.0, 58.0))]
    (run / "sweep_final.csv").write_text("\n".join(rows) + "\n")
    md = write([run], tmp_path / "report")
    assert "](report_sweep.png)" in md
    targets, achieved = report.sweep_rows(report.load_run(run))
    assert achieved.tolist() == [[30.0, 31.0], [58.0, 59.0]]


def test_standin_flag_labels_the_title_and_table(outputs):
    _, md = outputs
    assert md.startswith("# Decision Transformer on D4RL MuJoCo (stand-in data)")
    assert "## Results (stand-in data)" in md


def test_folder_without_summary_is_refused_with_its_name(study, tmp_path):
    (study[-1] / "summary.json").unlink()
    with pytest.raises(SystemExit, match=r"day/cheetah: no summary.json"):
        write(study, tmp_path / "report")
    assert not (tmp_path / "report.pdf").exists()


def test_without_out_the_report_goes_under_runs_and_never_replaces_a_file(tmp_path, monkeypatch):
    run = make_run(tmp_path / "runs" / "a", HOPPER, [50.0])
    monkeypatch.chdir(tmp_path)
    report.main([str(run)])
    (tmp_path / "runs" / "report.md").write_text("my notes")
    report.main([str(run)])
    assert (tmp_path / "runs" / "report.md").read_text() == "my notes"
    assert (tmp_path / "runs" / "report-1.md").exists() and (tmp_path / "runs" / "report-1.pdf").exists()
    assert not (tmp_path / "report.pdf").exists()


def test_the_report_names_the_dataset_file_without_the_machines_folders(tmp_path):
    run = make_run(tmp_path / "runs" / "a", HOPPER, [50.0], **{"buffer.file": "/home/me/data/hopper_medium-v2.hdf5"})
    md = write([run], tmp_path / "report")
    assert "hopper_medium-v2.hdf5" in md and "/home/me" not in md


def test_the_pdf_holds_the_tables_and_figures(outputs):
    pytest.importorskip("pypdf")
    folder, _ = outputs
    text = " ".join(pdf_pages(folder / "report.pdf"))
    for words in ("Results (stand-in data)", "hopper-medium", "60.0 ± 1.6", "A bold claim on code", "DT, top 10%",
                  "Does percentile behaviour cloning help?"):
        assert words in text, words


def test_publish_copies_a_reference_run_with_its_policies_and_one_video_without_state_or_paths(tmp_path):
    run = make_run(tmp_path / "runs" / "day" / "run", HOPPER, [50.0, 51.0], **{"train.steps": 20000})
    config = OmegaConf.load(run / "config.yaml")
    config.buffer.file = str(report.ROOT.parent / "shared" / "hopper_medium-v2.hdf5")
    OmegaConf.save(config, run / "config.yaml")
    (run / "main.log").write_text(f"resumed {report.ROOT}/runs/day/run\n")
    for seed in (0, 1):
        for name in ("last.pt", "best.pt", "final.pt", "video.mp4"):
            (run / f"seed{seed}" / name).write_bytes(b"bytes")
    (run / ".hydra").mkdir()
    (run / ".hydra" / "hydra.yaml").write_text("/home/me")
    (run / "MUJOCO_LOG.TXT").write_text("WARNING: a deprecated compiler attribute")  # MuJoCo's, not the run's
    (run / "seed2").mkdir()  # a seed still training: left out
    write_csv(run / "seed2" / "train.csv", ["step", "loss", "lr"], [(100, 0.5, 1e-4)])
    report.main([str(run), "--publish", str(tmp_path / "shared")])
    shared = tmp_path / "shared"
    assert sorted(p.name for p in (shared / "seed0").iterdir()) == ["eval.csv", "final.json", "final.pt", "train.csv",
                                                                   "video.mp4"]
    assert sorted(p.name for p in (shared / "seed1").iterdir()) == ["eval.csv", "final.json", "final.pt", "train.csv"]
    assert not (shared / "seed2").exists() and not (shared / ".hydra").exists()
    assert not (shared / "MUJOCO_LOG.TXT").exists()
    assert (shared / "main.log").read_text() == "resumed runs/day/run\n"
    assert OmegaConf.load(shared / "config.yaml").buffer.file == "../shared/hopper_medium-v2.hdf5"
    assert (shared / "results.png").exists()
    with pytest.raises(SystemExit, match="exists already"):
        report.main([str(run), "--publish", str(shared)])


def test_publish_keeps_a_study_runs_numbers_but_not_its_policies_or_videos(tmp_path):
    run = make_run(tmp_path / "runs" / "day" / "top10", HOPPER, [50.0], **{"buffer.top_percent": 10.0})
    for name in ("final.pt", "video.mp4", "sweep_final_3600.mp4"):
        (run / "seed0" / name).write_bytes(b"bytes")
    report.main([str(run), "--publish", str(tmp_path / "shared")])
    assert sorted(p.name for p in (tmp_path / "shared" / "seed0").iterdir()) == ["eval.csv", "final.json",
                                                                                 "train.csv"]
    assert (tmp_path / "shared" / "summary.json").exists()


def test_markdown_links_figures_relative_to_the_report(outputs):
    _, md = outputs
    assert "](report_training.png)" in md and "](report_runs0.png)" in md
    assert importlib.util.find_spec("typst") is not None


def test_a_run_named_twice_counts_once(tmp_path):
    run = make_run(tmp_path / "runs" / "day" / "walker", WALKER, [71.0])
    md = write([run, f"{run}/", run], tmp_path / "report")
    assert row(md, "walker2d-medium (train.steps=200)")[1:3] == ["71.0", "71.0"]


def test_a_garbage_eval_csv_is_one_line_naming_it(tmp_path):
    run = make_run(tmp_path / "runs" / "day" / "walker", WALKER, [71.0])
    (run / "seed0" / "eval.csv").write_bytes(b"step,score_mean\n\x00\xff,abc\n")
    with pytest.raises(SystemExit, match=rf"error: {run / 'seed0' / 'eval.csv'} is damaged"):
        write([run], tmp_path / "report")


def test_out_under_a_file_is_one_line_naming_it(tmp_path):
    run = make_run(tmp_path / "runs" / "day" / "walker", WALKER, [71.0])
    (tmp_path / "file").write_text("mine")
    with pytest.raises(SystemExit, match=rf"error: --out {tmp_path / 'file' / 'report'}: .*give a path in a folder"):
        write([run], tmp_path / "file" / "report")
    assert (tmp_path / "file").read_text() == "mine"
