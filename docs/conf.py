"""Sphinx configuration: the jaxpool documentation site, built from the docstrings.

    python -m sphinx -W -b html docs docs/_build/html

The pictures are drawn at build time by ``figures.py`` (with jaxpool itself where it
computes what they show) into ``docs/_generated``.
"""

import inspect
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # jaxpool from this checkout
sys.path.insert(0, str(HERE))

import figures  # noqa: E402

figures.draw_all(HERE / "_generated")

project = "jaxpool"
author = "the jaxpool developers"
copyright = "2026, the jaxpool developers"  # noqa: A001

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon",
              "sphinx.ext.intersphinx"]
source_suffix = {".md": "markdown"}
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "_generated/*.md"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_typehints_format = "short"
autodoc_default_options = {"exclude-members": "parent, name, scope"}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = "jaxpool"
html_static_path = []


def _module_signatures(app, what, name, obj, options, signature, return_annotation):
  """linen dataclass signatures end in Flax's own ``parent`` and ``name`` fields; nnx's
  metaclass hides the constructor's arguments behind ``(*args, **kwargs)``."""
  if what == "class" and signature == "(*args, **kwargs)":
    params = list(inspect.signature(obj.__init__).parameters.values())[1:]
    signature = str(inspect.Signature([p.replace(annotation=inspect.Parameter.empty)
                                       for p in params]))
  if signature:
    signature = re.sub(r", parent=[^,]*, name=None\)$", ")", signature)
  return signature, return_annotation


def setup(app):
  app.connect("autodoc-process-signature", _module_signatures)
