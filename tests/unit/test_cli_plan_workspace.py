"""The CLI: `fx plan ...`, `fx workspace templates|export|import`, `fx collaborator create`.

Each test runs the real `fx` entry point in-process and asserts its output and exit code.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import yaml

from fx.cli.main import main
from fx.errors import ExitCode
from fx.pki.workspace import certify_workspace
from fx.plan.loader import load_plan
from fx.tensors.safetensors_io import load_metadata, load_tensors
from fx.workspace.create import NetworkChoice, create_workspace
from fx.workspace.paths import WorkspacePaths
from fx.workspace.templates import available_templates, get_template


@pytest.fixture
def paths(tmp_path: Path) -> WorkspacePaths:
    return create_workspace(
        get_template("numpy_logreg_digits"),
        tmp_path / "fed",
        collaborators=["site-1", "site-2"],
        network=NetworkChoice("localhost", 50051),
        rounds=2,
    )


def fx(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def _edit_plan(paths: WorkspacePaths, **aggregator: object) -> None:
    """Change aggregator keys (None: remove one), as a person would: the $schema line and
    a comment of theirs at the top stay, and one on the aggregator section."""
    text = paths.plan.read_text()
    header = text.splitlines(keepends=True)[0]
    document = yaml.safe_load(text)
    for key, value in aggregator.items():
        if value is None:
            del document["aggregator"][key]
        else:
            document["aggregator"][key] = value
    body = yaml.safe_dump(document, sort_keys=False)
    body = body.replace("aggregator:\n", "aggregator:  # agreed with site-2 on 2026-11-02\n")
    paths.plan.write_text(header + "# Owner: the data team; ask before changing.\n" + body)


def test_templates_lists_each_with_its_description(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = fx(capsys, "workspace", "templates")
    assert code == ExitCode.OK
    rows: dict[str, str] = {}
    current = ""
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) != 2:
            continue
        if cells[0]:
            current = cells[0]
            rows[current] = cells[1]
        else:  # the description wrapped onto the next line of the table
            rows[current] += " " + cells[1]
    expected = {template.name: template.description for template in available_templates()}
    assert rows == expected
    assert {"torch_cnn_digits", "numpy_logreg_digits"} <= set(rows)


def test_validate_reports_the_federation(
    paths: WorkspacePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = fx(capsys, "plan", "validate", "-w", str(paths.root))
    assert code == ExitCode.OK, err
    assert "plan/plan.yaml, plan/cols.yaml and plan/data.yaml are valid" in out
    assert load_plan(paths).federation_id in out
    assert "site-1 (data/site-1), site-2 (data/site-2)" in out


def test_validate_fails_with_exit_3_and_the_problem(
    paths: WorkspacePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    paths.data_config.write_text("data:\n  site-1: data/site-1\n")
    code, out, err = fx(capsys, "plan", "validate", "-w", str(paths.root))
    assert code == ExitCode.PLAN == 3
    assert "error: the plan has 1 problem:" in err
    assert "data.site-2: missing: collaborator 'site-2'" in err
    assert "hint: fix these and run `fx plan validate` again" in err
    assert out == ""


def test_initialize_writes_the_model_the_record_and_every_default(
    paths: WorkspacePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit_plan(paths, linger_s=None, aggregation=None)
    code, out, err = fx(capsys, "plan", "initialize", "-w", str(paths.root))
    assert code == ExitCode.OK, err
    assert (
        "wrote 2 default(s) into plan/plan.yaml: aggregator.aggregation, aggregator.linger_s" in out
    )

    plan = load_plan(paths)
    assert plan.document["aggregator"]["aggregation"] == "fedavg"
    assert plan.document["aggregator"]["linger_s"] == 10
    text = paths.plan.read_text()
    assert text.startswith("# yaml-language-server: $schema=")
    # Defaults are filled into the file as it was: its comments stay.
    assert "# Owner: the data team; ask before changing.\n" in text
    assert "aggregator:  # agreed with site-2 on 2026-11-02\n" in text
    assert f"Initialized federation {plan.federation_id}" in out

    weights = load_tensors(paths.init_model)
    assert {name: value.shape for name, value in weights.items()} == {
        "weight": (64, 10),
        "bias": (10,),
    }
    metadata = load_metadata(paths.init_model)
    assert metadata["fx.federation_id"] == plan.federation_id
    assert metadata["fx.template"] == "numpy_logreg_digits"

    record = json.loads((paths.plan_dir / "federation.json").read_text())
    assert record["federation_id"] == plan.federation_id
    assert record["template"] == "numpy_logreg_digits"
    assert record["model_runner"] == "src.runner:SoftmaxRegression"
    assert record["rounds_to_train"] == 2
    digest = hashlib.sha256(paths.init_model.read_bytes()).hexdigest()
    assert record["init_model"] == {
        "path": "save/init.safetensors",
        "sha256": digest,
        "tensors": 2,
        "parameters": 650,
        "bytes": 2600,
    }
    assert digest in out

    # A second run finds nothing to fill in and keeps the federation id.
    code, out, _ = fx(capsys, "plan", "initialize", "-w", str(paths.root))
    assert code == ExitCode.OK and "default(s)" not in out
    assert load_plan(paths).federation_id == plan.federation_id


def test_initialize_refuses_an_invalid_plan_and_writes_nothing(
    paths: WorkspacePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit_plan(paths, aggregation="fedprox")
    code, _, err = fx(capsys, "plan", "initialize", "-w", str(paths.root))
    assert code == ExitCode.PLAN
    assert "aggregator.aggregation: unknown aggregation 'fedprox'" in err
    assert not paths.init_model.exists()
    assert not (paths.plan_dir / "federation.json").exists()


def test_validate_warns_when_the_record_no_longer_matches_the_plan(
    paths: WorkspacePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    assert fx(capsys, "plan", "initialize", "-w", str(paths.root))[0] == ExitCode.OK
    _edit_plan(paths, rounds_to_train=7)
    code, _, err = fx(capsys, "plan", "validate", "-w", str(paths.root))
    assert code == ExitCode.OK
    assert "warning" in err and "run `fx plan initialize` again" in err


def test_show_prints_the_effective_plan_and_its_hash(
    paths: WorkspacePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit_plan(paths, linger_s=None)
    federation_id = load_plan(paths).federation_id

    code, out, _ = fx(capsys, "plan", "show", "-w", str(paths.root))
    assert code == ExitCode.OK
    lines = out.splitlines()
    assert lines[0] == f"# federation id: {federation_id}"
    assert "aggregator.linger_s" in lines[1]
    shown = yaml.safe_load(out)
    assert shown["aggregator"]["linger_s"] == 10  # filled in from the schema's default
    assert shown["aggregator"]["rounds_to_train"] == 2

    code, out, _ = fx(capsys, "plan", "show", "--json", "-w", str(paths.root))
    payload = json.loads(out)
    assert payload["federation_id"] == federation_id
    assert payload["defaulted"] == ["aggregator.linger_s"]
    assert payload["plan"] == shown


def test_collaborator_create_adds_a_name_and_its_data(
    paths: WorkspacePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    before = load_plan(paths).federation_id
    paths.cols.write_text(
        paths.cols.read_text().replace("- site-2\n", "- site-2  # joined in October\n")
        + "# site-4 joins in January\n"
    )
    code, out, err = fx(capsys, "collaborator", "create", "--name", "site-3", "-w", str(paths.root))
    assert code == ExitCode.OK, err
    assert "Added collaborator site-3 with data data/site-3" in out
    assert "does not exist here yet" in out
    code, _, err = fx(
        capsys,
        "collaborator",
        "create",
        "--name",
        "hospital-b",
        "--data",
        "/srv/hospital-b",
        "-w",
        str(paths.root),
    )
    assert code == ExitCode.OK, err

    assert yaml.safe_load(paths.cols.read_text())["collaborators"] == [
        "site-1",
        "site-2",
        "site-3",
        "hospital-b",
    ]
    assert yaml.safe_load(paths.data_config.read_text())["data"] == {
        "site-1": "data/site-1",
        "site-2": "data/site-2",
        "site-3": "data/site-3",
        "hospital-b": "/srv/hospital-b",
    }
    cols = paths.cols.read_text()
    assert cols.startswith("# yaml-language-server: $schema=schema/cols")
    assert "- site-2  # joined in October\n" in cols and "# site-4 joins in January" in cols
    assert load_plan(paths).federation_id == before
    assert fx(capsys, "plan", "validate", "-w", str(paths.root))[0] == ExitCode.OK


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("site-1", "'site-1' is already a collaborator"),
        ("Site_3", "'Site_3' is not a valid collaborator name"),
        ("-site", "'-site' is not a valid collaborator name"),
        ("a" * 64, f"'{'a' * 64}' is not a valid collaborator name"),
        ("aggregator", "'aggregator' is reserved for the aggregator's certificate"),
    ],
    ids=["taken", "uppercase-underscore", "leading-dash", "too-long", "reserved"],
)
def test_collaborator_create_refuses_a_bad_or_taken_name(
    paths: WorkspacePaths, capsys: pytest.CaptureFixture[str], name: str, message: str
) -> None:
    cols, data = paths.cols.read_text(), paths.data_config.read_text()
    code, _, err = fx(capsys, "collaborator", "create", "--name", name, "-w", str(paths.root))
    assert code == ExitCode.PLAN
    assert f"{paths.cols}: collaborators: {message}" in err
    assert paths.cols.read_text() == cols and paths.data_config.read_text() == data


def test_export_then_import_says_what_to_do_next(
    paths: WorkspacePaths,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fx.pki.fingerprints import certificate_der, short_fingerprint
    from fx.pki.pem import read_certificates

    certify_workspace(paths, aggregator_hosts=["localhost"], collaborators=[])
    monkeypatch.chdir(tmp_path)
    code, out, err = fx(capsys, "workspace", "export", "-w", str(paths.root))
    assert code == ExitCode.OK, err
    assert (tmp_path / "fed.fx.tar.gz").is_file()
    assert "fx workspace import fed.fx.tar.gz" in out

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, out, err = fx(capsys, "workspace", "import", str(tmp_path / "fed.fx.tar.gz"))
    assert code == ExitCode.OK, err
    site = tmp_path / "elsewhere" / "fed"
    assert (site / "plan" / "plan.yaml").is_file()
    root = short_fingerprint(certificate_der(read_certificates(paths.cert_chain)[-1]))
    assert f"root CA {root}" in out
    assert "fx pki csr --name NAME" in out
    assert f"fx pki import NAME.bundle.pem --root-fingerprint {root}" in out
    assert "fx collaborator start --name NAME" in out

    code, _, err = fx(capsys, "workspace", "import", str(tmp_path / "fed.fx.tar.gz"))
    assert code == ExitCode.WORKSPACE and "already exists and is not empty" in err


def test_export_without_a_pki_warns(
    paths: WorkspacePaths, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out.tgz"
    code, _, err = fx(capsys, "workspace", "export", "-o", str(output), "-w", str(paths.root))
    assert code == ExitCode.OK
    assert "no cert/cert_chain.pem yet" in err
    with tarfile.open(output) as tar:
        assert "cert/cert_chain.pem" not in tar.getnames()


def test_import_of_a_traversal_archive_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("plan/plan.yaml", "../../outside.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    code, out, err = fx(
        capsys, "workspace", "import", str(archive), "--prefix", str(tmp_path / "site")
    )
    assert code == ExitCode.WORKSPACE == 2
    assert "'../../outside.txt' ('..' in path)" in err
    assert not (tmp_path / "site").exists() and out == ""
