"""Sphinx configuration of the flask-asyncstate documentation.

Build offline with ``sphinx-build -E -W -b html docs docs/_build/html``.
Set ``DOCS_INTERSPHINX=1`` to link to the Python and Flask docs (needs the
internet at build time).
"""

import os
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
