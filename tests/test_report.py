"""report.py on small fake run folders: the short paper, its results table, the question figures, the appendix."""
import importlib.util
import json
import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from omegaconf import OmegaConf

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import buffer  # noqa: E402
import report  # noqa: E402
import utils  # noqa: E402
from conftest import write_d4rl_file  # noqa: E402
from tools import figures, runs, stats, typeset  # noqa: E402

ROOT = Path(report.__file__).resolve().parent
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
    return [page.extract_text() for page in PdfReader(path).pages]


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


TEMPLATE = """## In short

- Top 10%: {top10} against {hopper}, {top10 - hopper:claim}; BC {bc:seeds}, {bc:trend}.

## Limitations

- {hopper:n} seeds; {data-identity}

## Method and data

A **bold** claim on `code` at {hopper:config.train.steps} steps.
"""


@pytest.fixture
def outputs(study, tmp_path):
    findings = tmp_path / "findings.md"
    findings.write_text(TEMPLATE)
    md = write(study, tmp_path / "out" / "report", "--findings", str(findings), "--standin")
    return tmp_path / "out", md


def test_the_answers_open_the_report_then_the_results_the_figures_the_method_and_the_appendix(outputs):
    _, md = outputs
    order = ["## In short\n\n- Top 10%: 71.0 ± 1.0 against 60.0 ± 2.0, a difference of +11.0 ±", "## Limitations",
             "## Results", "report_training.png", "report_percentile.png", "report_aux.png", "## Method",
             "## Method and data", "# Appendix: every run"]
    assert [md.index(part) for part in order] == sorted(md.index(part) for part in order)


def test_each_task_has_one_row_with_its_default_runs_scores_the_bar_and_the_paper(outputs):
    _, md = outputs
    assert row(md, "hopper-medium (train.steps=200)")[1:5] == ["60.0 ± 2.0", "58.0, 60.0, 62.0", "> 50: yes", "67.6"]
    assert row(md, "halfcheetah-medium (train.steps=200)")[1:5] == ["35.0 ± 1.0", "34.0, 35.0, 36.0", "> 40: no",
                                                                    "42.6"]
    assert "mean ± sample std over seeds (ddof = 1)" in md


def test_a_single_seed_shows_no_std_and_does_not_settle_the_bar(tmp_path):
    run = make_run(tmp_path / "runs" / "day" / "walker", WALKER, [71.0])
    md = write([run], tmp_path / "report")
    assert row(md, "walker2d-medium (train.steps=200)")[1:5] == ["71.0", "71.0", "> 70: n/a (1 seed)", "74.0"]


def test_settings_are_named_in_words_and_the_appendix_gives_the_overrides_that_repeat_them(outputs):
    _, md = outputs
    appendix = md.split("# Appendix: every run")[1]
    assert row(appendix, "DT, top 10%")[1:5] == ["day/top10", "71.0 ± 1.0", "70.0, 71.0, 72.0", "+11.0 ± 4.2"]
    assert "- BC, all data: `env=hopper model.condition_on_return=False train.steps=200`" in appendix
    assert row(appendix, "DT, all data, + next state and return-to-go")[1] == "day/aux"
    assert row(appendix, "DT, all data, fp32")[1:5:3] == ["day/fp32", "-2.0 ± 4.2 †"]  # against the bf16 default


def test_each_question_gets_a_figure_and_a_sentence_on_what_its_intervals_show(outputs):
    folder, md = outputs
    assert (folder / "report_percentile.png").stat().st_size > 0 and (folder / "report_aux.png").stat().st_size > 0
    assert ("excludes 0 (difference ± half-width): hopper-medium, DT, top 10%: +11.0 ± 4.2; hopper-medium, BC, all "
            "data: -19.0 ± 4.2; not shown: 1 other setting-task pairs.") in md
    assert "(difference ± half-width): none; not shown: 1 other setting-task pairs." in md


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
    assert row(md.split("# Appendix")[1], "DT, top 10%")[2:4] == ["71.5 ± 0.7", "71.0, 72.0 (NaN score: day/top10: 0)"]


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
        assert f"width: {image.size[0] / typeset.DPI:.3f}in" in typeset.typst([("image", png, "")])


# The legibility linter: what would be illegible on the printed page (report.py's figures are drawn at the size they
# are placed at, so a font's size is its printed size)
MIN_FONT_PT, MAX_LEGEND_ENTRIES = 7.0, 8


