"""Workspace export/import: what a site gets, what it never gets, and archives refused."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from fx.errors import PlanError, WorkspaceError
from fx.pki.workspace import certify_workspace
from fx.plan.loader import load_plan
from fx.workspace import archive as archive_module
from fx.workspace.archive import default_prefix, export_workspace, import_workspace
from fx.workspace.create import NetworkChoice, create_workspace
from fx.workspace.initialize import initialize
from fx.workspace.paths import WorkspacePaths
from fx.workspace.templates import get_template

EXPECTED = {
    "README.md",
    "requirements.txt",
    "cert/cert_chain.pem",
    "plan/plan.yaml",
    "plan/cols.yaml",
    "plan/data.yaml",
    "plan/federation.json",
    "plan/schema/plan.schema.json",
    "plan/schema/cols.schema.json",
    "plan/schema/data.schema.json",
    "src/__init__.py",
    "src/data.py",
    "src/runner.py",
}


@pytest.fixture
def paths(tmp_path: Path) -> WorkspacePaths:
    """A workspace as a federation runs it: PKI, initial model, data, logs, a checkpoint."""
    paths = create_workspace(
        get_template("numpy_logreg_digits"),
        tmp_path / "fed",
        collaborators=["site-1", "site-2"],
        network=NetworkChoice("localhost", 50051),
        rounds=2,
    )
    certify_workspace(paths, aggregator_hosts=["localhost"], collaborators=["site-1", "site-2"])
    initialize(paths)
    paths.metrics.write_text('{"round": 0}\n')
    paths.last_model.write_bytes(b"weights")
    (paths.src / "__pycache__").mkdir()
    (paths.src / "__pycache__" / "runner.cpython-311.pyc").write_bytes(b"\0")
    return paths


def _members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return {member.name: member for member in tar.getmembers()}


def _contents(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            member.name: tar.extractfile(member).read()  # type: ignore[union-attr]
            for member in tar.getmembers()
            if member.isfile()
        }


def test_export_holds_what_a_site_needs_and_no_key_material(
    paths: WorkspacePaths, tmp_path: Path
) -> None:
    keys = list(paths.cert.rglob("*.key"))
    assert len(keys) == 5  # root, signing, aggregator, site-1, site-2: all stay behind

    result = export_workspace(paths, tmp_path / "out" / "fed.fx.tar.gz")

    contents = _contents(result.archive)
    assert set(contents) == EXPECTED
    assert set(result.files) == EXPECTED and result.has_chain
    for name, data in contents.items():
        assert b"PRIVATE KEY" not in data, name
    for key in keys:
        assert key.read_bytes() not in contents.values()
    assert contents["cert/cert_chain.pem"] == paths.cert_chain.read_bytes()
    assert contents["plan/plan.yaml"] == paths.plan.read_bytes()  # comments and all
    members = _members(result.archive)
    assert all(member.isfile() or member.isdir() for member in members.values())
    assert {member.uid for member in members.values()} == {0}
    assert all(member.mode & 0o022 == 0 for member in members.values())


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("src/site.key", b"not even PEM"),
        (
            "src/helpers/credentials.txt",
            b"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n",
        ),
        ("plan/ssh", b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbg==\n"),
    ],
)
def test_export_refuses_a_private_key_outside_cert(
    paths: WorkspacePaths, tmp_path: Path, name: str, content: bytes
) -> None:
    (paths.root / name).parent.mkdir(parents=True, exist_ok=True)
    (paths.root / name).write_bytes(content)
    output = tmp_path / "fed.fx.tar.gz"
    with pytest.raises(WorkspaceError) as raised:
        export_workspace(paths, output)
    assert f"refusing to export private key material: {name}" in raised.value.message
    assert not output.exists()
    assert not list(tmp_path.glob(".fed.fx.tar.gz*"))  # no temporary left behind


def test_export_refuses_a_symlink(paths: WorkspacePaths, tmp_path: Path) -> None:
    (paths.src / "ca").symlink_to(paths.ca_dir)
    with pytest.raises(WorkspaceError) as raised:
        export_workspace(paths, tmp_path / "fed.fx.tar.gz")
    assert f"{paths.src / 'ca'} is not a regular file" in raised.value.message


def test_export_leaves_out_aggregator_local_settings(paths: WorkspacePaths, tmp_path: Path) -> None:
    document = yaml.safe_load(paths.plan.read_text())
    document["notifications"] = {
        "webhooks": [{"url": "https://hooks.example/fx", "secret": "s3cret-token"}]
    }
    paths.plan.write_text(yaml.safe_dump(document, sort_keys=False))
    federation_id = load_plan(paths).federation_id

    archive = export_workspace(paths, tmp_path / "fed.fx.tar.gz").archive
    exported = _contents(archive)["plan/plan.yaml"].decode()
    assert "s3cret-token" not in exported and "hooks.example" not in exported
    assert exported.startswith("# yaml-language-server: $schema=schema/plan.schema.json\n")
    site = import_workspace(archive, tmp_path / "site").paths
    assert load_plan(site).federation_id == federation_id


def test_export_refuses_to_overwrite_or_to_write_into_itself(
    paths: WorkspacePaths, tmp_path: Path
) -> None:
    output = tmp_path / "fed.fx.tar.gz"
    output.write_text("keep me")
    with pytest.raises(WorkspaceError, match="already exists"):
        export_workspace(paths, output)
    assert output.read_text() == "keep me"
    export_workspace(paths, output, overwrite=True)
    assert "plan/plan.yaml" in _members(output)
    with pytest.raises(WorkspaceError, match="which the archive contains"):
        export_workspace(paths, paths.src / "fed.fx.tar.gz")


def test_import_unpacks_a_workspace_with_the_same_federation_id(
    paths: WorkspacePaths, tmp_path: Path
) -> None:
    archive = export_workspace(paths, tmp_path / "fed.fx.tar.gz").archive
    imported = import_workspace(archive, tmp_path / "site")

    site = imported.paths
    assert site.root == (tmp_path / "site").resolve()
    assert load_plan(site).federation_id == load_plan(paths).federation_id
    assert set(imported.files) == EXPECTED and imported.has_chain
    for directory in (site.save, site.logs, site.data):
        assert directory.is_dir() and not any(directory.iterdir())
    assert sorted(p.name for p in site.cert.iterdir()) == ["cert_chain.pem"]
    assert not list(tmp_path.glob(".site.*"))  # the staging directory is gone
    with pytest.raises(WorkspaceError, match="not empty"):
        import_workspace(archive, tmp_path / "site")


def test_default_prefix_drops_the_archive_suffix(tmp_path: Path) -> None:
    assert default_prefix(Path("x/fed.fx.tar.gz"), tmp_path) == tmp_path / "fed"
    assert default_prefix(Path("fed.tgz"), tmp_path) == tmp_path / "fed"


def _file(name: str, data: bytes = b"x") -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    return add


def _special(name: str, kind: bytes, linkname: str = "") -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        tar.addfile(info)

    return add


UNSAFE = [
    ("absolute", _file("/etc/cron.d/fx"), "'/etc/cron.d/fx' (absolute path)"),
    ("dotdot", _file("plan/../../escape.py"), "'plan/../../escape.py' ('..' in path)"),
    ("dotdot-top", _file("../escape.py"), "'../escape.py' ('..' in path)"),
    (
        "symlink",
        _special("src/model.py", tarfile.SYMTYPE, "/home/user/.ssh/id_rsa"),
        "'src/model.py' (link to '/home/user/.ssh/id_rsa')",
    ),
    (
        "hardlink",
        _special("src/model.py", tarfile.LNKTYPE, "plan/plan.yaml"),
        "'src/model.py' (link to 'plan/plan.yaml')",
    ),
    ("device", _special("src/null", tarfile.CHRTYPE), "'src/null' (device, pipe or other"),
    ("fifo", _special("src/pipe", tarfile.FIFOTYPE), "'src/pipe' (device, pipe or other"),
    ("outside-layout", _file("data/site-1/train.npz"), "not part of a workspace export"),
    ("a-key", _file("cert/client/site-1.key"), "'cert/client/site-1.key' (not part of"),
]


@pytest.mark.parametrize(
    ("add", "message"), [case[1:] for case in UNSAFE], ids=[case[0] for case in UNSAFE]
)
def test_import_refuses_unsafe_entries_and_writes_nothing(
    tmp_path: Path, add: Callable[[tarfile.TarFile], None], message: str
) -> None:
    archive = tmp_path / "evil.fx.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        _file("plan/plan.yaml", b"fx_version: 1\n")(tar)
        add(tar)
    before = sorted(os.listdir(tmp_path))

    with pytest.raises(WorkspaceError) as raised:
        import_workspace(archive, tmp_path / "site")
    assert "refusing to unpack 1 unsafe or unexpected entry" in raised.value.message
    assert message in raised.value.message
    assert raised.value.hint is not None and "nothing was written" in raised.value.hint
    assert sorted(os.listdir(tmp_path)) == before
    assert not (tmp_path.parent / "etc").exists() and not (tmp_path.parent / "escape.py").exists()


def test_import_refuses_what_is_not_an_export(tmp_path: Path) -> None:
    garbage = tmp_path / "notes.fx.tar.gz"
    garbage.write_bytes(b"just text")
    with pytest.raises(WorkspaceError, match="is not an fx workspace archive"):
        import_workspace(garbage, tmp_path / "a")
    no_plan = tmp_path / "src-only.tar.gz"
    with tarfile.open(no_plan, "w:gz") as tar:
        _file("src/runner.py")(tar)
    with pytest.raises(WorkspaceError, match=r"holds no plan/plan\.yaml"):
        import_workspace(no_plan, tmp_path / "b")
    with pytest.raises(WorkspaceError, match="does not exist"):
        import_workspace(tmp_path / "missing.tar.gz", tmp_path / "c")
    assert not any((tmp_path / name).exists() for name in "abc")


def test_import_refuses_an_invalid_plan_and_keeps_nothing(tmp_path: Path) -> None:
    archive = tmp_path / "bad.fx.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        _file("plan/plan.yaml", b"fx_version: 1\n")(tar)
    with pytest.raises(PlanError) as raised:
        import_workspace(archive, tmp_path / "site")
    assert "'template' is a required property" in raised.value.message
    assert not (tmp_path / "site").exists()


def test_import_refuses_an_archive_too_large_for_an_export_and_writes_nothing(
    tmp_path: Path,
) -> None:
    archive = tmp_path / "big.fx.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        _file("plan/plan.yaml", b"fx_version: 1\n")(tar)
        _file("src/weights.bin", bytes(3 << 20))(tar)  # zeros: compresses to almost nothing
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(WorkspaceError, match="more than 2 MiB") as raised:
        import_workspace(archive, tmp_path / "site", max_mib=2)
    assert raised.value.hint is not None and "--max-mib" in raised.value.hint
    assert sorted(os.listdir(tmp_path)) == before
    # Within the cap the same archive is read (and refused for its plan, not its size).
    with pytest.raises(PlanError):
        import_workspace(archive, tmp_path / "site", max_mib=4)


def test_import_refuses_an_archive_with_too_many_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive_module, "MAX_IMPORT_ENTRIES", 5)
    archive = tmp_path / "many.fx.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        _file("plan/plan.yaml", b"fx_version: 1\n")(tar)
        for i in range(10):
            _file(f"src/m{i}.py")(tar)
    with pytest.raises(WorkspaceError, match="more than 5 entries"):
        import_workspace(archive, tmp_path / "site")
    assert not (tmp_path / "site").exists()
