"""A report folder that opens anywhere offline: Markdown, one self-contained HTML page, images.

Reports are read on machines without internet (and attached to Prefect runs), so the page
may not load anything: the Vega, Vega-Lite and vega-embed JavaScript comes from
``vl_convert.javascript_bundle()`` and is inlined once for the whole page (about 0.9 MB)
instead of once per chart, and every chart's data is inline in its spec. PNG and SVG copies
are written for Markdown viewers and slides. Each file lands atomically; the charts are
written before the pages that link to them.
"""

from __future__ import annotations

import contextlib
import functools
import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import altair as alt
import vl_convert
from markdown_it import MarkdownIt

from linklm import atomic
from linklm.store import home

CHARTS_DIR = "charts"
PNG_SCALE = 1.5
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
CHART_CLASS = "linklm-chart"
BUNDLE_MARK = "linklm-vega-bundle"  # the id of the one inline <script> holding the bundle
_EMBED_OPTIONS = {
    "renderer": "svg",
    # "Open in Vega Editor" and "View source" would go online or leak nothing useful.
    "actions": {"export": True, "source": False, "compiled": False, "editor": False},
}
_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
code { background: #f3f3f3; padding: 0 0.2em; }
figure.linklm-figure { margin: 2em 0; }
figcaption { color: #666; font-size: 0.85em; }
"""


def check_chart_name(name: str) -> str:
    """``name`` if it is a safe file stem (it becomes a path and an HTML id), else ValueError."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise ValueError(
            f"chart name {name!r} is not a safe file stem: use 1-64 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _vegalite_version() -> str | None:
    """Altair's Vega-Lite 'major.minor' when vl_convert has it, so page and PNG agree."""
    major_minor = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    return major_minor if major_minor in vl_convert.get_vegalite_versions() else None


BUNDLE_MIN_CHARS = 100_000  # a cached bundle shorter than this is not one: it is rebuilt


@functools.cache
def javascript_bundle() -> str:
    """Vega + Vega-Lite + vega-embed as one script body. vl_convert takes about 3 s to build
    it, which every evaluation (a CLI, a flow run on a worker) would pay again: it is kept
    in ``$LINKLM_HOME/vega/`` per vl_convert and Vega-Lite version, and in this process."""
    version = _vegalite_version()
    cached = home() / "vega" / f"bundle-{vl_convert.__version__}-{version or 'default'}.js"
    try:
        bundle = cached.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        bundle = ""
    if len(bundle) < BUNDLE_MIN_CHARS:
        bundle = vl_convert.javascript_bundle(vl_version=version)
        with contextlib.suppress(OSError):  # a read-only home costs the 3 s again, no more
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(cached, bundle)
    # '</script' would end the inline <script> early; '<\\/' is the same text to JavaScript.
    return re.sub(r"</(script)", r"<\\/\1", bundle, flags=re.IGNORECASE)


def _remote_data_urls(spec: Any) -> list[str]:
    """Every data ``url`` in a spec: the page must not fetch anything, so these are refused."""
    found: list[str] = []
    if isinstance(spec, dict):
        data = spec.get("data")
        if isinstance(data, dict) and isinstance(data.get("url"), str):
            found.append(data["url"])
        for value in spec.values():
            found.extend(_remote_data_urls(value))
    elif isinstance(spec, list):
        for value in spec:
            found.extend(_remote_data_urls(value))
    return found


def chart_specs(charts: dict[str, alt.TopLevelMixin]) -> dict[str, dict]:
    """Vega-Lite dicts by name, after checking names and that all data is inline."""
    specs = {}
    for name, chart in charts.items():
        check_chart_name(name)
        spec = chart.to_dict()
        if urls := _remote_data_urls(spec):
            raise ValueError(f"chart {name!r} loads data from {urls}: reports need inline data")
        specs[name] = spec
    return specs


def markdown_to_html(text: str) -> str:
    """CommonMark plus pipe tables; raw HTML in the Markdown is escaped, not passed through."""
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element (no '</' or '<!--' can close or confuse it)."""
    return json.dumps(value, separators=(",", ":")).replace("<", "\\u003c")


def _chart_figures(names: list[str]) -> str:
    return "\n".join(
        f'<figure class="linklm-figure"><div class="{CHART_CLASS}" id="chart-{name}" '
        f'data-chart="{name}"></div><figcaption>{name} · '
        f'<a href="{CHARTS_DIR}/{name}.png">PNG</a> · '
        f'<a href="{CHARTS_DIR}/{name}.svg">SVG</a></figcaption></figure>'
        for name in names
    )


# Renders every chart, then marks <body data-rendered="N"> (or "error") for checkers.
_EMBED_SCRIPT = """
(function () {
  const specs = JSON.parse(document.getElementById("linklm-specs").textContent);
  const options = JSON.parse(document.getElementById("linklm-embed-options").textContent);
  const names = Object.keys(specs);
  Promise.all(names.map((name) => vegaEmbed("#chart-" + name, specs[name], options)))
    .then(() => { document.body.dataset.rendered = String(names.length); })
    .catch((error) => {
      document.body.dataset.rendered = "error";
      console.error("linklm report: a chart failed to render", error);
    });
})();
"""


def _title_heading(title: str, markdown: str, html_form: bool = False) -> str:
    """The title as a heading, unless the Markdown opens with its own."""
    if markdown.lstrip().startswith("# "):
        return ""
    return f"<h1>{html.escape(title)}</h1>\n" if html_form else f"# {title}\n"


def render_html(title: str, markdown: str, specs: dict[str, dict]) -> str:
    """One page: the Markdown as HTML, then every chart; the JS bundle appears once, inline."""
    head_script = f'<script id="{BUNDLE_MARK}">{javascript_bundle()}</script>\n' if specs else ""
    charts = ""
    # a page without charts is rendered as it loads: say so to checkers at once
    body_attributes = "" if specs else ' data-rendered="0"'
    if specs:
        charts = (
            "<h2>Charts</h2>\n"
            f"{_chart_figures(list(specs))}\n"
            f'<script type="application/json" id="linklm-specs">{_script_json(specs)}</script>\n'
            '<script type="application/json" id="linklm-embed-options">'
            f"{_script_json(_EMBED_OPTIONS)}</script>\n"
            f"<script>{_EMBED_SCRIPT}</script>\n"
        )
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n{head_script}</head>\n"
        f"<body{body_attributes}>\n<main>\n{_title_heading(title, markdown, html_form=True)}"
        f"{markdown_to_html(markdown)}\n"
        f"{charts}</main>\n</body>\n</html>\n"
    )


def render_markdown(title: str, markdown: str, names: list[str]) -> str:
    """The Markdown with a title and an image link per chart (PNG, for any viewer)."""
    parts = [_title_heading(title, markdown), markdown.rstrip() + "\n"]
    if names:
        parts.append("## Charts\n")
        parts.extend(f"![{name}]({CHARTS_DIR}/{name}.png)\n" for name in names)
    return "\n".join(parts)


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic.atomic_open(path, "wb") as fh:
        fh.write(data)


def write_chart_images(charts_dir: Path, specs: dict[str, dict]) -> dict[str, Path]:
    """``<name>.png`` (scale 1.5) and ``<name>.svg`` per chart, rendered offline by vl_convert."""
    version = _vegalite_version()
    paths: dict[str, Path] = {}
    for name, spec in specs.items():
        png = charts_dir / f"{name}.png"
        svg = charts_dir / f"{name}.svg"
        _write_bytes(png, vl_convert.vegalite_to_png(spec, vl_version=version, scale=PNG_SCALE))
        atomic.write_text(svg, vl_convert.vegalite_to_svg(spec, vl_version=version))
        paths[f"png:{name}"] = png
        paths[f"svg:{name}"] = svg
    for stale in charts_dir.glob("*"):  # an earlier report's charts that this one has not
        if stale.suffix in (".png", ".svg") and stale not in paths.values():
            stale.unlink()
    return paths


def write_report(
    out_dir: Path, title: str, markdown: str, charts: dict[str, alt.TopLevelMixin]
) -> dict[str, Path]:
    """Write report.md, report.html and charts/<name>.png|svg into ``out_dir``.

    Returns the paths by key: "md", "html", "png:<name>" and "svg:<name>". Names are
    checked before anything is written, so a bad name leaves ``out_dir`` untouched.
    """
    out_dir = Path(out_dir)
    specs = chart_specs(charts)
    paths = write_chart_images(out_dir / CHARTS_DIR, specs)
    paths["md"] = out_dir / "report.md"
    paths["html"] = out_dir / "report.html"
    atomic.write_text(paths["md"], render_markdown(title, markdown, list(specs)))
    atomic.write_text(paths["html"], render_html(title, markdown, specs))
    return paths


class _ScriptSources(HTMLParser):
    """Collects what a page would load: script src, stylesheet/preload href, inline imports."""

    _LOADING_RELS = {"stylesheet", "preload", "modulepreload", "import"}
    _REMOTE_IMPORT = re.compile(r"""\bimport\s*(?:\(|[^;'"]*?\bfrom)\s*["'](?:https?:)?//""")

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "script":
            self._in_script = True
            if "src" in attributes:
                self.sources.append(attributes["src"])
        elif tag == "link" and self._LOADING_RELS & set(attributes.get("rel", "").split()):
            self.sources.append(attributes.get("href", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and self._REMOTE_IMPORT.search(data):
            self.sources.append("inline import of a remote module")


def remote_script_sources(text: str) -> list[str]:
    """Scripts and stylesheets the page would fetch from a server (http(s), //, any CDN)."""
    parser = _ScriptSources()
    parser.feed(text)
    parser.close()
    return [
        source
        for source in parser.sources
        if re.match(r"(?i)(https?:)?//", source.strip())
        or "cdn" in source.lower()
        or source.startswith("inline import")
    ]


def html_has_no_remote_scripts(text: str) -> bool:
    """True when the page loads no script or stylesheet from the network (works offline)."""
    return not remote_script_sources(text)
