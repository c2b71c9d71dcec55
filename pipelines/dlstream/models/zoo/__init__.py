"""The built-in models, one plugin module each (registered in pyproject's ``dlstream.models`` group)."""