def legibility_problems(fig):
    """Text under MIN_FONT_PT, a legend over MAX_LEGEND_ENTRIES entries, overlapping tick labels, text cut off at the
    figure's edge, a visible axis without a label, a legend drawn over an axis' data area."""
    from matplotlib.legend import Legend
    from matplotlib.text import Text
    fig.canvas.draw()
    renderer, frame = fig.canvas.get_renderer(), fig.bbox.padded(1)
    ticks = {id(tick.label1): tick for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
             for tick in axis.get_major_ticks() + axis.get_minor_ticks()}
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
             and (id(t) not in ticks or shown_tick(ticks[id(t)]))]
    problems = [f"'{t.get_text()}' is {t.get_fontsize():g} pt" for t in texts if t.get_fontsize() < MIN_FONT_PT]
    problems += [f"a legend of {len(lg.get_texts())} entries" for lg in fig.findobj(Legend)
                 if len(lg.get_texts()) > MAX_LEGEND_ENTRIES]
    extents = {id(t): t.get_window_extent(renderer) for t in texts}
    problems += [f"'{t.get_text()}' is cut off" for t in texts
                 if not (frame.contains(*extents[id(t)].min) and frame.contains(*extents[id(t)].max))]
    for ax in (ax for ax in fig.axes if ax.get_visible()):
        for axis in (ax.xaxis, ax.yaxis):
            boxes = sorted((extents[id(t.label1)] for t in axis.get_major_ticks() + axis.get_minor_ticks()
                            if id(t.label1) in extents), key=lambda b: (b.x0, b.y0))
            problems += [f"tick labels of {ax.get_title() or 'a panel'} overlap"
                         for a, b in zip(boxes, boxes[1:]) if a.overlaps(b)]
            problems += [f"an axis of {ax.get_title() or 'a panel'} has no label"] if not axis.get_label_text() else []
        problems += [f"a legend on the data of {ax.get_title() or 'a panel'}" for lg in fig.findobj(Legend)
                     if lg.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))]
    return problems


def shown_tick(tick):
    """Is the tick inside its axis' view (drawn)?"""
    from matplotlib.axis import XTick
    axis = tick.axes.xaxis if isinstance(tick, XTick) else tick.axes.yaxis
    low, high = sorted(axis.get_view_interval())
    return low - 1e-9 * abs(high - low) <= tick.get_loc() <= high + 1e-9 * abs(high - low)


@pytest.mark.parametrize("flaw, problem", [
    (lambda fig, ax: ax.set_title("small", fontsize=5), "'small' is 5 pt"),
    (lambda fig, ax: [ax.plot([0, 1], label=f"run {i}") for i in range(9)] and fig.legend(loc="outside right"),
     "a legend of 9 entries"),
    (lambda fig, ax: ax.set_xticks(range(0, 40, 4), [f"setting number {i}" for i in range(10)]), "overlap"),
    (lambda fig, ax: fig.suptitle("a title far too long for its figure " * 4), "cut off"),
    (lambda fig, ax: ax.set_xlabel(""), "has no label"),
    (lambda fig, ax: ax.plot([0, 1], label="one") and ax.legend(), "a legend on the data"),
])
def test_the_legibility_linter_finds_small_text_long_legends_overlaps_cut_off_text_and_unlabelled_axes(flaw, problem):
    fig, ax = figures.pyplot().subplots(figsize=(typeset.TEXT_WIDTH_IN / 2, 2), layout="constrained")
    ax.set(xlabel="step", ylabel="score")
    flaw(fig, ax)
    assert any(problem in p for p in legibility_problems(fig))
    plt.close(fig)


def test_every_figure_of_a_report_is_legible_at_print_size(study, tmp_path, monkeypatch):
    checked, save = [], utils.save_png

    def checking_save(fig, path, dpi):
        checked.append((path, legibility_problems(fig)))
        return save(fig, path, dpi)
    monkeypatch.setattr(utils, "save_png", checking_save)
    write(study, tmp_path / "report")
    assert len(checked) >= 5 and [problems for _, problems in checked] == [[]] * len(checked), checked


