"""Gather finished runs into one report: report.pdf and its markdown twin report.md.

    python report.py runs/2026-11-24/07-49-18 runs/2026-11-24/09-12-03
    python report.py runs/<date>/<time> --out results/hopper      # results/hopper.pdf, .md, _loss.png
    python report.py runs/<date>/<time> --standin                 # scores on stand-in data, labelled so
"""
import argparse
import io
import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import utils  # noqa: E402

ENV_CONFIGS = Path(__file__).resolve().parent / "cfgs" / "env"  # assignment_bar, dt_paper_score per dataset
RESULT_COLUMNS = ["run", "env-dataset", "seeds", "final score", "best eval (step)", "bar", "pass", "DT paper"]


def load_run(path):
    """A run folder -> its label, flat config, summary and seed folders; SystemExit if it is not a finished run."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise SystemExit(f"error: {path}: no such folder")
    missing = [name for name in ("config.yaml", "summary.json") if not (run_dir / name).is_file()]
    if missing:
        raise SystemExit(f"error: {path}: no {' and no '.join(missing)} there; "
                         "give a run folder that main.py has finished (it writes both)")
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {run_dir / 'summary.json'} is empty or not JSON ({e}): python main.py "
                         f"resume={path} writes it again") from None
    config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    config.pop("defaults", None)
    if config.get("buffer", {}).get("file"):  # the file's name: its folder is the machine's, not the run's
        config["buffer"]["file"] = Path(config["buffer"]["file"]).name
    return {"dir": run_dir.resolve(), "label": "/".join(run_dir.resolve().parts[-2:]), "config": flatten(config),
            "summary": summary, "seed_dirs": sorted(run_dir.glob("seed*"))}


def flatten(tree, prefix=""):
    """Nested dicts -> {"dotted.key": value}; lists stay values."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def seed_curve(run, csv_name, key):
    """steps, mean over seeds of column `key` of seed*/csv_name; None if no seed has it."""
    curve = utils.mean_std_over_seeds([utils.read_csv(d / csv_name) for d in run["seed_dirs"]], key)
    return None if curve is None else curve[:2]


def result_row(run):
    """The run's row of the results table, as strings."""
    summary, env = run["summary"], run["summary"]["env"]
    dataset = Path(summary["dataset"]).stem  # a buffer.path file shows as its name
    seeds = ", ".join(map(str, summary["seeds"])) or "none"
    if summary["missing_seeds"]:
        seeds += f" ({', '.join(map(str, summary['missing_seeds']))} missing)"
    episodes = sorted({f["episodes"] for f in summary["per_seed"]})
    score = summary["score_mean"]
    spread = f" ± {summary['score_std']:.1f}" if len(summary["seeds"]) > 1 else ""  # no std over one seed
    final = "n/a" if score is None else f"{score:.1f}{spread} ({'/'.join(map(str, episodes))} ep)"
    best = seed_curve(run, "eval.csv", "score_mean")
    best = "n/a" if best is None else f"{best[1].max():.1f} ({best[0][best[1].argmax()]:.0f})"
    facts = OmegaConf.load(ENV_CONFIGS / f"{env}.yaml") if (ENV_CONFIGS / f"{env}.yaml").exists() else {}
    bar = facts.get("assignment_bar", {}).get(dataset)
    paper = facts.get("dt_paper_score", {}).get(dataset)
    if bar is None or score is None:
        passes = "-"
    elif len(summary["seeds"]) < 3:  # the bar is on the mean of 3 seeds
        passes = f"n/a ({len(summary['seeds'])} seed{'s' if len(summary['seeds']) > 1 else ''})"
    else:
        passes = "yes" if score > bar else "no"
    return [run["label"], f"{env}-{dataset}", seeds, final, best, "-" if bar is None else f"> {bar:g}", passes,
            "-" if paper is None else f"{paper:.1f}"]


def config_differences(runs):
    """Rows [key, value in run 1, value in run 2, ...] for the config keys whose values differ (resume ignored)."""
    keys = sorted(set().union(*(run["config"] for run in runs)) - {"resume"})
    rows = [[key, *(str(run["config"].get(key, "(absent)")) for run in runs)] for key in keys]
    return [row for row in rows if len(set(row[1:])) > 1]


