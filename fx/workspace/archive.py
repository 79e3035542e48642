"""`fx workspace export` / `import`: what a site needs to join, in one archive.

An export holds, relative to the workspace root::

    plan/                the plan, cols.yaml, data.yaml, schema/, federation.json
    src/                 the model, data and task code (no __pycache__)
    requirements.txt     what src/ needs installed
    README.md            the template's notes, when present
    cert/cert_chain.pem  the chain of trust, when the CA has made one

plan.yaml leaves out its aggregator-local sections (``notifications``: webhook
URLs and secrets), which are not part of the federation id. The archive holds
nothing else: no private key (cert/ca/, cert/server/, cert/client/, and
any file in plan/ or src/ that holds one makes the export fail), no data/, logs/
or save/. The import side accepts exactly that layout and refuses absolute paths,
``..``, links, devices and anything outside it, before it writes a byte.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fx.errors import PlanError, WorkspaceError
from fx.plan.validate import find_problems, format_problems
from fx.workspace.paths import WorkspacePaths

ARCHIVE_SUFFIX = ".fx.tar.gz"

_TREES = ("plan", "src")
"""Directories exported whole (less caches)."""
_FILES = ("requirements.txt", "README.md", "cert/cert_chain.pem")
"""Single files exported when present."""
_DIRECTORIES = frozenset({"plan", "src", "cert"})
_SKIPPED_DIRS = frozenset({"__pycache__", ".ipynb_checkpoints"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo")
# PEM ("-----BEGIN EC PRIVATE KEY-----", "ENCRYPTED PRIVATE KEY", ...) and OpenSSH keys.
_KEY_MARKERS = (b"PRIVATE KEY-----", b"-----BEGIN OPENSSH PRIVATE KEY")
_MAX_LISTED = 10
_PLAN = "plan/plan.yaml"
# An export is code and configuration: far below these. The caps stop an archive
# from another party (a decompression bomb, say) from filling the disk; whoever
# really ships more raises them (`fx workspace import --max-mib`).
DEFAULT_MAX_IMPORT_MIB = 256
MAX_IMPORT_ENTRIES = 10_000


@dataclass(frozen=True)
class Exported:
    """What `fx workspace export` wrote."""

    archive: Path
    files: tuple[str, ...]
    has_chain: bool


@dataclass(frozen=True)
class Imported:
    """What `fx workspace import` unpacked."""

    paths: WorkspacePaths
    files: tuple[str, ...]
    has_chain: bool


def default_archive(paths: WorkspacePaths, directory: Path | None = None) -> Path:
    """``<directory>/<workspace name>.fx.tar.gz`` (default: the current directory)."""
    return (directory or Path.cwd()) / f"{paths.root.name}{ARCHIVE_SUFFIX}"


def export_workspace(paths: WorkspacePaths, output: Path, *, overwrite: bool = False) -> Exported:
    """Write the archive a site needs to join the federation of ``paths`` to ``output``.

    WorkspaceError if a file to export holds a private key or is a link, if
    ``output`` lies inside an exported directory, or exists and ``overwrite`` is false.
    """
    output = output.resolve()
    for tree in _TREES:
        if output.is_relative_to(paths.root / tree):
            raise WorkspaceError(
                f"{output} is inside {paths.root / tree}, which the archive contains",
                hint="write the archive elsewhere with --output FILE",
            )
    if output.exists() and not overwrite:
        raise WorkspaceError(
            f"{output} already exists; refusing to overwrite it",
            hint="remove it, pass --force, or choose another --output",
        )
    files = sorted(_exported_files(paths))
    refused = [name for name in files if _holds_private_key(paths.root / name)]
    if refused:
        raise WorkspaceError(
            f"refusing to export private key material: {', '.join(refused)}",
            hint="keys stay with their owner: move them out of plan/ and src/ "
            "(certificates and keys belong in cert/, which is never exported)",
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.")
    try:
        with (
            os.fdopen(descriptor, "wb") as stream,
            tarfile.open(fileobj=stream, mode="w:gz") as tar,
        ):
            for name in _with_parent_directories(files):
                _add(tar, paths.root, name, _shared_plan(paths) if name == _PLAN else None)
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return Exported(output, tuple(files), "cert/cert_chain.pem" in files)


def _exported_files(paths: WorkspacePaths) -> Iterator[str]:
    """Workspace-relative POSIX names of the regular files to export."""
    root = paths.root
    for tree in _TREES:
        top = root / tree
        if not top.is_dir():
            continue
        for directory, subdirectories, names in os.walk(top):
            subdirectories[:] = sorted(d for d in subdirectories if d not in _SKIPPED_DIRS)
            for name in names:
                if name.endswith(_SKIPPED_SUFFIXES):
                    continue
                yield _regular_file(root, Path(directory) / name)
            for name in subdirectories:
                if (Path(directory) / name).is_symlink():
                    _regular_file(root, Path(directory) / name)  # raises
    for name in _FILES:
        if (root / name).exists() or (root / name).is_symlink():
            yield _regular_file(root, root / name)


def _regular_file(root: Path, path: Path) -> str:
    relative = path.relative_to(root).as_posix()
    if path.is_symlink() or not path.is_file():
        raise WorkspaceError(
            f"{path} is not a regular file (a link, device or pipe); the archive holds only "
            "regular files",
            hint=f"replace {relative} with a copy of what it points to, or remove it",
        )
    return relative


def _holds_private_key(path: Path) -> bool:
    if path.suffix == ".key":
        return True
    with path.open("rb") as stream:
        data = stream.read()
    return any(marker in data for marker in _KEY_MARKERS)


def _with_parent_directories(files: list[str]) -> list[str]:
    names: set[str] = set(files)
    for name in files:
        names.update(str(parent) for parent in PurePosixPath(name).parents if str(parent) != ".")
    return sorted(names)


def _shared_plan(paths: WorkspacePaths) -> bytes | None:
    """plan.yaml without its aggregator-local sections (webhook URLs and secrets), or
    None when it has none and is exported as it is, comments and all."""
    import yaml

    from fx.plan.documents import read_yaml
    from fx.plan.model import shared_document
    from fx.workspace.create import SCHEMA_DIR

    document = read_yaml(paths.plan)
    shared = shared_document(document)
    if shared == document:
        return None
    header = f"# yaml-language-server: $schema={SCHEMA_DIR}/plan.schema.json\n"
    body = yaml.safe_dump(shared, sort_keys=False, default_flow_style=False)
    return (header + body).encode("utf-8")


def _add(tar: tarfile.TarFile, root: Path, name: str, content: bytes | None = None) -> None:
    path = root / name
    info = tar.gettarinfo(str(path), arcname=name)
    # Who exported it and group/other write bits are nobody else's business.
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode &= 0o755
    if content is not None:
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    elif info.isfile():
        with path.open("rb") as stream:
            tar.addfile(info, stream)
    else:
        tar.addfile(info)


def default_prefix(archive: Path, directory: Path | None = None) -> Path:
    """Where an archive unpacks by default: its name less the suffixes, in ``directory``."""
    name = archive.name
    for suffix in (ARCHIVE_SUFFIX, ".tar.gz", ".tgz", ".tar"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return (directory or Path.cwd()) / name


def import_workspace(
    archive: Path, prefix: Path, *, max_mib: int = DEFAULT_MAX_IMPORT_MIB
) -> Imported:
    """Unpack an export into the new workspace ``prefix``, after checking every entry.

    WorkspaceError listing the offending entries if the archive holds an absolute
    path, a ``..`` component, a link, a device, or anything outside the export
    layout; also if its files add up to more than ``max_mib`` MiB or it holds more
    than MAX_IMPORT_ENTRIES entries (counted as the archive is read, before
    anything is written). Nothing is written then. The workspace appears all at once.
    """
    if prefix.exists() and (not prefix.is_dir() or any(prefix.iterdir())):
        raise WorkspaceError(
            f"{prefix} already exists and is not empty; refusing to unpack into it",
            hint="choose a new --prefix, or remove that directory first",
        )
    try:
        tar = tarfile.open(archive, mode="r:*")  # noqa: SIM115 (closed by the `with tar` below)
    except FileNotFoundError:
        raise WorkspaceError(f"{archive} does not exist") from None
    except (tarfile.TarError, OSError) as exc:
        raise WorkspaceError(
            f"{archive} is not an fx workspace archive ({exc})",
            hint="make one with `fx workspace export`",
        ) from None
    with tar:
        try:
            members = _bounded_members(archive, tar, max_bytes=max_mib << 20)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise WorkspaceError(f"{archive} is damaged ({exc})") from None
        files = _check_members(archive, members)
        prefix = prefix.resolve()
        prefix.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=prefix.parent, prefix=f".{prefix.name}."))
        try:
            # Our checks above are the rule; the data filter is the second lock on the door.
            tar.extractall(staging, members=members, filter="data")
            paths = WorkspacePaths(staging)
            for directory in (paths.cert, paths.save, paths.logs, paths.data):
                directory.mkdir(exist_ok=True)
            if prefix.exists():
                prefix.rmdir()  # empty, checked above
            staging.rename(prefix)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    paths = WorkspacePaths(prefix)
    _, problems = find_problems(paths, import_code=False)
    if problems:
        shutil.rmtree(prefix, ignore_errors=True)
        raise PlanError(
            f"{archive}: {format_problems(problems)}",
            hint="ask for a fresh `fx workspace export`; nothing was kept",
        )
    return Imported(paths, tuple(files), "cert/cert_chain.pem" in files)


def _bounded_members(
    archive: Path, tar: tarfile.TarFile, *, max_bytes: int
) -> list[tarfile.TarInfo]:
    """The archive's entries, read one at a time: WorkspaceError as soon as they pass
    the caps, so that a huge archive is neither unpacked nor read to its end."""
    members: list[tarfile.TarInfo] = []
    total = 0
    for member in tar:
        members.append(member)
        total += max(0, member.size)
        if total > max_bytes:
            raise WorkspaceError(
                f"{archive}: its files add up to more than {max_bytes >> 20} MiB, far more "
                "than a workspace export (code and configuration) holds",
                hint="check where the archive came from; if it is right, raise the cap "
                "with --max-mib; nothing was written",
            )
        if len(members) > MAX_IMPORT_ENTRIES:
            raise WorkspaceError(
                f"{archive}: more than {MAX_IMPORT_ENTRIES} entries, far more than a "
                "workspace export holds",
                hint="check where the archive came from; nothing was written",
            )
    return members


def _check_members(archive: Path, members: list[tarfile.TarInfo]) -> list[str]:
    """The regular files of a well-formed export, or WorkspaceError naming what is not."""
    refused: list[str] = []
    files: list[str] = []
    for member in members:
        reason = _refusal(member)
        if reason is not None:
            refused.append(f"{member.name!r} ({reason})")
        elif member.isfile():
            files.append(_clean(member.name))
    if refused:
        listed = "\n  ".join(refused[:_MAX_LISTED])
        more = (
            f"\n  ... and {len(refused) - _MAX_LISTED} more" if len(refused) > _MAX_LISTED else ""
        )
        raise WorkspaceError(
            f"{archive}: refusing to unpack {len(refused)} unsafe or unexpected "
            f"entr{'y' if len(refused) == 1 else 'ies'}:\n  {listed}{more}",
            hint="ask for an archive made by `fx workspace export`; nothing was written",
        )
    if _PLAN not in files:
        raise WorkspaceError(
            f"{archive} holds no plan/plan.yaml: it is not an fx workspace export",
            hint="make one with `fx workspace export` in the federation's workspace",
        )
    return files


def _refusal(member: tarfile.TarInfo) -> str | None:
    name = member.name
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or _has_drive(name):
        return "absolute path"
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        return "'..' in path"
    if member.issym() or member.islnk():
        return f"link to {member.linkname!r}"
    if not (member.isfile() or member.isdir()):
        return "device, pipe or other special file"
    if not parts:
        return None if member.isdir() else "empty name"  # "./", as `tar -C ws .` writes
    clean = _clean(name)
    if member.isdir():
        if clean in _DIRECTORIES or parts[0] in _TREES:
            return None
    elif (parts[0] in _TREES and len(parts) > 1) or clean in _FILES:
        return None
    return "not part of a workspace export"


def _clean(name: str) -> str:
    """``./plan//plan.yaml`` -> ``plan/plan.yaml``."""
    return PurePosixPath(*PurePosixPath(name.replace("\\", "/")).parts).as_posix()


def _has_drive(name: str) -> bool:
    return len(name) >= 2 and name[1] == ":" and name[0].isalpha()
