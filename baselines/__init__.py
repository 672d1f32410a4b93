"""Data-selection baselines, one module each (an `@register(name, Params)` selector).

Nothing is imported here: igds.core.registry lists the methods and imports a module only when
its method is asked for."""