def loss_figure(runs):
    """Training loss of every run (mean over seeds) on one log-scale axis."""
    fig, ax = plt.subplots(figsize=(11, 5))
    for run in runs:
        curve = seed_curve(run, "train.csv", "loss")
        if curve is not None:
            ax.plot(*curve, label=f"{run['label']} ({run['summary']['env']}-{Path(run['summary']['dataset']).stem})")
    ax.set(xlabel="training step", ylabel="action MSE (mean over seeds)", yscale="log", title="training loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def titles(standin):
    """The report's title and the results table's heading."""
    label = " (stand-in data)" if standin else ""
    return f"Decision Transformer on D4RL MuJoCo{label}", f"Results{label}"


def notes(standin):
    """The lines that say what the numbers are."""
    lines = ["final score: D4RL normalized score of each seed's final evaluation (ep = episodes per seed), "
             "mean ± std over seeds.",
             "best eval: the highest periodic evaluation score (mean over seeds) and its training step.",
             "bar: the assignment's bar on the final score's mean over 3 seeds (n/a with fewer seeds). "
             "DT paper: Chen et al. 2021, Table 2."]
    if standin:
        lines.append("These scores are on stand-in data, not the D4RL datasets: they are labelled stand-in.")
    else:
        lines.append("Scores on stand-in data (not the D4RL datasets) must be labelled stand-in: use --standin.")
    return lines


def markdown(runs, standin, differences, md_path, loss_png):
    """The report as markdown; image links are relative to the report's folder."""
    def table(header, rows):
        return [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}", *(f"| {' | '.join(r)} |" for r in rows)]

    here, (title, heading) = md_path.resolve().parent, titles(standin)
    lines = [f"# {title}", "", f"## {heading}", "", *table(RESULT_COLUMNS, [result_row(r) for r in runs]), "",
             *(f"- {line}" for line in notes(standin)), "", "## Config differences", ""]
    lines += table(["key", *(r["label"] for r in runs)], differences) if differences else \
        ["No differences among the runs (resume ignored)."]
    lines += ["", "## Training loss", "", f"![training loss]({loss_png.name})", "", "## Per-run figures"]
    for run in runs:
        png = run["dir"] / "results.png"
        link = f"![{run['label']}]({Path(os.path.relpath(png, here)).as_posix()})" if png.exists() else "no results.png"
        lines += ["", f"### {run['label']}", "", link]
    return "\n".join(lines) + "\n"


def table_page(pdf, title, header, rows, lines=()):
    """One landscape page: a title, a table and notes below it."""
    fig = plt.figure(figsize=(11.7, 8.3))
    fig.text(0.5, 0.97, title, ha="center", va="top", fontsize=14, weight="bold")
    for i, line in enumerate(lines):
        fig.text(0.04, 0.12 - 0.025 * i, line, fontsize=9)
    ax = fig.add_axes([0.03, 0.15, 0.94, 0.72])
    ax.axis("off")
    table = ax.table(cellText=rows or [["-"] * len(header)], colLabels=header, loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    table.scale(1, 1.6)
    table.auto_set_column_width(range(len(header)))
    pdf.savefig(fig)
    plt.close(fig)


def image_page(pdf, png, title):
    fig, ax = plt.subplots(figsize=(11.7, 8.3))
    ax.imshow(plt.imread(png))
    ax.set_title(title)
    ax.axis("off")
    pdf.savefig(fig)
    plt.close(fig)


def write_report(runs, out, standin=False):
    """Write <out>.pdf, <out>.md and <out>_loss.png, each atomically; return their paths."""
    title, heading = titles(standin)
    pdf_path, md_path, loss_png = Path(f"{out}.pdf"), Path(f"{out}.md"), Path(f"{out}_loss.png")
    differences = config_differences(runs)
    fig, image = loss_figure(runs), io.BytesIO()
    fig.savefig(image, format="png", dpi=110)
    utils.atomic_write_bytes(loss_png, image.getvalue())
    document = io.BytesIO()  # the whole pdf in memory, then written atomically (temp file + os.replace)
    with PdfPages(document) as pdf:
        table_page(pdf, f"{title}\n{heading}", RESULT_COLUMNS, [result_row(r) for r in runs], notes(standin))
        table_page(pdf, "Config differences (resume ignored)", ["key", *(r["label"] for r in runs)], differences)
        pdf.savefig(fig)
        for run in runs:
            if (run["dir"] / "results.png").exists():
                image_page(pdf, run["dir"] / "results.png", run["label"])
    plt.close(fig)
    utils.atomic_write_bytes(pdf_path, document.getvalue())
    utils.atomic_write_bytes(md_path, markdown(runs, standin, differences, md_path, loss_png).encode())
    return pdf_path, md_path, loss_png


def new_stem(stem):
    """stem, or stem-1, stem-2, ...: the first whose outputs are all new files (nothing of the user's is replaced)."""
    taken = lambda s: any(Path(f"{s}{end}").exists() for end in (".pdf", ".md", "_loss.png"))  # noqa: E731
    return next(s for s in (f"{stem}-{i}" if i else stem for i in range(10_000)) if not taken(s))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders runs/<date>/<time> made by main.py or main_mp.py")
    parser.add_argument("--out", help="path stem of the outputs: <out>.pdf, <out>.md, <out>_loss.png (default: "
                                      "report, or report-1, report-2, ... where those files exist)")
    parser.add_argument("--standin", action="store_true", help="the runs used stand-in data: say so in the titles")
    args = parser.parse_args(argv)
    runs = [load_run(path) for path in args.runs]  # every folder checked before anything is written
    for path in write_report(runs, args.out or new_stem("report"), args.standin):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
