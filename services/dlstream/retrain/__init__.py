"""Retraining, from the monitor's trigger to a promoted version: when to start a job (``policy``), how it is
started (``launchers``: a local process, a Kubernetes Job from ``kubernetes``, a Redis queue), what the job
does (``job``), and the gate a candidate passes. The training itself is the plugin's recipe
(:mod:`dlstream.models.retraining`)."""
