"""The report's markdown summary as HTML (issue 13 §5): headings, pipe tables, lists and paragraphs.

Only the small subset that ``report.md`` uses is recognised; any other text stays text. Every piece of
text is HTML-escaped before the few inline marks (`code`, **bold**) are turned into tags, so a prompt or
a model name containing markup can never inject into the page.
"""

from __future__ import annotations

import html
import re

_SEPARATOR = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_ITEM = re.compile(r"^[-*]\s+(.*)$")


def inline(text: str) -> str:
    """Escape ``text``, then render `code` and **bold** spans."""
    out = html.escape(text, quote=True)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def split_row(line: str) -> list[str]:
    """Cells of a pipe-table row (outer pipes optional; ``\\|`` is a literal pipe)."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", body)]


def _alignments(separator: str) -> list[str | None]:
    out: list[str | None] = []
    for cell in split_row(separator):
        left, right = cell.startswith(":"), cell.endswith(":")
        out.append("center" if left and right else "right" if right else "left" if left else None)
    return out


def table_html(rows: list[str]) -> str:
    """A pipe table: the rows before a ``|---|`` separator are the header; no separator, no header."""
    sep = next((i for i, row in enumerate(rows) if _SEPARATOR.match(row)), None)
    head, body = (rows[:sep], rows[sep + 1:]) if sep is not None else ([], rows)
    align = _alignments(rows[sep]) if sep is not None else []

    def cells(row: str, tag: str) -> str:
        parts = []
        for j, cell in enumerate(split_row(row)):
            style = f" style='text-align:{align[j]}'" if j < len(align) and align[j] else ""
            parts.append(f"<{tag}{style}>{inline(cell)}</{tag}>")
        return "<tr>" + "".join(parts) + "</tr>"

    thead = "<thead>" + "".join(cells(r, "th") for r in head) + "</thead>" if head else ""
    return f"<table>{thead}<tbody>{''.join(cells(r, 'td') for r in body)}</tbody></table>"


def _blocks(lines: list[str]) -> list[tuple[str, list[str]]]:
    """Group lines into (kind, lines) blocks: heading, table, list, paragraph."""
    blocks: list[tuple[str, list[str]]] = []
    for line in lines:
        kind = ("blank" if not line.strip() else "heading" if _HEADING.match(line)
                else "table" if line.lstrip().startswith("|") else "list" if _ITEM.match(line) else "paragraph")
        if kind == "blank":
            blocks.append(("blank", []))
        elif kind != "heading" and blocks and blocks[-1][0] == kind:
            blocks[-1][1].append(line)
        else:
            blocks.append((kind, [line]))
    return [b for b in blocks if b[0] != "blank"]


def markdown_html(md: str) -> str:
    """HTML for the report's markdown ``md`` (headings, pipe tables, ``-`` lists, paragraphs)."""
    out = []
    for kind, lines in _blocks(md.splitlines()):
        if kind == "heading":
            match = _HEADING.match(lines[0])
            assert match is not None
            level = len(match.group(1))
            out.append(f"<h{level}>{inline(match.group(2).strip())}</h{level}>")
        elif kind == "table":
            out.append(table_html(lines))
        elif kind == "list":
            items = "".join(f"<li>{inline(_ITEM.match(x).group(1))}</li>" for x in lines)
            out.append(f"<ul>{items}</ul>")
        else:
            out.append("<p>" + "<br>".join(inline(x.strip()) for x in lines) + "</p>")
    return "\n".join(out)
