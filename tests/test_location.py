"""One resolver for every place a directory or file is named: local paths (relative to the
manifest), file:// URIs, keys in the manifest's store, az:// URIs (real Azurite); and a model
directory put into a store and loaded back through each form."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch

from orchestrator.models.loading import load_model
from orchestrator.models.sd import build_tiny
from orchestrator.storage import open_store
from orchestrator.storage.location import get_dir, open_blob_store, put_dir, resolve_location


def tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text("{}")
    (root / "sub" / "w.bin").write_bytes(b"\x00\x01")
    return root


def test_local_forms_and_store_prefixes(tmp_path):
    tree(tmp_path / "m")
    for written, base in (("m", tmp_path), (str(tmp_path / "m"), None), (f"file://{tmp_path / 'm'}", None)):
        loc = resolve_location(written, base_dir=base)
        assert loc.is_local and loc.path == (tmp_path / "m").resolve() and loc.has("sub/w.bin")
    store = open_store(tmp_path / "blobs")
    keys = put_dir(store, tmp_path / "m", "models/m")
    assert keys[-1] == "models/m/config.json"  # the index goes last: a reader that sees it sees all
    loc = resolve_location("models/m", base_dir=tmp_path, store=store)  # not on disk: a prefix in the store
    assert not loc.is_local and loc.has("sub/w.bin") and loc.read_bytes("sub/w.bin") == b"\x00\x01"
    with loc.local_dir() as d:
        assert (d / "sub" / "w.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(FileNotFoundError, match="no blob store"):
        resolve_location("models/m", base_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="nothing under blob prefix"):
        get_dir(store, "models/none", tmp_path / "out")
    with pytest.raises(FileNotFoundError):  # file:// never means a store key
        resolve_location("file://models/m", store=store)
    assert open_blob_store("./blobs", tmp_path).exists("models/m/config.json")  # against the manifest dir


@pytest.mark.azurite
def test_a_model_directory_in_azure_loads_by_its_uri(azurite_env, tmp_path):
    container = f"t-{uuid.uuid4().hex[:12]}"
    c = build_tiny(seed=3)
    c.save(tmp_path / "model")
    put_dir(open_store(f"az://{container}"), tmp_path / "model", "models/tiny")
    loc = resolve_location(f"az://{container}/models/tiny")
    assert not loc.is_local and loc.has("model_index.json")
    loaded = load_model(f"az://{container}/models/tiny")  # the index names the variant: nothing else needed
    assert loaded.variant.INFO.name == "sd"
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.unet.parameters(), c.unet.parameters()))


# ---------------------------------------------------------------- parsing and confinement
from orchestrator.storage.location import LocationError, OutsideRootsError, confine, is_remote, parse_location  # noqa: E402


def test_a_scheme_counts_only_at_the_start_and_only_az_and_file_exist():
    assert parse_location("az://my-container/a/b/").uri == "az://my-container/a/b" and is_remote("az://abc")
    assert parse_location("file:///x/y").path == Path("/x/y") and not is_remote("file://./rel")
    # `://` after the start is a path separator to the OS, so it is a local path here too
    inner = parse_location("state/c://../../etc")
    assert inner.scheme == "" and inner.path == Path("state/c:/../../etc")
    for bad in ("AZ://abc/x", "azure://abc/x", "s3://bucket/x", "https://host/x", "c://x", "Az://abc"):
        with pytest.raises(LocationError, match="unsupported scheme"):
            parse_location(bad)
    for bad in ("az://ab/x", "az://UPPER/x", "az://-abc/x", "az://a--b/x", "az:///x", "az://abc/../x",
                "az://abc/a\\b"):
        with pytest.raises(LocationError):
            parse_location(bad)


def test_nul_control_characters_and_overlong_paths_are_location_errors_not_os_errors():
    for bad in ("a\0b", "a\nb", "dir/\x07", "file://", ""):
        with pytest.raises(LocationError):
            parse_location(bad)
    for long in ("a" * 5000, "a/" * 2500, "d/" + "n" * 256):
        with pytest.raises(LocationError, match="too long") as info:
            parse_location(long)
        assert len(str(info.value)) < 200  # the error does not echo 5,000 characters


def test_confine_resolves_as_the_worker_opens_and_refuses_everything_outside(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "data").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text("s")
    (root / "link-out").symlink_to(outside)
    (root / "c:").mkdir()  # what a blob store named file://./c: creates
    (root / "link-in").symlink_to(root / "data")
    roots = [root]
    assert confine("data", base_dir=root, roots=roots) == str((root / "data").resolve())
    assert confine("file://./link-in", base_dir=root, roots=roots) == str((root / "data").resolve())
    assert confine(f"{root}/c://../data", base_dir=None, roots=roots) == str((root / "data").resolve())
    assert confine("az://my-box/p/q/", base_dir=root, roots=roots) == "az://my-box/p/q"
    probes = [f"{root}/c://../../outside/secret", f"file://{outside}/secret", "file://../outside/secret",
              "link-out/secret", "../outside/secret", "data/../../outside/secret", "~/x",
              f"{root}/c:" + "/.." * 40 + "/proc/self/environ", "/etc/passwd", f"{root}-sibling/x"]
    for probe in probes:
        with pytest.raises(OutsideRootsError, match="outside the head's allowed roots"):
            confine(probe, base_dir=root, roots=roots)
    for probe in ("s3://b/x", "a\0b", "x" * 5000):
        with pytest.raises(LocationError):
            confine(probe, base_dir=root, roots=roots)
