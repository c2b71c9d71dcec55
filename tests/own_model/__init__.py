"""Models of their owners' making, for the ``models add`` tests: tiny networks, their data and a training
command."""