def test_the_datasets_mean_and_best_come_from_each_runs_file(tmp_path):
    data = write_d4rl_file(tmp_path / "hopper_medium-v2.hdf5")
    run = make_run(tmp_path / "runs" / "day" / "hopper", HOPPER, [50.0], **{"buffer.file": str(data)})
    md = write([run], tmp_path / "report")
    scores = buffer.trajectory_scores_and_lengths(data.resolve())[0]
    assert row(md, "hopper-medium (train.steps=200)")[5:7] == [f"{scores.mean():.1f}", f"{scores.max():.1f}"]
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
    assert row(md.split("# Appendix")[1], "DT, all data")[6] == "hopper_medium-v2.hdf5: SHA-256 aaaaaaaaaaaa"


def test_a_runs_return_to_go_sweep_is_drawn(tmp_path):
    run = make_run(tmp_path / "runs" / "day" / "swept", HOPPER, [60.0, 62.0])
    rows = ["seed,target,episode,return,score"]
    for seed in (0, 1):
        rows += [f"{seed},{target},0,0,{achieved + seed}" for target, achieved in ((1000.0, 30.0), (3000.0, 58.0))]
    (run / "sweep_final.csv").write_text("\n".join(rows) + "\n")
    md = write([run], tmp_path / "report")
    assert "](report_sweep.png)" in md
    targets, achieved = runs.load_run(run).sweep_rows()
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
    for words in ("Results (stand-in data)", "hopper-medium", "60.0 ± 2.0", "A bold claim on code", "DT, top 10%",
                  "Does percentile behaviour cloning help?"):
        assert words in text, words


def test_publish_copies_a_reference_run_with_its_policies_and_one_video_without_state_or_paths(tmp_path):
    run = make_run(tmp_path / "runs" / "day" / "run", HOPPER, [50.0, 51.0], **{"train.steps": 20000})
    config = OmegaConf.load(run / "config.yaml")
    config.buffer.files = [str(ROOT.parent / "shared" / "hopper_medium-v2.hdf5")]
    config.resume = str(ROOT / "runs" / "day" / "run")
    OmegaConf.save(config, run / "config.yaml")
    (run / "main.log").write_text(f"resumed {ROOT}/runs/day/run\n")
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
    assert list(OmegaConf.load(shared / "config.yaml").buffer.files) == [".." + "/shared/hopper_medium-v2.hdf5"]
    assert OmegaConf.load(shared / "config.yaml").resume is None  # --config-path <it> trains it anew
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


# ---------------------------------------------------------------------------------------------
# Every number computed: the findings template, the statistics, the data's identity


NUMBER = re.compile(r"(?<![\w.\u200b])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w\u200b])")


def uncomputed_numbers(pages, computed):
    """The numbers in the PDF's text (a page's own number, typst's figure numbers, the DT paper's citation and the
    name SHA-256 aside) that no call of stats.number wrote."""
    text = " ".join(page.rstrip().rsplit("\n", 1)[0] for page in pages)  # the page number is a page's last line
    text = re.sub(r"\s+", " ", text)  # typst's no-break spaces, the PDF's line breaks
    for name in (report.DT_PAPER, "SHA-256"):  # a citation and a name
        text = text.replace(name, "")
    text = re.sub(r"Figure \d+:", "", text)
    return [x for x in NUMBER.findall(text) if x.lstrip("+-") not in computed]


@pytest.fixture
def computed(monkeypatch):
    """Every string stats.number returns while the fixture lives (without sign)."""
    written, number = set(), stats.number

    def recording(*args, **kwargs):
        text = number(*args, **kwargs)
        written.add(text.lstrip("+-"))
        return text
    assert report.n is stats.number  # report.py's short name for it
    monkeypatch.setattr(stats, "number", recording)
    monkeypatch.setattr(report, "n", recording)
    return written


@pytest.mark.parametrize("typed", ["", "It gains 17.3 points."])
def test_every_number_in_the_pdf_is_one_report_py_computed(study, tmp_path, computed, typed):
    pytest.importorskip("pypdf")
    (tmp_path / "findings.md").write_text(TEMPLATE + typed)
    write(study, tmp_path / "report", "--findings", str(tmp_path / "findings.md"))
    assert "71.0 ± 1.0" in " ".join(pdf_pages(tmp_path / "report.pdf"))
    assert uncomputed_numbers(pdf_pages(tmp_path / "report.pdf"), computed) == (["17.3"] if typed else [])


def test_numbers_carry_no_zero_width_space_only_paths_do(outputs):
    pytest.importorskip("pypdf")
    folder, md = outputs
    text = " ".join(pdf_pages(folder / "report.pdf"))
    assert text.count("60.0 ± 2.0") == md.count("60.0 ± 2.0") >= 2
    assert typeset.breakable("day/top10 102.2 ± 1.8 x.y") == "day/\u200btop10 102.2 ± 1.8 x.y"


