"""The course site's renderer: a MyST site template that renders every page itself (`build.render` in template.yml).

`jupyter book build --html` starts its content server and runs this script with CONTENT_CDN (the server's
address) and BUILD_DIRECTORY (where the HTML goes). It reads config.json and each page's MyST AST from the server
and writes plain HTML: a page per lesson with its outputs from a real execution, the landing page, the teaching
guide and the CLI pages, with a navigation bar and previous/next links. Lesson pages get a launch button whose
Binder address comes from cfcourse/links.py (the one repository address in pyproject.toml). A widget cannot move
without a kernel, so its place shows a note that says which widget it is and where to run it live.

Standard library only, and nothing is downloaded: the content server is on this machine.
"""
from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import shutil
import sys
import urllib.request
from pathlib import Path, PurePosixPath

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
WIDGET = "application/vnd.jupyter.widget-view+json"
PROGRESS = re.compile(r"\d+%\||Progress\(")  # tqdm's text form of its notebook bar, or the widget's repr
CONTROLS = re.compile(r"\b(\w*Slider|Select|Dropdown|ToggleButtons|RadioButtons|Checkbox)\(")
IMAGES = ("image/png", "image/jpeg", "image/gif", "image/svg+xml")
E = html.escape


def load_links():
    """cfcourse/links.py by its path (standard library only: no torch import)."""
    spec = importlib.util.spec_from_file_location("cfcourse_links", ROOT / "cfcourse" / "links.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Site:
    """What every page needs: the content server, the output folder, the page list and the course's address."""

    def __init__(self, cdn: str, out: Path):
        self.cdn, self.out = cdn.rstrip("/"), out
        self.config = self.get_json("/config.json")
        project = self.config["projects"][0]
        self.index = project["index"]
        self.pages = [{"slug": self.index, "title": None, "level": 1}] + project["pages"]
        self.links = load_links()
        self.where = self.links.address(ROOT / "pyproject.toml")
        self.mode = (self.config.get("options") or {}).get("mode", "")
        self.copied: set[str] = set()

    def get(self, path: str) -> bytes:
        try:
            with urllib.request.urlopen(self.cdn + path, timeout=60) as response:
                return response.read()
        except OSError as e:
            raise RuntimeError(f"the content server has no {path}: {e}") from e

    def get_json(self, path: str) -> dict:
        return json.loads(self.get(path))

    def href(self, slug: str, here: str) -> str:
        """A relative link from page `here` to page `slug` (works from a web server and from file://)."""
        up = "" if here == self.index else "../"
        return f"{up}index.html" if slug == self.index else f"{up}{slug}/index.html"

    def asset(self, path: str, here: str) -> str:
        """Copy a file the content server holds (a figure, a notebook) into build/ and link it from `here`."""
        name = PurePosixPath(path).name
        if name not in self.copied:
            target = self.out / "build" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.get("/" + name))
            self.copied.add(name)
        return ("" if here == self.index else "../") + f"build/{name}"

    def page_path(self, slug: str) -> Path:
        return self.out / ("index.html" if slug == self.index else f"{slug}/index.html")


