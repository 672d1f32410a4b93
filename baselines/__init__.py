"""Data-selection baselines, one module each; importing the package registers them all
(every module here defines an `@register(name, Params)` selector)."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
