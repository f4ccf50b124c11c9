"""cluster/: the Ray cluster-launcher YAML against the schema the installed `ray` ships; the KubeRay
manifests' built-in kinds (and every pod template, as a Pod) against Kubernetes' own schemas
(kubernetes-validate, strict: unknown fields are errors), and the Ray CRD fields against a schema
of the fields used, written here; the example sweeps as orch validates them. Nothing here needs a
cloud or a Kubernetes cluster."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate  # a test dependency (pyproject: test); missing is an error, never a skip
import ray
import yaml

from orchestrator.actors.cluster import WORKER_ENV
from orchestrator.models.registry import load_checked_manifest

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
K8S_VERSION = "1.33"  # AKS' current line; the package ships every schema up to its own version
IMAGE = re.compile(r"^[a-zA-Z0-9./_-]+:[a-zA-Z0-9._-]+$")
# Secrets look like these; none may be committed (placeholders only, in orch.env.example).
SECRET = re.compile(r"AccountKey=[A-Za-z0-9+/]{20,}|password=['\"]?[^&\s'\"]{4,}|postgres(ql)?://[^@\s/]+:[^@\s/]+@|"
                    r"BEGIN [A-Z ]*PRIVATE KEY", re.IGNORECASE)

STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
POD_TEMPLATE = {"type": "object", "required": ["spec"], "properties": {"spec": {"type": "object"}},
                "additionalProperties": False}
# The RayCluster fields these manifests use, as KubeRay's ray.io/v1 CRD types them (rayStartParams
# values are strings there: a number is rejected by the API server).
RAY_CLUSTER_SPEC = {
    "type": "object", "required": ["rayVersion", "headGroupSpec"], "additionalProperties": False,
    "properties": {
        "rayVersion": {"type": "string"},
        "enableInTreeAutoscaling": {"type": "boolean"},
        "headGroupSpec": {"type": "object", "required": ["template"], "additionalProperties": False,
                          "properties": {"rayStartParams": STRINGS, "template": POD_TEMPLATE}},
        "workerGroupSpecs": {"type": "array", "items": {
            "type": "object", "required": ["groupName", "template"], "additionalProperties": False,
            "properties": {"groupName": {"type": "string"}, "replicas": {"type": "integer", "minimum": 0},
                           "minReplicas": {"type": "integer", "minimum": 0},
                           "maxReplicas": {"type": "integer", "minimum": 0},
                           "rayStartParams": STRINGS, "template": POD_TEMPLATE}}},
    },
}
RAY_JOB_SPEC = {
    "type": "object", "required": ["entrypoint"], "additionalProperties": False,
    "properties": {"entrypoint": {"type": "string"}, "clusterSelector": STRINGS,
                   "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
                   "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
                   "rayClusterSpec": RAY_CLUSTER_SPEC}}


def crd_schema(kind: str, spec: dict) -> dict:
    return {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
            "properties": {"apiVersion": {"const": "ray.io/v1"}, "kind": {"const": kind},
                           "metadata": {"type": "object", "required": ["name"],
                                        "properties": {"name": {"type": "string", "pattern": "^[a-z0-9-]+$"},
                                                       "labels": STRINGS}},
                           "spec": spec}}


CRDS = {"RayCluster": crd_schema("RayCluster", RAY_CLUSTER_SPEC), "RayJob": crd_schema("RayJob", RAY_JOB_SPEC)}


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((CLUSTER / "kuberay" / name).read_text()) if d]


def pod(template: dict, name: str) -> dict:
    """A pod template as the Pod it becomes, for Kubernetes' Pod schema."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": template["spec"]}


def containers(template: dict) -> dict[str, dict]:
    return {c["name"]: c for c in template["spec"]["containers"]}


def test_the_cluster_launcher_yaml_matches_rays_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    types = config["available_node_types"]
    gpu = [t for t in types.values() if t["resources"].get("GPU")]
    assert gpu and types[config["head_node_type"]]["resources"] == {"CPU": 0}  # trainers on GPU workers only
    setup = "\n".join(config["setup_commands"])
    assert "-c ~/orchestrator/constraints.txt torch==" in setup and "-e ~/orchestrator" in setup  # orch, pinned
    head = "\n".join(config["head_start_ray_commands"])
    assert "--port=6380" in head and "orch serve" in head and "--journal \"$ORCH_JOURNAL\"" in head
    assert all(". ~/orch.env" in c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"]
               if "ray start" in c)  # credentials from the environment file, on every node


