"""Build the workshop deck into one self-contained HTML file that works offline.

    python slides/build.py            # -> slides/build/deck.html

The deck is written in Markdown (``slides/deck.md``: ``---`` between slides, ``Note:``
before the speaker notes). This script

1. installs reveal.js from the npm registry into ``slides/build/npm`` (git-ignored) with
   ``npm ci``, pinned and integrity-checked by ``slides/package-lock.json``; later builds
   re-use it, and npm's own cache serves it when the machine is offline;
2. replaces every ``{{name}}`` in the deck by the number the figure script recorded in
   ``slides/figures/manifest.json`` (results are never typed into the deck by hand);
3. inlines everything the browser would otherwise fetch: reveal.js and its Markdown and
   speaker-notes plugins, the theme CSS with its fonts, ``slides/theme.css``, and each
   figure (``slides/figures/*.png``) as a ``data:`` URI;
4. refuses to write a deck that still points at any other file or host.

The figures are regenerated from real runs of the kit by ``slides/figures.py``.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import mimetypes
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence

from helpers.files import atomic_write

SLIDES = Path(__file__).resolve().parent
DECK = SLIDES / "deck.md"
FIGURES = SLIDES / "figures"
MANIFEST = FIGURES / "manifest.json"
THEME_CSS = SLIDES / "theme.css"
NPM_DIR = SLIDES / "build" / "npm"
OUTPUT = SLIDES / "build" / "deck.html"
REVEAL_THEME = "white"

# reveal.js files inlined into the deck, relative to the package folder.
REVEAL_CSS = ("dist/reset.css", "dist/reveal.css", f"dist/theme/{REVEAL_THEME}.css")
REVEAL_JS = ("dist/reveal.js", "plugin/markdown/markdown.js", "plugin/notes/notes.js")

# Separators understood by reveal.js's Markdown plugin (regular expressions).
SLIDE_SEPARATOR = r"\r?\n---\r?\n"
NOTES_SEPARATOR = r"^Note:"

_IMAGE = re.compile(r"(!\[[^\]]*\]\()([^)\s]+)(\))|(<img\b[^>]*?\bsrc=\")([^\"]+)(\")")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")
_CSS_IMPORT = re.compile(r"@import\s+url\(\s*['\"]?([^'\")]+)['\"]?\s*\)\s*;")
_CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+?)['\"]?\s*\)")
_FONT_SRC = re.compile(r"src\s*:[^;]*;")
# Anything the finished page could still load from outside itself.
_EXTERNAL_REFERENCE = re.compile(
    r"""(?:\b(?:src|href)\s*=\s*["']?|url\(\s*["']?|@import\s+["']?)(?!data:|#|["')])[^\s"')>]+""",
    re.IGNORECASE,
)


class BuildError(RuntimeError):
    """The deck cannot be built; the message says what to do."""


def reveal_version() -> str:
    """The reveal.js version pinned in ``slides/package.json``."""
    package = json.loads((SLIDES / "package.json").read_text(encoding="utf-8"))
    return package["dependencies"]["reveal.js"]


