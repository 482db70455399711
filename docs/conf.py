"""Sphinx configuration of the flask-asyncstate documentation.

Build offline with ``sphinx-build -E -W -b html docs docs/_build/html``.
Set ``DOCS_INTERSPHINX=1`` to link to the Python and Flask docs (needs the
internet at build time).
"""

import inspect
import os
import re
import sys
from importlib import metadata
from pathlib import Path

# Document the source tree next to this directory, not whatever copy is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

project = "flask-asyncstate"
copyright = "flask-asyncstate contributors"
author = "flask-asyncstate contributors"

try:
    release = metadata.version("flask-asyncstate")
except metadata.PackageNotFoundError:
    release = "0.1.0.dev0"
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "pallets_sphinx_themes",
]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True

intersphinx_mapping = {
    "python": ("https://docs.python.org/3/", None),
    "flask": ("https://flask.palletsprojects.com/en/stable/", None),
}
if os.environ.get("DOCS_INTERSPHINX") == "1":
    extensions.append("sphinx.ext.intersphinx")

exclude_patterns = ["_build"]

html_theme = "flask"
html_theme_options = {"index_sidebar_logo": False}
html_sidebars = {
    "index": ["project.html", "localtoc.html", "searchbox.html"],
    "**": ["localtoc.html", "relations.html", "searchbox.html"],
}
html_title = f"flask-asyncstate Documentation ({version})"
html_show_sourcelink = False
# The banner script asks PyPI about newer releases: not wanted for an unpublished project.
version_banner = False


#: Files, beside ``docs/**/*.rst``, whose ``ASYNCSTATE_*`` names must be current keys.
_KEY_SOURCES = ("../README.md", "examples/**/*.py", "examples/**/*.html")
#: The directives of ``config.rst`` that render ``flask_asyncstate/config.py``.
_CONFIG_DIRECTIVES = ("asyncstate-config", "asyncstate-tuning", "asyncstate-removed")


def _check_config_keys(app):
    """Warn (an error under ``-W``) for configuration the docs could leave out or get wrong.

    ``flask_asyncstate/config.py`` is the one source: each field of ``Settings`` (a key)
    and of ``Tuning`` (a keyword) declares its doc, which ``config.rst`` renders with the
    ``asyncstate-*`` directives below. A field without a doc, a directive missing from
    ``config.rst``, or an ``ASYNCSTATE_*`` name in the docs (the pages, their examples,
    the README, the fields' docs) that is no key (one removed in 0.2, or a typo) is a
    warning.
    """
    from sphinx.util import logging

    from flask_asyncstate import config

    log = logging.getLogger(__name__)
    for f in config.KEYS + config.TUNING:
        if not f.metadata.get("doc"):
            log.warning("config field %s has no doc in flask_asyncstate/config.py", f.name)
    page = Path(app.srcdir, "config.rst").read_text(encoding="utf-8")
    for directive in _CONFIG_DIRECTIVES:
        if f".. {directive}::" not in page:
            log.warning("docs/config.rst does not render the table (.. %s::)", directive)

    def check(text, where):
        for found in sorted(set(re.findall(r"ASYNCSTATE_[A-Z_]*[A-Z]", text))):
            if found in config.DEFAULTS:
                continue
            hint = config.REMOVED.get(found, "no such key in flask_asyncstate/config.py")
            log.warning("%s names %s: %s", where, found, hint)

    src = Path(app.srcdir)
    files = sorted(src.glob("**/*.rst")) + [
        path for pattern in _KEY_SOURCES for path in sorted(src.glob(pattern))
    ]
    for path in files:
        if "_build" not in path.parts:
            check(path.read_text(encoding="utf-8"), path.resolve().relative_to(src.parent))
    for f in config.KEYS + config.TUNING:
        check(f.metadata.get("doc", ""), f"the doc of config field {f.name}")


