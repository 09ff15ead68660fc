"""buildpipe: a make-like, file-target build system whose build files are Python.

The public API is the Pipefile DSL below; everything else is internal.
"""

from .dsl import alias, default, invariant, rule, sh
from .rules import Invariant, Rule

__version__ = "0.1.0"

__all__ = ["Invariant", "Rule", "alias", "default", "invariant", "rule", "sh"]
