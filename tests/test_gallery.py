"""The gallery's runs train again from what is published: each config.yaml composes as it stands (python main.py
--config-path <run> --config-name config), and the report's overrides of cfgs/ compose to each run's config; every
relative link of the project's markdown works; the findings template types no number."""
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from cfgs import schema
from tools import runs

ROOT = Path(__file__).resolve().parents[1]
GALLERY = sorted(p.parent for p in (ROOT / "gallery").glob("*/config.yaml"))


def composed(folder, name="config", overrides=()):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(folder), version_base="1.3"):
        cfg = compose(name, overrides=list(overrides))
    OmegaConf.resolve(cfg)
    return cfg


@pytest.mark.parametrize("run", GALLERY, ids=lambda p: p.name)
def test_every_gallery_config_composes_as_a_new_run(run):
    schema.refuse_code_in_argv([str(ROOT / "main.py"), "--config-path", f"gallery/{run.name}", "--config-name",
                                "config"])  # what main.py checks before Hydra reads the file
    cfg = composed(run)
    schema.check(cfg)
    assert cfg.resume is None, "a stored resume: would continue a run folder that is not here"


@pytest.mark.parametrize("run", GALLERY, ids=lambda p: p.name)
def test_the_reports_overrides_compose_to_each_gallery_runs_config(run):
    finished = runs.load_run(run)
    cfg = runs.flatten(OmegaConf.to_container(composed(ROOT / "cfgs", overrides=runs.overrides(finished).split())))
    differ = {k: (v, finished.config.get(k)) for k, v in cfg.items()
              if not k.startswith(runs.SET_AT_START) and v != finished.config.get(k)}
    assert not differ, f"python main.py {runs.overrides(finished)} trains another config: {differ}"
    assert f"buffer.dataset={cfg['buffer.dataset']}" in runs.overrides(finished) or cfg["buffer.dataset"] == "medium"


MARKDOWN = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "gallery").glob("*.md")])


def anchors(path):
    """GitHub's anchors of a markdown file's headings."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_its_file_and_heading(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
            broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


def test_the_findings_template_types_no_number():
    text = (ROOT / "gallery" / "findings.md").read_text()
    text = re.sub(r"\{[^{}]+\}|`[^`]+`", "", text)  # placeholders and code
    typed = re.findall(r"(?<![\w.-])\d+(?:\.\d+)?(?![\w])", text)
    assert not typed, f"numbers typed into gallery/findings.md: {typed}; name them as placeholders"


def table_rows(markdown: str, header: str) -> dict[str, list[str]]:
    """{task: its cells after the first} of the table whose header row starts with `header`."""
    table = markdown.split(header, 1)[1].split("\n\n", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    return {re.sub(r"\[([^]]+)\]\([^)]*\)|,.*|\s*\(.*\)", r"\1", cells[0]).strip(): cells[1:] for cells in rows}


def test_the_readme_results_table_is_the_reports():
    readme = table_rows((ROOT / "README.md").read_text(), "| task | final score")
    report = table_rows((ROOT / "gallery" / "report.md").read_text(), "| task | final score")
    assert readme, "README.md has no results table"
    differ = {task: (cells, report.get(task, [])[:len(cells)]) for task, cells in readme.items()
              if cells != report.get(task, [])[:len(cells)]}
    assert not differ, f"README.md's results differ from gallery/report.md's (regenerate and copy): {differ}"
