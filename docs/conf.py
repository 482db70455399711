"""Sphinx configuration of the flask-asyncstate documentation.

Build offline with ``sphinx-build -E -W -b html docs docs/_build/html``.
Set ``DOCS_INTERSPHINX=1`` to link to the Python and Flask docs (needs the
internet at build time).
"""

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


def _check_config_keys(app):
    """Warn (an error under ``-W``) for a configuration key left out of the docs.

    ``flask_asyncstate/config.py`` is the one source: every key of ``DEFAULTS``
    needs a ``#:`` comment there and an ``autodata`` entry in ``config.rst``.
    """
    from sphinx.pycode import ModuleAnalyzer
    from sphinx.util import logging

    from flask_asyncstate.config import DEFAULTS

    log = logging.getLogger(__name__)
    commented = {
        name
        for scope, name in ModuleAnalyzer.for_module("flask_asyncstate.config").find_attr_docs()
        if not scope
    }
    listed = set(
        re.findall(
            r"^\.\. autodata:: flask_asyncstate\.config\.(\w+)",
            Path(app.srcdir, "config.rst").read_text(encoding="utf-8"),
            re.MULTILINE,
        )
    )
    for key in DEFAULTS:
        if key not in commented:
            log.warning("config key %s has no #: comment in flask_asyncstate/config.py", key)
        if key not in listed:
            log.warning("config key %s is not listed in docs/config.rst", key)
    for key in sorted(listed - DEFAULTS.keys()):
        log.warning("docs/config.rst lists %s, which is not a key of DEFAULTS", key)


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
    app.add_directive("asyncstate-labels", _labels_directive())
