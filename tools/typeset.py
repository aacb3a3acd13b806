"""report.py's typesetter: a document as a list of blocks, rendered to markdown and to PDF (typst). Blocks:
("heading", level, text), ("paragraph", text), ("bullets", [text]), ("table", header, rows), ("image", png path,
caption), ("pagebreak",); text may hold `code` and **bold**. An image is placed at the text's width, by file name."""
import re
import shutil
import tempfile
from pathlib import Path

MARGIN_CM = 1.8  # on A4
TEXT_WIDTH_IN = (21.0 - 2 * MARGIN_CM) / 2.54  # 6.85 in: report.py draws its figures at this width
DPI = 200  # of the report's figures: a PNG's size in pixels / DPI is its size on the page
TYPST_STYLE = f"""#set page(paper: "a4", margin: {MARGIN_CM}cm, numbering: "1")
#set text(size: 9.5pt)
#set par(justify: true)
#show table.cell.where(y: 0): strong
#show table.cell: set par(justify: false)
#show figure: set block(breakable: false)"""


def typst_text(text: str) -> str:
    """Plain text for typst markup: its special characters escaped."""
    return re.sub(r"([\\#$*_@<>\[\]`~=/-])", r"\\\1", str(text))


def typst_inline(text: str) -> str:
    """Markdown-ish text for typst: `code` spans as raw text, **bold** as strong, the rest escaped."""
    parts = re.split(r"(`[^`]+`|\*\*[^*]+\*\*)", str(text))
    return "".join(part if part.startswith("`") else f"*{typst_text(part[2:-2])}*" if part.startswith("**")
                   else typst_text(part) for part in parts)


def breakable(text: str) -> str:
    """Table cell text whose paths and file names (words with / or _) may wrap after . / _ (zero-width spaces)."""
    return re.sub(r"\S*[/_]\S*", lambda path: re.sub(r"([./_])", "\\1\u200b", path.group(0)), str(text))


MARKDOWN = {  # each kind of block in markdown, from the block's fields; a page break has none
    "heading": lambda level, text: f"{'#' * level} {text}",
    "paragraph": lambda text: text,
    "bullets": lambda items: "\n".join(f"- {item}" for item in items),
    "table": lambda header, rows: "\n".join([f"| {' | '.join(header)} |", f"|{'---|' * len(header)}",
                                             *(f"| {' | '.join(row)} |" for row in rows)]),
    "image": lambda path, caption: f"![{caption}]({Path(path).name})",
}
TYPST = {  # each kind of block in typst, its images beside the document
    "heading": lambda level, text: f"{'=' * level} {typst_text(text)}",
    "paragraph": typst_inline,
    "bullets": lambda items: "\n".join(f"- {typst_inline(item)}" for item in items),
    "table": lambda header, rows: f"#table(columns: {len(header)}, inset: 3pt, stroke: 0.4pt + gray, " + ", ".join(
        f"[{typst_text(breakable(cell))}]" for row in [header, *rows] for cell in row) + ")",
    "image": lambda path, caption: f'#figure(image("{Path(path).name}", width: {TEXT_WIDTH_IN:.3f}in), '
                                   f'caption: [{typst_inline(caption)}])',
    "pagebreak": lambda: "#pagebreak()",
}


def markdown(blocks: list) -> str:
    """The blocks as markdown."""
    return "\n\n".join(MARKDOWN[kind](*fields) for kind, *fields in blocks if kind in MARKDOWN) + "\n"


def typst(blocks: list) -> str:
    """The blocks as a typst document whose images lie beside it."""
    return "\n\n".join([TYPST_STYLE, *(TYPST[kind](*fields) for kind, *fields in blocks)]) + "\n"


def pdf(blocks: list) -> bytes:
    """The blocks typeset to PDF bytes, their images copied beside the source (no machine paths inside)."""
    import typst as typst_compiler
    with tempfile.TemporaryDirectory() as build:
        for path in [fields[0] for kind, *fields in blocks if kind == "image"]:
            shutil.copy(path, build)
        Path(build, "report.typ").write_text(typst(blocks))
        return typst_compiler.compile(str(Path(build, "report.typ")), root=build)
