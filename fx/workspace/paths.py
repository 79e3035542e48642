"""WorkspacePaths: the one place that knows the file names inside a workspace."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fx.errors import WorkspaceError


@dataclass(frozen=True)
class WorkspacePaths:
    """Every path fx reads or writes inside a workspace, derived from its root."""

    root: Path

    @classmethod
    def find(cls, start: Path | None = None) -> WorkspacePaths:
        """The workspace at ``start`` (default: the current directory), or a clear error."""
        root = (start or Path.cwd()).resolve()
        paths = cls(root)
        if not paths.plan.is_file():
            raise WorkspaceError(
                f"{root} is not an fx workspace: {paths.plan} does not exist",
                hint="cd into a workspace, pass -w DIR, or create one with "
                "`fx workspace create --prefix DIR`",
            )
        return paths

    # plan/
    @property
    def plan_dir(self) -> Path:
        return self.root / "plan"

    @property
    def plan(self) -> Path:
        return self.plan_dir / "plan.yaml"

    @property
    def cols(self) -> Path:
        return self.plan_dir / "cols.yaml"

    @property
    def data_config(self) -> Path:
        return self.plan_dir / "data.yaml"

    # src/ and data/
    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def data(self) -> Path:
        return self.root / "data"

    # cert/
    @property
    def cert(self) -> Path:
        return self.root / "cert"

    @property
    def ca_dir(self) -> Path:
        return self.cert / "ca"

    @property
    def cert_chain(self) -> Path:
        """The chain of trust (signing CA + root) both sides verify against."""
        return self.cert / "cert_chain.pem"

    @property
    def crl(self) -> Path:
        return self.cert / "crl.pem"

    @property
    def server_dir(self) -> Path:
        return self.cert / "server"

    @property
    def client_dir(self) -> Path:
        return self.cert / "client"

    def aggregator_cert(self) -> Path:
        return self.server_dir / "aggregator.crt"

    def aggregator_key(self) -> Path:
        return self.server_dir / "aggregator.key"

    def collaborator_cert(self, name: str) -> Path:
        return self.client_dir / f"{name}.crt"

    def collaborator_key(self, name: str) -> Path:
        return self.client_dir / f"{name}.key"

    # save/
    @property
    def save(self) -> Path:
        return self.root / "save"

    @property
    def init_model(self) -> Path:
        return self.save / "init.safetensors"

    @property
    def last_model(self) -> Path:
        return self.save / "last.safetensors"

    @property
    def best_model(self) -> Path:
        return self.save / "best.safetensors"

    @property
    def state_db(self) -> Path:
        return self.save / "state.db"

    # logs/
    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def metrics(self) -> Path:
        return self.logs / "metrics.jsonl"

    def log_file(self, process: str) -> Path:
        return self.logs / f"{process}.log"
