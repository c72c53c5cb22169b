"""A guide's Markdown as safe HTML, with Python-Markdown, cached per process by the file's modification time.

What the rendering guarantees (``tests/kodori/test_guides.py``):

- Raw HTML in the Markdown is escaped, not passed through (the ``html_block`` preprocessor and the ``html``
  inline pattern are removed, so the serializer escapes it), and a link keeps its ``href`` only when it is a
  section of the page, a web or mail address, or another guide.
- A link to another guide (``byok-aws.md``, ``audit.md#verifying``) points at that guide's page; a link to any
  other file of the repository (``operations.md``, ``../blobs/openapi.json``) becomes plain text, never a
  broken link.
- Every heading gets an id (Python-Markdown's ``toc`` slugs, as on GitHub for plain headings) and a
  "#" link to itself, so pages can link to a section; wide tables scroll inside their own box.
"""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import markdown
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

from .catalogue import Guide, find

_KEPT_SCHEMES = {"http", "https", "mailto"}
_FENCED_PRE = re.compile(r"<pre(?=[ >])(?![^>]*\btabindex=)")


@dataclass(frozen=True)
class Section:
    """A second-level heading: the page's table of contents."""

    anchor: str
    title: str


@dataclass(frozen=True)
class Rendered:
    html: SafeString
    sections: tuple[Section, ...]


def guide_href(href: str) -> str | None:
    """Where a link in a guide should go: itself, another guide's page, or None (make it plain text)."""
    parts = urlsplit(href)
    if parts.scheme or parts.netloc:
        return href if parts.scheme in _KEPT_SCHEMES and (parts.netloc or parts.scheme == "mailto") else None
    if not parts.path:
        return href if parts.fragment else None  # "#section" of this page
    path = parts.path.removeprefix("./").removeprefix("docs/")
    guide = find(path.removesuffix(".md")) if path.endswith(".md") and "/" not in path else None
    if guide is None:
        return None
    url = reverse("guides:guide", args=[guide.slug])
    return f"{url}#{parts.fragment}" if parts.fragment else url


class _GuideTreeprocessor(Treeprocessor):
    """Runs after the inline patterns (links exist) and before ``toc`` (which adds the heading anchors)."""

    def run(self, root: ET.Element) -> None:
        for parent in list(root.iter()):
            for index, child in enumerate(list(parent)):
                if child.tag == "a":
                    self._link(child)
                elif child.tag == "img":
                    self._image(child)
                elif child.tag == "table":
                    parent.remove(child)
                    box = ET.Element("div", {"class": "guide-table", "tabindex": "0", "role": "region"})
                    box.set("aria-label", "Table (scrolls sideways)")
                    box.append(child)
                    box.tail, child.tail = child.tail, None
                    parent.insert(index, box)
                elif child.tag == "pre":
                    child.set("tabindex", "0")

    @staticmethod
    def _link(link: ET.Element) -> None:
        target = guide_href(link.get("href", ""))
        if target is None:
            link.tag = "span"
            link.attrib.clear()
        else:
            link.set("href", target)

    @staticmethod
    def _image(image: ET.Element) -> None:
        # The guides show no pictures; their alternative text stands in, so nothing loads from elsewhere.
        alt = image.get("alt", "")
        image.tag = "span"
        image.attrib.clear()
        image.text = alt


class _GuideExtension(Extension):
    def extendMarkdown(self, md: Any) -> None:
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")
        md.treeprocessors.register(_GuideTreeprocessor(md), "kodori_guide", 15)


def _converter() -> markdown.Markdown:
    # The guides are written for GitHub (CommonMark): two-space nested lists and code fences inside list
    # items, which Python-Markdown reads only with these extensions. No syntax colouring (no Pygments).
    return markdown.Markdown(
        extensions=[
            "tables",
            "mdx_truly_sane_lists",
            "pymdownx.highlight",
            "pymdownx.superfences",
            "toc",
            _GuideExtension(),
        ],
        extension_configs={
            "mdx_truly_sane_lists": {"nested_indent": 2, "truly_sane": True},
            "pymdownx.highlight": {"use_pygments": False},
            "toc": {"permalink": "#", "permalink_title": "Link to this section", "toc_depth": "1-4"},
        },
        output_format="html",
    )


def render_text(text: str) -> Rendered:
    """Render one guide's Markdown (not cached: ``render`` caches by file)."""
    md = _converter()
    # Fenced code reaches the output as stashed HTML, past the tree processor: it makes indented blocks
    # focusable there, these here (raw HTML in the source is escaped, so every "<pre" is Markdown's own).
    html = _FENCED_PRE.sub('<pre tabindex="0"', md.convert(text))
    tokens: list[dict[str, Any]] = getattr(md, "toc_tokens", [])
    sections: list[Section] = []
    for token in tokens:
        children = token["children"] if token["level"] == 1 else [token]
        # toc's names are HTML; the template escapes a section's title itself.
        sections += [Section(c["id"], unescape(c["name"])) for c in children if c["level"] == 2]
    return Rendered(html=mark_safe(html), sections=tuple(sections))  # noqa: S308 - raw HTML escaped above


@functools.lru_cache(maxsize=64)
def _render_file(path: Path, mtime_ns: int, size: int) -> Rendered:
    # The modification time and size are the cache key only: a changed file is a new key, rendered again.
    del mtime_ns, size
    return render_text(path.read_text(encoding="utf-8"))


def render(guide: Guide) -> Rendered:
    """The guide's page content; raises FileNotFoundError when its file is missing (``checks`` says so)."""
    stat = guide.path.stat()
    return _render_file(guide.path, stat.st_mtime_ns, stat.st_size)
