"""`fx pki` end to end: the multi-party flow across separate directories, and certify."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner, Result

from fx.cli.pki import app
from fx.errors import PkiError
from fx.pki.crl import RevocationList
from fx.pki.identity import certificate_identities, certificate_serial
from fx.pki.keys import KeyType, signature_hash
from fx.pki.names import subject
from fx.pki.roles import Role
from fx.pki.workspace import require_aggregator_credentials, require_collaborator_credentials
from fx.workspace.paths import WorkspacePaths
from tests.integration.test_pki_tls import (
    client_context,
    handshake,
    server_context,
    write_credentials,
)

pytestmark = pytest.mark.integration

runner = CliRunner()
SHORT_FINGERPRINT = re.compile(r"[0-9A-F]{4}(?:-[0-9A-F]{4}){3}")


def make_workspace(root: Path) -> WorkspacePaths:
    (root / "plan").mkdir(parents=True)
    (root / "plan" / "plan.yaml").write_text("# stub: these commands do not read the plan\n")
    return WorkspacePaths(root)


def fx_pki(*args: str | Path, input: str | None = None) -> Result:
    return runner.invoke(app, [str(arg) for arg in args], input=input)


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def refused(result: Result, match: str) -> PkiError:
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, PkiError), result.exception
    assert re.search(match, result.exception.message), result.exception.message
    return result.exception


@pytest.fixture
def sites(tmp_path: Path) -> tuple[WorkspacePaths, WorkspacePaths, Path]:
    """The CA's workspace (with the aggregator), a site's workspace, and the 'wire' between."""
    ca = make_workspace(tmp_path / "ca")
    site = make_workspace(tmp_path / "site")
    wire = tmp_path / "wire"
    wire.mkdir()
    ok(fx_pki("init", "-w", ca.root))
    from fx.pki.workspace import certify_workspace

    certify_workspace(ca, aggregator_hosts=["localhost"], collaborators=[])
    return ca, site, wire


def request(site: WorkspacePaths, wire: Path, name: str) -> tuple[Path, str]:
    """`fx pki csr` on the site; the CSR travels over the wire, the fingerprint by voice."""
    output = ok(fx_pki("csr", "--name", name, "-w", site.root))
    match = SHORT_FINGERPRINT.search(output.split("CSR fingerprint:")[1])
    assert match is not None, output
    csr = wire / f"{name}.csr"
    shutil.copy(site.client_dir / f"{name}.csr", csr)
    return csr, match.group()


def sign(ca: WorkspacePaths, csr: Path, fingerprint: str) -> tuple[Path, str]:
    output = ok(fx_pki("sign", csr, "--fingerprint", fingerprint, "-w", ca.root))
    root_fingerprint = re.search(r"--root-fingerprint (\S+)", output)
    assert root_fingerprint is not None, output
    bundle = csr.with_name(f"{csr.stem}.bundle.pem")
    assert bundle.is_file()
    return bundle, root_fingerprint.group(1)


def test_csr_sign_import_then_handshake(
    sites: tuple[WorkspacePaths, WorkspacePaths, Path], tmp_path: Path
) -> None:
    ca, site, wire = sites
    csr, fingerprint = request(site, wire, "site-a")
    assert site.collaborator_key("site-a").stat().st_mode & 0o077 == 0
    bundle, root_fingerprint = sign(ca, csr, fingerprint)
    assert "site-a" in ok(fx_pki("show", "site-a", "-w", ca.root))  # the CA recorded it

    output = ok(fx_pki("import", bundle, "--root-fingerprint", root_fingerprint, "-w", site.root))
    assert "Installed collaborator site-a" in output

    server = write_credentials(tmp_path / "agg", *require_aggregator_credentials(ca))
    client = write_credentials(tmp_path / "col", *require_collaborator_credentials(site, "site-a"))
    assert handshake(server_context(server), client_context(client)).accepted

    # Revocation on the CA side reaches a running RevocationList.
    revocation_list = RevocationList(ca.crl)
    serial = certificate_serial(site.collaborator_cert("site-a").read_bytes())
    assert not revocation_list.is_revoked(serial)
    ok(fx_pki("revoke", "site-a", "--reason", "key-compromise", "-w", ca.root))
    assert revocation_list.is_revoked(serial)
    assert "revoked" in ok(fx_pki("list", "-w", ca.root))


def test_sign_asks_for_confirmation(sites: tuple[WorkspacePaths, WorkspacePaths, Path]) -> None:
    ca, site, wire = sites
    csr, fingerprint = request(site, wire, "site-a")
    refused(fx_pki("sign", csr, "-w", ca.root, input="n\n"), "not signed")
    assert not csr.with_name("site-a.bundle.pem").exists()
    output = ok(fx_pki("sign", csr, "-w", ca.root, input="y\n"))
    assert fingerprint in output  # shown before the question
    assert csr.with_name("site-a.bundle.pem").is_file()


def test_sign_refuses_a_wrong_fingerprint(
    sites: tuple[WorkspacePaths, WorkspacePaths, Path],
) -> None:
    ca, site, wire = sites
    csr, _ = request(site, wire, "site-a")
    refused(
        fx_pki("sign", csr, "--fingerprint", "0000-0000-0000-0000", "-w", ca.root), "not the CSR"
    )


def test_tampered_csr_is_refused(sites: tuple[WorkspacePaths, WorkspacePaths, Path]) -> None:
    ca, site, wire = sites
    csr, _ = request(site, wire, "site-a")
    der = x509.load_pem_x509_csr(csr.read_bytes()).public_bytes(serialization.Encoding.DER)
    tampered = x509.load_der_x509_csr(der.replace(b"site-a", b"site-b"))
    csr.write_bytes(tampered.public_bytes(serialization.Encoding.PEM))
    refused(fx_pki("sign", csr, "--yes", "-w", ca.root), "signature does not verify")


def test_csr_asking_for_a_ca_is_refused(sites: tuple[WorkspacePaths, WorkspacePaths, Path]) -> None:
    ca, _, wire = sites
    key = KeyType.ECDSA_P384.generate()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject("site-a", organization=None))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([Role.COLLABORATOR.extended_key_usage]), critical=False
        )
        .sign(key, signature_hash(key))
    )
    path = wire / "ca.csr"
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    refused(fx_pki("sign", path, "--yes", "-w", ca.root), "asks for a CA certificate")


def test_bundle_with_a_foreign_root_is_refused(
    sites: tuple[WorkspacePaths, WorkspacePaths, Path], tmp_path: Path
) -> None:
    ca, site, wire = sites
    rogue = make_workspace(tmp_path / "rogue")
    ok(fx_pki("init", "-w", rogue.root))
    csr, fingerprint = request(site, wire, "site-a")
    _, real_root = sign(ca, csr, fingerprint)
    rogue_bundle, _ = sign(rogue, csr, fingerprint)  # overwrites the wire copy: the attack
    error = refused(
        fx_pki("import", rogue_bundle, "--root-fingerprint", real_root, "-w", site.root),
        "not issued by the federation's CA",
    )
    assert error.hint is not None
    assert not site.collaborator_cert("site-a").exists()


def test_import_without_fingerprint_warns(
    sites: tuple[WorkspacePaths, WorkspacePaths, Path],
) -> None:
    ca, site, wire = sites
    csr, fingerprint = request(site, wire, "site-a")
    bundle, _ = sign(ca, csr, fingerprint)
    result = fx_pki("import", bundle, "-w", site.root)
    ok(result)
    assert "was not checked" in result.stderr


def test_aggregator_csr_flow(
    sites: tuple[WorkspacePaths, WorkspacePaths, Path], tmp_path: Path
) -> None:
    ca, _, wire = sites
    agg_site = make_workspace(tmp_path / "agg-site")
    output = ok(
        fx_pki("csr", "--role", "aggregator", "--san", "agg.example.org", "-w", agg_site.root)
    )
    fingerprint = SHORT_FINGERPRINT.search(output.split("CSR fingerprint:")[1])
    assert fingerprint is not None
    csr = wire / "aggregator.csr"
    shutil.copy(agg_site.server_dir / "aggregator.csr", csr)
    bundle, root = sign(ca, csr, fingerprint.group())
    ok(fx_pki("import", bundle, "--root-fingerprint", root, "-w", agg_site.root))
    _, cert, _ = require_aggregator_credentials(agg_site)
    assert certificate_identities(cert) == ["agg.example.org"]


def test_show_and_list(sites: tuple[WorkspacePaths, WorkspacePaths, Path]) -> None:
    ca, _, _ = sites
    shown = ok(fx_pki("show", "aggregator", "-w", ca.root))
    for field in ("subject", "SANs", "issuer", "serial", "valid until", "days left", "SHA-256"):
        assert field in shown
    assert "localhost, 127.0.0.1, ::1" in shown
    assert "fx Root CA" in ok(fx_pki("show", "-w", ca.root))
    assert "aggregator" in ok(fx_pki("show", ca.aggregator_cert()))
    listing = ok(fx_pki("list", "-w", ca.root))
    for name in ("fx Root CA", "fx Signing CA", "aggregator", "valid"):
        assert name in listing


def test_renew_via_cli(sites: tuple[WorkspacePaths, WorkspacePaths, Path]) -> None:
    ca, _, _ = sites
    before = certificate_serial(ca.aggregator_cert().read_bytes())
    ok(fx_pki("renew", "aggregator", "--days", "30", "-w", ca.root))
    assert certificate_serial(ca.aggregator_cert().read_bytes()) != before


def test_certify_reads_the_plan_and_cols(tmp_path: Path) -> None:
    from fx.cli.main import main

    root = tmp_path / "fed"
    assert main(["workspace", "create", "--prefix", str(root), "-t", "numpy_logreg_digits"]) == 0
    paths = WorkspacePaths(root)
    ok(fx_pki("certify", "-w", root))
    from fx.plan.loader import load_collaborator_names, load_plan

    names = load_collaborator_names(paths)
    agg_addr = load_plan(paths).network.agg_addr
    _, cert, _ = require_aggregator_credentials(paths)
    assert agg_addr in certificate_identities(cert)
    serials = {
        name: certificate_serial(paths.collaborator_cert(name).read_bytes()) for name in names
    }

    paths.cols.write_text("collaborators:\n" + "".join(f"- {n}\n" for n in [*names, "site-new"]))
    output = ok(fx_pki("certify", "-w", root))
    assert re.search(r"created\s+collaborator site-new", output)
    assert {
        n: certificate_serial(paths.collaborator_cert(n).read_bytes()) for n in names
    } == serials


def test_errors_become_one_line_and_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fx.cli.main import main

    paths = make_workspace(tmp_path / "empty")
    assert main(["pki", "show", "-w", str(paths.root)]) == 4
    err = capsys.readouterr().err
    assert "error" in err and "fx pki certify" in err
    assert "Traceback" not in err