class Page:
    """One page's AST rendered to HTML."""

    def __init__(self, site: Site, slug: str, data: dict):
        self.site, self.slug, self.data = site, slug, data
        self.lesson = PurePosixPath(data.get("location", "")).name if data.get("kind") == "Notebook" else ""
        self.binder = self.site.links.binder_url(self.lesson, where=site.where) if self.lesson else ""
        self.footnotes: list[str] = []

    def render(self, node: dict) -> str:
        method = getattr(self, "n_" + node.get("type", ""), None)
        return method(node) if method else self.children(node)

    def children(self, node: dict) -> str:
        if "children" not in node and "value" in node:
            return E(str(node["value"]))
        return "".join(self.render(c) for c in node.get("children", []))

    def wrap(self, tag: str, node: dict, attrs: str = "") -> str:
        return f"<{tag}{attrs}>{self.children(node)}</{tag}>"

    # --- text ---
    def n_text(self, n): return E(n.get("value", ""))
    def n_paragraph(self, n): return self.wrap("p", n)
    def n_strong(self, n): return self.wrap("strong", n)
    def n_emphasis(self, n): return self.wrap("em", n)
    def n_delete(self, n): return self.wrap("del", n)
    def n_subscript(self, n): return self.wrap("sub", n)
    def n_superscript(self, n): return self.wrap("sup", n)
    def n_underline(self, n): return self.wrap("u", n)
    def n_smallcaps(self, n): return self.wrap("span", n, ' style="font-variant:small-caps"')
    def n_abbreviation(self, n): return self.wrap("abbr", n, f' title="{E(n.get("title", ""))}"')
    def n_break(self, n): return "<br>"
    def n_thematicBreak(self, n): return "<hr>"
    def n_inlineCode(self, n): return f"<code>{E(n.get('value', ''))}</code>"
    def n_blockquote(self, n): return self.wrap("blockquote", n)
    def n_comment(self, n): return ""
    def n_html(self, n): return n.get("value", "") if not n.get("value", "").lstrip().startswith("<!--") else ""
    def n_inlineMath(self, n): return n.get("html") or f"<code>{E(n.get('value', ''))}</code>"
    def n_math(self, n): return f'<div class="cf-math">{n.get("html") or E(n.get("value", ""))}</div>'

    def n_heading(self, n):
        depth = min(int(n.get("depth", 2)) + (1 if self.data.get("kind") == "Notebook" else 0), 6)
        anchor = n.get("html_id") or n.get("identifier") or ""
        return f'<h{depth} id="{E(anchor)}">{self.children(n)}</h{depth}>'

    def n_list(self, n):
        tag = "ol" if n.get("ordered") else "ul"
        start = f' start="{n["start"]}"' if n.get("ordered") and n.get("start", 1) != 1 else ""
        return self.wrap(tag, n, start)

    def n_listItem(self, n):
        if n.get("checked") is not None:
            box = f'<input type="checkbox" disabled{" checked" if n["checked"] else ""}> '
            return f"<li>{box}{self.children(n)}</li>"
        return self.wrap("li", n)

    def n_link(self, n):
        return f'<a href="{E(self.url(n.get("url", "")))}">{self.children(n)}</a>'

    def n_crossReference(self, n):
        url = n.get("url")
        if not url and (n.get("html_id") or n.get("identifier")):
            url = "#" + (n.get("html_id") or n.get("identifier"))  # a heading of this page
        return f'<a href="{E(self.url(url))}">{self.children(n)}</a>' if url else self.children(n)

    def url(self, url: str) -> str:
        """Internal page links (/slug#anchor) become relative links; others stay."""
        if not url.startswith("/") or url.startswith("//"):
            return url
        path, _, anchor = url.partition("#")
        slug = path.strip("/") or self.site.index
        known = {p.get("slug") for p in self.site.pages}
        if slug in known:
            return self.site.href(slug, self.slug) + (f"#{anchor}" if anchor else "")
        if PurePosixPath(path).suffix:
            return self.site.asset(path, self.slug)
        return url

    def n_image(self, n):
        src, source = n.get("url", ""), n.get("urlSource", "")
        if re.match(r"https?://", source) and (not src or src.startswith("/undefined")):
            src = source  # a remote image Jupyter Book could not fetch (no network): the browser may
        elif src.startswith("/"):
            src = self.site.asset(src, self.slug)
        alt = E(n.get("alt", ""))
        width = f' style="width:{E(n["width"])}"' if n.get("width") else ""
        return f'<img src="{E(src)}" alt="{alt}"{width}>'

    def n_table(self, n): return f'<div class="cf-table">{self.wrap("table", n)}</div>'
    def n_tableRow(self, n): return self.wrap("tr", n)

    def n_tableCell(self, n):
        tag = "th" if n.get("header") else "td"
        align = f' style="text-align:{n["align"]}"' if n.get("align") else ""
        return self.wrap(tag, n, align)

    def n_code(self, n):
        lang = E(n.get("lang") or "")
        cls = f' class="language-{lang}"' if lang else ""
        return f'<pre class="cf-code"><code{cls}>{E(n.get("value", ""))}</code></pre>'

    def n_admonition(self, n):
        kind = E(n.get("kind", "note"))
        return f'<aside class="cf-admonition cf-{kind}">{self.children(n)}</aside>'

    def n_admonitionTitle(self, n): return f'<p class="cf-admonition-title">{self.children(n)}</p>'
    def n_details(self, n): return self.wrap("details", n)
    def n_summary(self, n): return self.wrap("summary", n)
    def n_container(self, n): return self.wrap("figure", n)
    def n_caption(self, n): return self.wrap("figcaption", n)
    def n_legend(self, n): return self.wrap("div", n, ' class="cf-legend"')

    def n_footnoteReference(self, n):
        number = n.get("enumerator") or n.get("identifier", "")
        return f'<sup class="cf-footnote"><a href="#fn-{E(str(n.get("identifier", "")))}">{E(str(number))}</a></sup>'

    def n_footnoteDefinition(self, n):
        ident = E(str(n.get("identifier", "")))
        self.footnotes.append(f'<li id="fn-{ident}">{self.children(n)}</li>')
        return ""

    # --- notebooks ---
    def n_block(self, n):
        kind = n.get("kind", "")
        anchor = n.get("html_id") or ""
        cls = "cf-cell cf-code-cell" if kind == "notebook-code" else "cf-block"
        return f'<section class="{cls}" id="{E(anchor)}">{self.children(n)}</section>'

    def n_outputs(self, n):
        inner = "".join(self.render(c) for c in n.get("children", []))
        return f'<div class="cf-outputs">{inner}</div>' if inner else ""

    def n_output(self, n):
        out = n.get("jupyter_data") or {}
        kind = out.get("output_type")
        if kind == "stream":
            name = out.get("name", "stdout")
            return f'<pre class="cf-output cf-{E(name)}">{E(ANSI.sub("", out.get("text", "")))}</pre>'
        if kind == "error":
            trace = ANSI.sub("", "\n".join(out.get("traceback", [])))
            return f'<pre class="cf-output cf-error">{E(trace)}</pre>'
        data = out.get("data") or {}
        if WIDGET in data:
            text = self.content(data.get("text/plain"))
            return self.widget_note(text, json.loads(self.content(data[WIDGET]) or "{}").get("model_id"))
        for mime in IMAGES:
            if mime in data:
                item = data[mime]
                src = self.site.asset(item["path"], self.slug) if item.get("path") else \
                    f"data:{mime};base64,{item.get('content', '')}"
                alt = E(self.content(data.get("text/plain")) or "figure")
                return f'<div class="cf-output cf-figure"><img src="{E(src)}" alt="{alt}"></div>'
        if "text/html" in data:
            return f'<div class="cf-output cf-html">{self.content(data["text/html"])}</div>'
        if "text/markdown" in data:
            return f'<pre class="cf-output cf-result">{E(self.content(data["text/markdown"]))}</pre>'
        if "text/plain" in data:
            return f'<pre class="cf-output cf-result">{E(ANSI.sub("", self.content(data["text/plain"])))}</pre>'
        return ""

    def content(self, item) -> str:
        if item is None:
            return ""
        if item.get("content") is None and item.get("path"):
            return self.site.get("/" + PurePosixPath(item["path"]).name).decode("utf-8", "replace")
        return str(item.get("content", ""))

    def widget_note(self, text: str, model_id: str | None) -> str:
        """A widget's place: its last state where the notebook kept it (the figures of its Output widgets and the
        values of its controls), under a note that says which widget it is and that moving it needs a kernel."""
        state = (self.data.get("widgets") or {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
        controls, outputs = self.widget_parts(state, model_id, set()) if model_id in state else ([], [])
        if not controls and not outputs and not CONTROLS.search(text) and (
                (state and model_id not in state) or PROGRESS.search(text) or self.is_progress(state, model_id)):
            return ""  # a progress bar (or a widget closed before the end): gone when done, in the lesson as here
        what = ", ".join(controls) or ", ".join(
            f"a {kind.replace('Int', '').replace('Float', '').lower()} ({label})"
            for kind, label in re.findall(r"(\w+Slider)\((?:[^()]|\([^()]*\))*?description='([^']*)'", text)
        ) or "an interactive widget"
        launch = f' <a class="cf-launch-inline" href="{E(self.binder)}">Launch this lesson on Binder</a> or' \
            if self.binder else ""
        shown = "Below is its last state, as the lesson left it; moving it" if outputs else "Moving it"
        note = (f'<p><strong>Live widget: {E(what)}.</strong> {shown} redraws the figure in the lesson, and needs a '
                f"running Python kernel, so it does not move on this page:{launch} run the lesson in JupyterLab "
                f"(<code>bash scripts/lab.sh</code>) to use it.</p>")
        return (f'<div class="cf-output cf-widget" data-widget="{E(what)}"><div class="cf-widget-note">{note}</div>'
                f'{"".join(self.n_output({"jupyter_data": o}) for o in outputs)}</div>')

    def widget_parts(self, state: dict, model_id: str, seen: set) -> tuple[list[str], list[dict]]:
        """The controls (as words) and the outputs of the Output widgets inside widget `model_id`."""
        if model_id in seen or model_id not in state:
            return [], []
        seen.add(model_id)
        model = state[model_id]
        name, values = model.get("model_name", ""), model.get("state", {})
        controls, outputs = [], []
        if name == "OutputModel":
            outputs += [self.inline(o) for o in values.get("outputs", [])]
        elif CONTROLS.search(name.removesuffix("Model") + "("):
            kind = re.sub(r"^(Int|Float)|Model$", "", name).lower()
            label = values.get("description") or ""
            controls.append(f"a {kind} ({label})" if label else f"a {kind}")
        for child in values.get("children", []):
            if isinstance(child, str) and child.startswith("IPY_MODEL_"):
                c, o = self.widget_parts(state, child.removeprefix("IPY_MODEL_"), seen)
                controls += c
                outputs += o
        return controls, outputs

    @staticmethod
    def is_progress(state: dict, model_id: str | None) -> bool:
        """Whether widget `model_id` holds a progress bar (tqdm's notebook bar is an HBox of HTML and a progress)."""
        model = state.get(model_id or "", {})
        children = [c.removeprefix("IPY_MODEL_") for c in model.get("state", {}).get("children", [])
                    if isinstance(c, str)]
        return any(state.get(c, {}).get("model_name", "").endswith("ProgressModel") for c in children)

    @staticmethod
    def inline(output: dict) -> dict:
        """An output kept in a widget's state, in the form Jupyter Book gives notebook outputs."""
        data = {mime: ({"content_type": mime, "content": "".join(v) if isinstance(v, list) else v}
                       if not isinstance(v, dict) else {"content_type": mime, "content": json.dumps(v)})
                for mime, v in (output.get("data") or {}).items()}
        return {**output, "data": data} if "data" in output else output

    # --- the page ---
    def document(self, title: str, nav: str, pager: str) -> str:
        root = "" if self.slug == self.site.index else "../"
        body = self.render(self.data["mdast"])
        if self.footnotes:
            body += f'<section class="cf-footnotes"><ol>{"".join(self.footnotes)}</ol></section>'
        actions = ""
        if self.lesson:
            exports = [x for x in self.data.get("frontmatter", {}).get("exports", []) if x.get("format") == "ipynb"]
            download = f'<a class="cf-download" href="{E(self.site.asset(exports[0]["url"], self.slug))}" ' \
                       f'download="{E(self.lesson)}">Download the executed notebook</a>' if exports else ""
            source = f"{self.site.where.repository}/blob/{self.site.where.branch or 'HEAD'}/lessons/{self.lesson}"
            actions = (f'<div class="cf-actions"><a class="cf-binder" href="{E(self.binder)}">Launch on Binder</a>'
                       f'{download}<a class="cf-source" href="{E(source)}">Source</a>'
                       f'<span class="cf-mode">outputs from a {E(self.site.mode)}-mode run</span></div>')
        heading = "" if self.data.get("frontmatter", {}).get("content_includes_title") else f"<h1>{E(title)}</h1>"
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{E(title)} · cfcourse</title><link rel="stylesheet" href="{root}build/site.css"></head>
<body data-page="{E(self.slug)}"{f' data-lesson="{E(self.lesson)}"' if self.lesson else ""}>
<header class="cf-header"><a class="cf-home" href="{root}index.html">cfcourse</a>
<span>catastrophic forgetting, hands on</span>
<a class="cf-repo" href="{E(self.site.where.repository)}">Repository</a></header>
<div class="cf-layout">{nav}
<main class="cf-main">{actions}{heading}
<article class="cf-article">{body}</article>
{pager}</main></div></body></html>
"""


def navigation(site: Site, titles: dict[str, str], here: str) -> str:
    items = []
    for page in site.pages:
        slug = page.get("slug")
        level = int(page.get("level") or 1)
        if not slug:
            items.append(f'<li class="cf-nav-group cf-level-{level}">{E(page.get("title", ""))}</li>')
            continue
        current = ' aria-current="page"' if slug == here else ""
        items.append(f'<li class="cf-level-{level}"><a href="{E(site.href(slug, here))}"{current}>'
                     f'{E(titles[slug])}</a></li>')
    return f'<nav class="cf-nav" aria-label="Contents"><ul>{"".join(items)}</ul></nav>'


def pager(site: Site, titles: dict[str, str], order: list[str], here: str) -> str:
    i = order.index(here)
    prev = f'<a rel="prev" href="{E(site.href(order[i - 1], here))}">← {E(titles[order[i - 1]])}</a>' if i else "<span></span>"
    nxt = f'<a rel="next" href="{E(site.href(order[i + 1], here))}">{E(titles[order[i + 1]])} →</a>' \
        if i + 1 < len(order) else "<span></span>"
    return f'<nav class="cf-pager">{prev}{nxt}</nav>'


def main() -> int:
    cdn, out = os.environ.get("CONTENT_CDN"), os.environ.get("BUILD_DIRECTORY")
    if not cdn or not out:
        print("render.py is run by `jupyter book build --html` (it sets CONTENT_CDN and BUILD_DIRECTORY)",
              file=sys.stderr)
        return 2
    site = Site(cdn, Path(out))
    order = [p["slug"] for p in site.pages if p.get("slug")]
    data = {slug: site.get_json(f"/content/{slug}.json") for slug in order}
    titles = {slug: d.get("frontmatter", {}).get("title") or slug for slug, d in data.items()}
    for slug in order:
        page = Page(site, slug, data[slug])
        text = page.document(titles[slug], navigation(site, titles, slug), pager(site, titles, order, slug))
        path = site.page_path(slug)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (site.out / "build").mkdir(parents=True, exist_ok=True)
    shutil.copy2(HERE / "site.css", site.out / "build" / "site.css")
    print(f"rendered {len(order)} pages into {site.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
