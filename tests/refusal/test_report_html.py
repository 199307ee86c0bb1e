"""report.html: the markdown summary is rendered as real HTML (escaped), and the page renders in headless
Chromium with no console message and every image loaded (issue 13 §5)."""

import json
from html.parser import HTMLParser

import pytest

from alignlab.cli import main
from alignlab.refusal.report_html import markdown_html, split_row

SMALL = ["--n-train", "6", "--n-val", "4", "--n-test-harmful", "3", "--n-test-harmless", "3",
         "--eval-max-new-tokens", "6", "--eval-allow-short", "--kl-max", "100", "--induce-min=-1e9",
         "--screen-n", "2", "--full-k", "3", "--batch-size", "8", "--device", "cpu", "--no-export"]


class Tree(HTMLParser):
    """Tags in document order with their text, and a check that every tag is closed."""

    def __init__(self):
        super().__init__()
        self.tags, self.stack, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in ("br", "img", "meta"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> Tree:
    tree = Tree()
    tree.feed(page)
    tree.close()
    assert tree.stack == [], tree.stack
    return tree


def test_summary_markdown_becomes_tables_headings_and_paragraphs():
    md = "\n".join([
        "# report — <b>model</b>", "",
        "Selected direction: layer 2 (bypass -1.50).", "Weight edit exact: True.", "",
        "| condition | harmful | note |", "|---|---:|:---:|",
        "| base | 1.00 [0.44, 1.00] (3/3) | <script>alert(1)</script> |",
        "| edited | 0.00 | a \\| pipe |", "",
        "- one `code`", "- **two**", "", "Timings (s): data 0.1"])
    page = markdown_html(md)
    tree = _parse(page)
    assert tree.tags == ["h1", "p", "br", "table", "thead", "tr", "th", "th", "th", "tbody", "tr", "td", "td", "td",
                         "tr", "td", "td", "td", "ul", "li", "code", "li", "strong", "p"]
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;model&lt;/b&gt;" in page  # headings are escaped too
    assert "<td style='text-align:right'>1.00 [0.44, 1.00] (3/3)</td>" in page
    assert "<td>a | pipe</td>" in page.replace(" style='text-align:center'", "")
    assert "|" not in "".join(t for t in tree.text if "pipe" not in t)  # no markdown table syntax left


def test_split_row_and_table_without_separator():
    assert split_row("| a | b \\| c |") == ["a", "b | c"]
    assert split_row("a|b") == ["a", "b"]
    tree = _parse(markdown_html("| x | y |\n| 1 | 2 |"))
    assert tree.tags == ["table", "tbody", "tr", "td", "td", "tr", "td", "td"]  # no separator: no header


IMAGE_PROBE = ("<script>window.addEventListener('load',()=>{const a=[...document.images];"
               "console.log('alignlab-images '+a.length+' '+a.filter(i=>!(i.complete&&i.naturalWidth>0)).length)})"
               "</script>")


def _image_counts(chromium, page_path, profile) -> tuple[int, int]:
    """(images, broken images) after load: the page plus a probe script that logs them to the console."""
    probe = page_path.with_name("probe-" + page_path.name)
    probe.write_text(page_path.read_text().replace("</body>", IMAGE_PROBE + "</body>"))
    _dom, console = chromium(["--dump-dom", probe.as_uri()], profile)
    line = next(c for c in console if "alignlab-images" in c)
    n, broken = line.split("alignlab-images ")[1].split('"')[0].split()
    return int(n), int(broken)


@pytest.mark.browser
def test_report_renders_in_chromium_with_tables_and_loaded_images(tiny_dir, tmp_path, chromium):
    out = tmp_path / "run"
    assert main(["refusal", "run", str(tiny_dir), "--out", str(out), *SMALL]) == 0
    page = out / "report.html"
    dom, console = chromium(["--dump-dom", page.as_uri()], tmp_path / "profile1")
    assert console == []  # no console message at all (errors, failed loads)
    assert "<pre>" not in dom and dom.count("<table>") >= 2  # summary table + samples table
    report = json.loads((out / "report.json").read_text())
    assert f"<h1>alignlab refusal report — {report['model']}</h1>" in dom
    assert "<th>condition</th>" in dom and "<td>edited</td>" in dom
    n_images, broken = _image_counts(chromium, page, tmp_path / "profile2")
    assert n_images == page.read_text().count("<img") >= 3 and broken == 0
    # the detector works: a broken image is counted
    bad = tmp_path / "bad.html"
    bad.write_text("<!doctype html><html><body><img src='data:image/png;base64,AAAA'/></body></html>")
    assert _image_counts(chromium, bad, tmp_path / "profile3") == (1, 1)
