"""Sphinx configuration of jaxnoisy's documentation (build: see docs/index.md)."""

import os
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(DOCS))  # the jaxnoisy of this checkout
sys.path.insert(0, os.path.join(DOCS, "_ext"))

project = "jaxnoisy"
author = "the jaxnoisy authors"
copyright = "2026, the jaxnoisy authors"  # noqa: A001 (Sphinx's name)

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.napoleon",
    "config_table",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
root_doc = "index"

# API pages: autosummary tables over explicit autodoc entries (no generated stubs).
autosummary_generate = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# MyST: $…$ and $$…$$ maths in prose pages; headings get anchors for links.
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = "jaxnoisy"