def ensure_reveal(npm_dir: Path = NPM_DIR, *, offline: bool = False) -> Path:
    """Install the pinned reveal.js into ``npm_dir`` unless it is already there.

    Args:
        npm_dir: Folder for ``package.json``, the lock file and ``node_modules`` (git-ignored).
        offline: Never contact the registry (``npm ci --offline``: npm's cache only).

    Returns:
        The reveal.js package folder.

    Raises:
        BuildError: npm is missing or the install failed.
    """
    package_dir = npm_dir / "node_modules" / "reveal.js"
    wanted = reveal_version()
    installed = package_dir / "package.json"
    if installed.is_file() and json.loads(installed.read_text(encoding="utf-8")).get("version") == wanted:
        return package_dir
    npm = shutil.which("npm")
    if npm is None:
        raise BuildError(
            "npm is not installed: the deck needs reveal.js from the npm registry. Install Node.js with npm "
            "(Debian/Ubuntu: `sudo apt-get install npm`; macOS: `brew install node`), then run this again."
        )
    npm_dir.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(SLIDES / name, npm_dir / name)
    command = [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"]
    command.append("--offline" if offline else "--prefer-offline")
    print(f"Installing reveal.js {wanted} into {npm_dir} ...", file=sys.stderr)
    result = subprocess.run(command, cwd=npm_dir, capture_output=True, text=True, timeout=600)
    if result.returncode != 0 or not installed.is_file():
        raise BuildError(
            f"`{' '.join(command)}` failed in {npm_dir} (exit {result.returncode}):\n{result.stderr.strip()}\n"
            "Check the connection to the npm registry (or its proxy settings), or build once online: "
            "later builds re-use slides/build/npm and npm's cache."
        )
    return package_dir


def data_uri(path: Path) -> str:
    """``path`` as a base64 ``data:`` URI."""
    kind = mimetypes.guess_type(path.name)[0] or {
        ".woff": "font/woff",
        ".woff2": "font/woff2",
    }.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _local(reference: str) -> bool:
    return not re.match(r"^(?:[a-z][a-z0-9+.-]*:|//)", reference, re.IGNORECASE)


def inline_css(path: Path, _seen: frozenset[Path] = frozenset()) -> str:
    """Read a stylesheet with its ``@import``s and ``url()`` files inlined.

    Fonts keep only their WOFF/WOFF2 sources (every current browser reads them), which
    keeps the deck small; EOT/TTF fallbacks are dropped.

    Raises:
        BuildError: The stylesheet refers to another host.
    """
    path = path.resolve()
    if path in _seen:
        return ""
    text = path.read_text(encoding="utf-8")

    def replace_import(match: re.Match[str]) -> str:
        target = match.group(1)
        if not _local(target):
            raise BuildError(f"{path} imports {target}: the deck must not load anything from the network.")
        return inline_css(path.parent / target.split("?")[0].split("#")[0], _seen | {path})

    text = _CSS_IMPORT.sub(replace_import, text)

    def replace_src(match: re.Match[str]) -> str:
        urls = _CSS_URL.findall(match.group(0))
        webfonts = [u for u in urls if u.split("?")[0].lower().endswith((".woff2", ".woff"))]
        if urls and not webfonts and all(u.split("?")[0].lower().endswith((".eot", ".ttf", ".otf")) for u in urls):
            return ""  # an old-browser-only declaration
        if not webfonts:
            return match.group(0)
        kind = "woff2" if webfonts[0].split("?")[0].lower().endswith(".woff2") else "woff"
        return f"src: url({webfonts[0]}) format('{kind}');"

    text = _FONT_SRC.sub(replace_src, text)

    def replace_url(match: re.Match[str]) -> str:
        target = match.group(1)
        if target.startswith("data:") or target.startswith("#"):
            return match.group(0)
        if not _local(target):
            raise BuildError(f"{path} refers to {target}: the deck must not load anything from the network.")
        return f"url({data_uri(path.parent / target.split('?')[0].split('#')[0])})"

    return _CSS_URL.sub(replace_url, text)


def load_numbers(manifest: Path = MANIFEST) -> dict[str, str]:
    """The ``numbers`` the figure script recorded, as display strings (empty when no manifest)."""
    if not manifest.is_file():
        return {}
    return {str(k): str(v) for k, v in json.loads(manifest.read_text(encoding="utf-8")).get("numbers", {}).items()}


def fill_numbers(markdown: str, numbers: Mapping[str, str]) -> str:
    """Replace ``{{name}}`` by ``numbers[name]``.

    Raises:
        BuildError: The deck names a number the figure script did not record.
    """
    missing = sorted({name for name in _PLACEHOLDER.findall(markdown) if name not in numbers})
    if missing:
        raise BuildError(
            f"the deck uses {', '.join(missing)}, which slides/figures/manifest.json does not record; "
            "regenerate the figures (`python slides/figures.py`) or fix the name in the deck."
        )
    return _PLACEHOLDER.sub(lambda m: numbers[m.group(1)], markdown)


def embed_figures(markdown: str, base: Path = SLIDES) -> str:
    """Replace each image reference (Markdown or ``<img src>``) by a ``data:`` URI.

    Raises:
        BuildError: An image is missing or lives on another host.
    """

    def replace(match: re.Match[str]) -> str:
        before, target, after = (match.group(1), match.group(2), match.group(3)) if match.group(1) else (
            match.group(4), match.group(5), match.group(6))
        if target.startswith("data:"):
            return match.group(0)
        if not _local(target):
            raise BuildError(f"the deck shows {target}: put the image under slides/figures/ instead of a URL.")
        path = base / target
        if not path.is_file():
            raise BuildError(
                f"the deck shows {target}, but {path} does not exist; regenerate the figures with "
                "`python slides/figures.py` (make figures)."
            )
        return f"{before}{data_uri(path)}{after}"

    return _IMAGE.sub(replace, markdown)


def deck_title(markdown: str) -> str:
    """The first level-1 heading, used as the page title."""
    match = re.search(r"^#\s+(.+)$", markdown, re.MULTILINE)
    return match.group(1).strip() if match else "Workshop deck"


def render(markdown: str, reveal_dir: Path, *, theme_css: Path = THEME_CSS) -> str:
    """The complete HTML page for a deck whose Markdown is already filled and embedded."""
    styles = "\n".join(inline_css(reveal_dir / name) for name in REVEAL_CSS)
    if theme_css.is_file():
        styles += "\n" + inline_css(theme_css)
    scripts = "\n".join(
        (reveal_dir / name).read_text(encoding="utf-8").replace("</script", "<\\/script") for name in REVEAL_JS
    )
    options = {
        "hash": True,
        "slideNumber": "c/t",
        "width": 1280,
        "height": 720,
        "margin": 0.04,
        "transition": "none",
        "pdfSeparateFragments": False,
    }
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="slides/build.py, reveal.js {html.escape(reveal_version())}">
<title>{html.escape(deck_title(markdown))}</title>
<style>
{styles}
</style>
</head>
<body>
<div class="reveal"><div class="slides">
<section data-markdown data-separator="{html.escape(SLIDE_SEPARATOR)}" data-separator-notes="{html.escape(NOTES_SEPARATOR)}">
<textarea data-template>
{html.escape(markdown, quote=False)}
</textarea>
</section>
</div></div>
<script>
{scripts}
</script>
<script>
Reveal.initialize(Object.assign({json.dumps(options)}, {{plugins: [RevealMarkdown, RevealNotes]}}));
</script>
</body>
</html>
"""


def check_self_contained(page: str) -> None:
    """Raise :class:`BuildError` when the page's markup, styles or slides still load another file or host.

    The page's own HTML and CSS and every image of the slides are checked; the inlined
    libraries are vetted by the browser test, which records every request the page makes.
    """
    slides = "".join(re.findall(r"<textarea data-template>(.*?)</textarea>", page, flags=re.DOTALL))
    markup = re.sub(r"<script>.*?</script>|<textarea data-template>.*?</textarea>", "", page, flags=re.DOTALL)
    found = sorted({m.group(0) for m in _EXTERNAL_REFERENCE.finditer(markup)})
    if found:
        raise BuildError(f"the built deck still refers to outside files: {found[:5]}")
    for match in _IMAGE.finditer(html.unescape(slides)):
        target = match.group(2) or match.group(5)
        if not target.startswith("data:"):
            raise BuildError(f"the built deck still shows {target} by reference")


def build(
    deck: Path = DECK,
    output: Path = OUTPUT,
    *,
    reveal_dir: Path | None = None,
    manifest: Path | None = None,
    offline: bool = False,
) -> Path:
    """Build the deck into one HTML file (written atomically).

    Args:
        deck: The Markdown source.
        output: The HTML file to write.
        reveal_dir: An installed reveal.js package folder; installed with npm when omitted.
        manifest: The figure script's manifest (numbers for ``{{name}}`` placeholders);
            ``figures/manifest.json`` beside the deck by default.
        offline: Never contact the npm registry.

    Returns:
        The output path.

    Raises:
        BuildError: Something is missing; the message says what to do.
    """
    if not deck.is_file():
        raise BuildError(f"no deck source at {deck}")
    reveal_dir = reveal_dir or ensure_reveal(offline=offline)
    markdown = deck.read_text(encoding="utf-8")
    if "</textarea" in markdown.lower():
        raise BuildError("the deck may not contain '</textarea'; write it as &lt;/textarea&gt;.")
    numbers = load_numbers(manifest or deck.parent / "figures" / MANIFEST.name)
    markdown = embed_figures(fill_numbers(markdown, numbers), deck.parent)
    page = render(markdown, reveal_dir)
    check_self_contained(page)
    return atomic_write(output, page)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build the deck, print where it is."""
    parser = argparse.ArgumentParser(description="Build the workshop deck into one offline HTML file.")
    parser.add_argument("--deck", type=Path, default=DECK, help=f"Markdown source (default {DECK.relative_to(SLIDES.parent)})")
    parser.add_argument("--output", "-o", type=Path, default=OUTPUT, help="HTML file to write (default slides/build/deck.html)")
    parser.add_argument("--reveal-dir", type=Path, help="an installed reveal.js package folder (skips npm)")
    parser.add_argument("--offline", action="store_true", help="never contact the npm registry (npm's cache only)")
    args = parser.parse_args(argv)
    try:
        path = build(args.deck, args.output, reveal_dir=args.reveal_dir, offline=args.offline)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Deck written to {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser (S: speaker notes).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
