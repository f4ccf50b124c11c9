"""Names the project's Ray actors are found by (light: no Ray import)."""
NAMESPACE = "orch"  # the Ray namespace of the named actors: coordinator-<experiment id>, orch-admission