def _config_directives():
    """``.. asyncstate-config::``, ``.. asyncstate-tuning::`` and ``.. asyncstate-removed::``:
    the keys, the tuning keywords and the removed keys of ``flask_asyncstate/config.py``,
    each a table (key / default / meaning) then an entry per key, all read from the code.
    """
    from docutils import nodes
    from docutils.statemachine import StringList
    from sphinx.util.docutils import SphinxDirective

    def summary(doc):
        return " ".join(doc.split("\n\n", 1)[0].split())

    def indented(text, by):
        return [(" " * by + line) if line else "" for line in text.splitlines()]

    def table(header, rows, widths="30 15 55"):
        out = [".. list-table::", "    :header-rows: 1", f"    :widths: {widths}", ""]
        for row in [header, *rows]:
            out += [f"    * - {row[0]}"] + [f"      - {cell}" for cell in row[1:]]
        return out + [""]

    class Rendered(SphinxDirective):
        """Renders its table and its entries, or only ``table`` or ``entries`` if so asked."""

        optional_arguments = 1

        def render(self):
            raise NotImplementedError

        @property
        def part(self):
            part = self.arguments[0] if self.arguments else "all"
            if part not in ("all", "table", "entries"):
                raise self.error(f"{self.name} takes 'table' or 'entries', not {part!r}")
            return part

        def run(self):
            holder = nodes.container()
            rows = StringList(self.render(), source=self.get_source_info()[0])
            self.state.nested_parse(rows, self.content_offset, holder)
            return holder.children

    class Keys(Rendered):
        def render(self):
            from flask_asyncstate.config import DEFAULTS, KEYS, key_name

            names = [key_name(f.name) for f in KEYS]
            out = []
            if self.part != "entries":
                out += table(
                    ("key", "default", "meaning"),
                    [
                        (f":data:`{name}`", f"``{DEFAULTS[name]!r}``", summary(f.metadata["doc"]))
                        for name, f in zip(names, KEYS)
                    ],
                )
            for name, f in zip(names, KEYS if self.part != "table" else ()):
                out += [
                    f".. data:: {name}",
                    f"    :type: {f.type}",
                    f"    :value: {f.default!r}",
                    "",
                ]
                out += indented(f.metadata["doc"], 4) + [""]
            return out

    class Keywords(Rendered):
        def render(self):
            from flask_asyncstate.config import TUNING, Tuning

            out = table(
                ("keyword", "default", "meaning"),
                [
                    (f":attr:`~Tuning.{f.name}`", f"``{f.default!r}``", summary(f.metadata["doc"]))
                    for f in TUNING
                ],
            )
            out += [".. class:: Tuning(**keywords)", ""]
            out += indented(inspect.cleandoc(Tuning.__doc__), 4) + [""]
            for f in TUNING:
                out += [f"    .. attribute:: {f.name}", f"        :type: {f.type}"]
                out += [f"        :value: {f.default!r}", ""]
                out += indented(f.metadata["doc"], 8) + [""]
            return out

    class Removed(Rendered):
        def render(self):
            from flask_asyncstate.config import REMOVED

            return table(
                ("removed key", "instead"),
                [(f"``{name}``", fix) for name, fix in REMOVED.items()],
                widths="40 60",
            )

    return {"asyncstate-config": Keys, "asyncstate-tuning": Keywords, "asyncstate-removed": Removed}


def _labels_directive():
    """``.. asyncstate-labels::``: the table of the widget's labels, one row per key of
    ``flask_asyncstate.templating.DEFAULT_LABELS`` with its English default, read from the code.

    The content says where each label shows, one ``key: text`` entry per label (indented
    lines continue the entry). A key of ``DEFAULT_LABELS`` left out, or an entry for a key
    that does not exist, is a warning (an error under ``-W``), so the table cannot drift
    from the code.
    """
    from docutils import nodes
    from docutils.statemachine import StringList
    from sphinx.util import logging
    from sphinx.util.docutils import SphinxDirective

    log = logging.getLogger(__name__)

    class LabelsTable(SphinxDirective):
        has_content = True

        def run(self):
            from flask_asyncstate.templating import DEFAULT_LABELS

            described: dict[str, str] = {}
            key = None
            for line in self.content:
                entry = re.match(r"(\w+):\s+(.*)", line)
                if entry:
                    key = entry.group(1)
                    described[key] = entry.group(2).strip()
                elif line.strip() and key is not None:
                    described[key] += " " + line.strip()
            for missing in DEFAULT_LABELS.keys() - described.keys():
                log.warning("label %s is not described", missing, location=self.get_location())
            for extra in described.keys() - DEFAULT_LABELS.keys():
                log.warning(
                    "label %s is not a key of DEFAULT_LABELS", extra, location=self.get_location()
                )
            rows = [
                ".. list-table::",
                "    :header-rows: 1",
                "    :widths: 18 37 45",
                "",
                "    * - key",
                "      - English default",
                "      - shown",
            ]
            for name, text in DEFAULT_LABELS.items():
                rows += [
                    f"    * - ``{name}``",
                    f"      - ``{text}``" if "`" not in text else f"      - {text}",
                    f"      - {described.get(name, '')}",
                ]
            holder = nodes.container()
            self.state.nested_parse(
                StringList(rows, source=self.get_source_info()[0]), self.content_offset, holder
            )
            return holder.children

    return LabelsTable


def setup(app):
    app.connect("builder-inited", _check_config_keys)
    for name, directive in _config_directives().items():
        app.add_directive(name, directive)
    app.add_directive("asyncstate-labels", _labels_directive())
