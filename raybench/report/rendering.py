"""The report written out: Markdown (report.md) and one HTML page (report.html), linking figures and CSV tables."""

from __future__ import annotations

import html
import re

from raybench.report.document import Bullets, Heading, Paragraph, Plot, Report
from raybench.report.tables import Table


def anchor(text: str, taken: set[str]) -> str:
    """A heading's link target as GitHub makes it (lower case, punctuation dropped, spaces to '-'; repeats get -1,
    -2, ...), so that report.md's contents links work on GitHub and report.html uses the same ids."""
    plain = re.sub(r"[^\w\- ]", "", re.sub(r"[*`]", "", text).strip().lower()).replace(" ", "-")
    name, k = plain, 0
    while name in taken:
        k += 1
        name = f"{plain}-{k}"
    taken.add(name)
    return name


def headings(report: Report) -> list[tuple[Heading, str]]:
    """Every heading with its anchor, in order."""
    taken: set[str] = set()
    return [(b, anchor(b.text, taken)) for b in report.blocks if isinstance(b, Heading)]


def contents(report: Report) -> list[tuple[Heading, str, list[tuple[Heading, str]]]]:
    """The table of contents: each section (level 2) with its subsections (level 3) and their anchors."""
    toc: list[tuple[Heading, str, list[tuple[Heading, str]]]] = []
    for heading, name in headings(report):
        if heading.level == 2:
            toc.append((heading, name, []))
        elif heading.level == 3 and toc:
            toc[-1][2].append((heading, name))
    return toc


# what Markdown would take for raw HTML (a tag, a comment, a declaration) or an entity; "p < 0.05" and "a > b" are text
MARKUP = re.compile(r"<(?=[A-Za-z/!?])|&(?=#?\w+;)")


def _md(text) -> str:
    """Text for report.md with no raw HTML, as report.html escapes it: a Markdown viewer renders raw HTML, so a name
    holding `<script>` would run (escaped in code spans too, where it shows as `&lt;`: safe whatever the backticks)."""
    return MARKUP.sub(lambda m: {"<": "&lt;", "&": "&amp;"}[m.group()], str(text))


def _md_cell(text: str) -> str:
    return _md(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report) -> str:
    """The report as Markdown (report.md), linking figures/<key>.png and tables/<key>.csv."""
    lines = [f"# {_md(report.title)}", ""]
    toc = contents(report)
    if toc:
        lines.append("**Contents**")
        lines.append("")
        for heading, name, subsections in toc:
            lines.append(f"- [{_md(heading.text)}](#{name})")
            if subsections:
                lines.append("  - " + " · ".join(f"[{_md(h.text)}](#{n})" for h, n in subsections))
        lines.append("")
    for block in report.blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + _md(block.text), ""]
        elif isinstance(block, Paragraph):
            lines += [_md(block.text), ""]
        elif isinstance(block, Bullets):
            lines += [f"- {_md(item)}" for item in block.items] + [""]
        elif isinstance(block, Table):
            lines += [f"**{_md(block.title)}** ([CSV](tables/{block.key}.csv))", ""]
            lines.append("| " + " | ".join(map(_md_cell, block.headers)) + " |")
            lines.append("|" + "|".join("---" for _ in block.headers) + "|")
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in block.rows]
            lines += ["", f"_{_md(block.note)}_" if block.note else "", ""]
        elif isinstance(block, Plot):
            data = f" ([data](tables/{block.key}.csv))" if block.data is not None else ""
            caption = _md(block.caption)
            lines += [f"![{caption}](figures/{block.key}.png)", "", f"_{caption}_{data}", ""]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """The little Markdown the report's text uses (**bold**, `code`), as HTML."""
    out = html.escape(str(text))
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}\n"
    "table{border-collapse:collapse;font-size:12px;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td{white-space:nowrap}\n"
    "td:first-child,th:first-child,td.t,th.t{text-align:left}th{background:#f3f3f3}tr:nth-child(even){background:#fafafa}\n"
    "figure{margin:1em 0}img{max-width:100%}figcaption,.note{font-size:13px;color:#555}\n"
    "figure.half{display:inline-block;vertical-align:top;max-width:49%;margin:.5em .5% .5em 0}"
    ".scroll{overflow-x:auto}\n"
    "nav.contents{font-size:14px;background:#f7f7f7;padding:.4em 1em;border:1px solid #e3e3e3}"
    "nav.contents ul{margin:.3em 0;padding-left:1.2em;columns:2}nav.contents li{break-inside:avoid}"
)


NUMBER = re.compile(r"^[-+×–]?[\d.,]+(\*|%| pp| of \d+)?( \[.*\])?$|^–$")


def _cell(text: str) -> str:
    """A table cell: numbers right-aligned (the table's default), words left-aligned."""
    align = "" if NUMBER.match(str(text)) else " class='t'"
    return f"<td{align}>{_inline(text)}</td>"


HALF_WIDTH = 8.0  # inches: figures this narrow sit two to a row in report.html


def render_html(report: Report) -> str:
    """The report as one HTML page (report.html) with the same links."""
    title = html.escape(report.title)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{_CSS}</style></head><body><h1>{title}</h1>"
    ]
    toc = contents(report)
    if toc:
        items = []
        for heading, name, subsections in toc:
            sub = " · ".join(f"<a href='#{n}'>{_inline(h.text)}</a>" for h, n in subsections)
            items.append(f"<li><a href='#{name}'>{_inline(heading.text)}</a>{f': {sub}' if sub else ''}</li>")
        parts.append(f"<nav class='contents'><strong>Contents</strong><ul>{''.join(items)}</ul></nav>")
    ids = iter(name for _, name in headings(report))
    for block in report.blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level} id='{next(ids)}'>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            first = block.rows[0] if block.rows else []
            text = {k for k, c in enumerate(first) if not NUMBER.match(str(c))}  # columns of words: left-aligned
            head = "".join(
                ("<th class='t'>" if k in text else "<th>") + f"{_inline(h)}</th>" for k, h in enumerate(block.headers)
            )
            body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in block.rows)
            parts.append(
                f"<h4>{_inline(block.title)} <a href='tables/{block.key}.csv'>CSV</a></h4>"
                f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
                f"<p class='note'>{_inline(block.note)}</p>"
            )
        elif isinstance(block, Plot):
            size = "half" if block.figure.get_size_inches()[0] <= HALF_WIDTH else "full"
            parts.append(
                f"<figure class='{size}'><img src='figures/{block.key}.png' alt='{html.escape(block.key)}'>"
                f"<figcaption>{_inline(block.caption)}</figcaption></figure>"
            )
    return "\n".join([*parts, "</body></html>"])
