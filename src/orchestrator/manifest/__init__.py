"""Experiment manifests: schema, YAML loading with line numbers, sweep expansion, and the checked
load every entry point uses (`load_experiment`: schema plus what the variants can do)."""
from .errors import ManifestError, ManifestIssue
from .experiment import load_experiment
from .load import LoadedManifest, load_manifest
from .schema import Manifest, local_path
from .sweep import Trial, canonical_json, content_id, expand, experiment_id, trial_config

__all__ = [
    "LoadedManifest", "Manifest", "ManifestError", "ManifestIssue", "Trial", "canonical_json",
    "content_id", "expand", "experiment_id", "load_experiment", "load_manifest", "local_path", "trial_config",
]
