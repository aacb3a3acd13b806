"""A document as a list of blocks, rendered to markdown and to PDF (typst): report.py's typesetter.

Blocks are tuples: ("heading", level, text), ("paragraph", text), ("bullets", [text]), ("table", header, rows),
("image", png path, caption), ("pagebreak",). Text may hold `code` spans and **bold**.
"""
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Union

from PIL import Image

MARGIN_CM = 1.8  # on A4
TEXT_WIDTH_IN = (21.0 - 2 * MARGIN_CM) / 2.54  # 6.85 in: report.py draws its figures at this width
DPI = 200  # of the report's figures: a PNG's size in pixels / DPI is its size on the page


def heading(level: int, text: str) -> tuple:
    return ("heading", level, text)


def paragraph(text: str) -> tuple:
    return ("paragraph", text)


def bullets(items: list) -> tuple:
    return ("bullets", list(items))


def table(header: list, rows: list) -> tuple:
    return ("table", header, rows)


def image(path: Union[str, Path], caption: str) -> tuple:
    return ("image", Path(path), caption)


def pagebreak() -> tuple:
    return ("pagebreak",)


def markdown(blocks: list, here: str) -> str:
    """The blocks as markdown; images linked relative to the folder `here`."""
    out = []
    for block in blocks:
        kind = block[0]
        if kind == "heading":
            out.append(f"{'#' * block[1]} {block[2]}")
        elif kind == "paragraph":
            out.append(block[1])
        elif kind == "bullets":
            out.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "table":
            header, rows = block[1], block[2]
            out.append("\n".join([f"| {' | '.join(header)} |", f"|{'---|' * len(header)}",
                                  *(f"| {' | '.join(r)} |" for r in rows)]))
        elif kind == "image":
            out.append(f"![{block[2]}]({Path(os.path.relpath(os.path.abspath(block[1]), here)).as_posix()})")
    return "\n\n".join(out) + "\n"


def typst_text(text: str) -> str:
    """Plain text for typst markup: its special characters escaped."""
    return re.sub(r"([\\#$*_@<>\[\]`~=/-])", r"\\\1", str(text))


def typst_inline(text: str) -> str:
    """Markdown-ish text for typst: `code` spans as raw text, **bold** as strong, the rest escaped."""
    parts = re.split(r"(`[^`]+`|\*\*[^*]+\*\*)", str(text))
    return "".join(part if part.startswith("`") else f"*{typst_text(part[2:-2])}*" if part.startswith("**")
                   else typst_text(part) for part in parts)


def breakable(text: str) -> str:
    """Table cell text whose paths and file names (words with a / or _) may break after . / _ (zero-width spaces),
    so they wrap inside the cell; no other word, no number, gets one."""
    return re.sub(r"\S*[/_]\S*", lambda path: re.sub(r"([./_])", "\\1\u200b", path.group(0)), str(text))


def placed_width_in(path: Union[str, Path]) -> float:
    """The width a PNG is placed at: its own size at DPI, at most the text width."""
    with Image.open(path) as png:
        return min(TEXT_WIDTH_IN, png.size[0] / DPI)


def typst(blocks: list, images: dict) -> str:
    """The blocks as a typst document; images: {png path: its name in the build folder}."""
    out = [f'#set page(paper: "a4", margin: {MARGIN_CM}cm, numbering: "1")', '#set text(size: 9.5pt)',
           '#set par(justify: true)', '#show table.cell.where(y: 0): strong',
           '#show table.cell: set par(justify: false)',
           '#show figure: set block(breakable: false)']
    for block in blocks:
        kind = block[0]
        if kind == "heading":
            out.append(f"{'=' * block[1]} {typst_text(block[2])}")
        elif kind == "paragraph":
            out.append(typst_inline(block[1]))
        elif kind == "bullets":
            out.append("\n".join(f"- {typst_inline(item)}" for item in block[1]))
        elif kind == "table":
            header, rows = block[1], block[2]
            cells = ", ".join(f"[{typst_text(breakable(c))}]" for r in [header, *rows] for c in r)
            out.append(f"#table(columns: {len(header)}, inset: 3pt, stroke: 0.4pt + gray, {cells})")
        elif kind == "image":
            out.append(f'#figure(image("{images[block[1]]}", width: {placed_width_in(block[1]):.3f}in), '
                       f'caption: [{typst_inline(block[2])}])')
        elif kind == "pagebreak":
            out.append("#pagebreak()")
    return "\n\n".join(out) + "\n"


def pdf(blocks: list) -> bytes:
    """The blocks typeset to PDF bytes, their images copied beside the source (no machine paths inside)."""
    import typst as typst_compiler
    with tempfile.TemporaryDirectory() as build:
        paths = list(dict.fromkeys(b[1] for b in blocks if b[0] == "image"))
        images = {path: f"figure{i}.png" for i, path in enumerate(paths)}
        for path, name in images.items():
            shutil.copyfile(path, Path(build, name))
        Path(build, "report.typ").write_text(typst(blocks, images))
        return typst_compiler.compile(str(Path(build, "report.typ")), root=build)
