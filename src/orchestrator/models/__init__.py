"""Model variants, one package each (sd, sd3, glide_mini, discffusion, vcdm), plus shared parts.

Importing this package installs the variant registry as the manifest's catalog (see
registry.py): import it before reading a manifest.
"""
from orchestrator.manifest.variants import set_catalog

from .registry import CATALOG, load_plugins

set_catalog(CATALOG)
load_plugins()  # variants named in ORCH_VARIANT_PLUGINS (registry.py)