def test_the_environment_file_template_sources_as_the_nodes_source_it():
    out = subprocess.run(["bash", "-c", f"set -a && . {CLUSTER / 'orch.env.example'} && set +a && env"],
                         capture_output=True, text=True, env={}, check=True).stdout
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert env["AZURE_STORAGE_CONNECTION_STRING"].endswith(";EndpointSuffix=core.windows.net")  # not cut at a ;
    assert env["ORCH_JOURNAL"].startswith("postgresql://") and "ORCH_SHARED_NFS" in env
    assert env["RAY_worker_niceness"] == WORKER_ENV["RAY_worker_niceness"]  # as the local head runs trials


def test_kuberay_manifests_validate():
    seen = []
    for name in ("raycluster.yaml", "rayjob.yaml"):
        for doc in docs(name):
            seen.append(doc["kind"])
            if doc["kind"] in CRDS:
                jsonschema.validate(doc, CRDS[doc["kind"]])
                spec = doc["spec"].get("rayClusterSpec", doc["spec"])
                groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])] if "headGroupSpec" in spec else []
                for i, group in enumerate(groups):
                    kubernetes_validate.validate(pod(group["template"], f"{doc['metadata']['name']}-{i}"),
                                                 K8S_VERSION, strict=True)
            else:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert sorted(seen) == ["ConfigMap", "PersistentVolumeClaim", "RayCluster", "RayJob", "Service"]


def test_the_raycluster_serves_the_api_on_the_head_and_trains_on_gpu_workers():
    [cluster] = [d for d in docs("raycluster.yaml") if d["kind"] == "RayCluster"]
    assert cluster["spec"]["rayVersion"] == ray.__version__  # the image's Ray is the pinned one
    head = containers(cluster["spec"]["headGroupSpec"]["template"])
    assert "orch serve" in head["orch-api"]["args"][0] and "--address 127.0.0.1:6379" in head["orch-api"]["args"][0]
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    [gpu] = cluster["spec"]["workerGroupSpecs"]
    worker = containers(gpu["template"])["ray-worker"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    for template in (cluster["spec"]["headGroupSpec"]["template"], gpu["template"]):
        for c in containers(template).values():
            assert IMAGE.match(c["image"]), c["image"]
        mounts = {m["mountPath"] for c in containers(template).values() for m in c.get("volumeMounts", [])}
        assert "/shared" in mounts  # trainers read their manifest by path: a disk every node sees
    [service] = [d for d in docs("raycluster.yaml") if d["kind"] == "Service"]
    assert service["spec"]["selector"] == {"ray.io/cluster": "orch", "ray.io/node-type": "head"}
    [job] = [d for d in docs("rayjob.yaml") if d["kind"] == "RayJob"]
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}


def test_the_example_sweeps_are_one_manifest_and_valid(tmp_path):
    [config_map] = [d for d in docs("rayjob.yaml") if d["kind"] == "ConfigMap"]
    in_cluster = yaml.safe_load(config_map["data"]["sweep.yaml"])
    on_disk = yaml.safe_load((CLUSTER / "sweep.yaml").read_text())
    on_disk.pop("description")
    assert in_cluster == on_disk  # the same sweep, two ways of submitting it
    (tmp_path / "sweep.yaml").write_text(config_map["data"]["sweep.yaml"])
    loaded = load_checked_manifest(tmp_path / "sweep.yaml")
    assert loaded.manifest.resources.gpus_per_trial == 1 and loaded.manifest.storage.blobs.startswith("az://")


def test_no_credentials_are_committed():
    for path in sorted(CLUSTER.rglob("*")):
        if path.is_file():
            found = SECRET.search(path.read_text())
            assert found is None, f"{path}: {found.group(0)[:40]}"
