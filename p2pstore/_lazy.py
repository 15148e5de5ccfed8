"""Deferred imports for the command line's fast start."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """The module ``name``, executed only when one of its attributes is first used.

    Already imported: the module itself. Otherwise a module object is registered in
    ``sys.modules`` whose first attribute access runs the import (``importlib.util.LazyLoader``,
    the standard library's recipe), so a module that *may* need it pays nothing until it does.
    Raises ``ModuleNotFoundError`` at once if ``name`` cannot be found.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