@pytest.mark.parametrize("placeholder, says", [("{nowhere}", "no run folder named nowhere"),
                                               ("{hopper:colour}", "no field colour"),
                                               ("{hopper - top10:size}", "a difference has no field size")])
def test_a_placeholder_the_runs_cannot_fill_stops_the_report_in_one_line(study, tmp_path, placeholder, says):
    (tmp_path / "findings.md").write_text(f"## In short\n\n{placeholder}\n")
    with pytest.raises(SystemExit, match=re.escape(f"findings.md: {placeholder}: {says}")):
        write(study, tmp_path / "report", "--findings", str(tmp_path / "findings.md"))
    assert not (tmp_path / "report.pdf").exists()


def test_a_task_without_a_default_run_shows_its_settings_in_the_results(tmp_path):
    day = tmp_path / "runs" / "day"
    mine = [make_run(day / "lr", HOPPER, [40.0, 44.0], **{"train.lr": 3e-4}),
            make_run(day / "top", HOPPER, [30.0, 31.0], **{"buffer.top_percent": 10.0})]
    md = write(mine, tmp_path / "report").split("# Appendix")[0]
    assert row(md, "hopper-medium (train.steps=200), DT, all data, train.lr 0.0003")[1:3] == ["42.0 ± 2.8", "40.0, 44.0"]
    assert row(md, "hopper-medium (train.steps=200), DT, top 10%")[1] == "30.5 ± 0.7"


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


def test_the_walker2d_study_reads_the_peak_from_the_evals_and_the_falls_from_falls_csv(tmp_path):
    day = tmp_path / "runs" / "day"
    walker = make_run(day / "walker", WALKER, [60.0, 62.0, 64.0], [[70, 60], [72, 62], [68, 64]])
    ema = make_run(day / "ema", WALKER, [63.0, 64.0, 65.0], **{"train.ema_decay": 0.999})
    write_csv(walker / "falls.csv", ["seed", "target", "episode", "return", "score", "length"],
              [(0, 5000.0, 0, 1.0, 70.0, 1000), (0, 5000.0, 1, 1.0, 20.0, 300), (1, 5000.0, 0, 1.0, 66.0, 1000)])
    write_csv(walker / "falls_best.csv", ["seed", "target", "episode", "return", "score", "length"],
              [(0, 5000.0, 0, 1.0, 71.0, 1000), (1, 5000.0, 0, 1.0, 73.0, 1000)])
    (tmp_path / "findings.md").write_text("## In short\n\n- {walker:peak}; {walker:falls} fell, the others "
                                          "{walker:falls-full} (all {walker:falls-score}); best.pt: {walker:falls-best}, {walker:falls-best-full}"
                                          "; {ema:setting}\n")
    md = write([walker, ema], tmp_path / "report", "--findings", str(tmp_path / "findings.md"))
    assert ("70.0 at step 100; 1 of 3 episodes fell, the others 68.0 (all 52.0); best.pt: 0 of 2 episodes, 72.0; DT, "
            "all data, EMA 0.999") in md
    assert "Does a change to the course of training keep an early peak of the eval score" in md
    (tmp_path / "findings.md").write_text("## In short\n\n{ema:falls}\n")
    with pytest.raises(SystemExit, match=re.escape("has no falls.csv with episode lengths (python evaluate.py")):
        write([walker, ema], tmp_path / "report2", "--findings", str(tmp_path / "findings.md"))


def test_a_held_out_run_is_read_at_its_peak_and_at_its_end(tmp_path):
    held = make_run(tmp_path / "runs" / "day" / "held", WALKER, [60.0], [[70, 60]], **{"buffer.holdout": 0.05})
    write_csv(held / "seed0" / "eval.csv", ["step", "return_mean", "return_std", "score_mean", "score_std",
                                            "fit_action_mse", "holdout_action_mse"],
              [(100, 700, 1.0, 70.0, 1.0, 0.05, 0.052), (200, 600, 1.0, 60.0, 1.0, 0.04, 0.0425)])
    (tmp_path / "findings.md").write_text("## In short\n\n{held:holdout}\n")
    md = write([held], tmp_path / "report", "--findings", str(tmp_path / "findings.md"))
    assert ("0.0520 at the score's peak (step 100) and 0.0425 at the end, against 0.0500 and 0.0400 on training "
            "windows") in md
