"""Launch the real ``tritonserver`` bundled in the nvidia-pytriton wheel.

The bundled server needs a backend directory holding the Python backend and
the stub for this interpreter, the venv's ``bin`` first on PATH (the stub then
imports the venv's packages) and LD_LIBRARY_PATH with libpython's folder and
the wheel's own libs (without them the stub loads another libpython, or a
model hangs while loading).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import urllib.request
from pathlib import Path

from ops.local.process import LaunchError, ManagedProcess


def _pytriton_dir() -> Path:
    try:
        import pytriton
    except ImportError:
        raise LaunchError("nvidia-pytriton is not installed; install the serve extra (pip install -e '.[serve]')") \
            from None
    return Path(pytriton.__file__).parent


def prepare_backends(dest: Path) -> Path:
    """Copy the Python backend plus this interpreter's stub into ``dest`` (idempotent)."""
    base = _pytriton_dir() / "tritonserver"
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = base / "python_backend_stubs" / py / "triton_python_backend_stub"
    if not stub.exists():
        raise LaunchError(f"the bundled Triton has no Python backend stub for Python {py}")
    if not (dest / "python" / "triton_python_backend_stub").exists():
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(base / "backends", dest)
        shutil.copy2(stub, dest / "python" / "triton_python_backend_stub")
    return dest


def triton_env() -> dict[str, str]:
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    libs = [sysconfig.get_config_var("LIBDIR") or "", str(_pytriton_dir().parent / "nvidia_pytriton.libs")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([p for p in libs if p] + [env.get("LD_LIBRARY_PATH", "")])
    return env


class LocalTriton(ManagedProcess):
    def __init__(self, repository: Path, work_dir: Path, http_port: int, grpc_port: int, metrics_port: int,
                 detach: bool = False) -> None:
        binary = _pytriton_dir() / "tritonserver" / "bin" / "tritonserver"
        backends = prepare_backends(work_dir / "triton-backends")
        argv = [str(binary), "--model-repository", str(repository.resolve()),
                "--backend-directory", str(backends), "--http-port", str(http_port),
                "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port),
                "--exit-on-error=true", "--log-verbose=0"]
        super().__init__("tritonserver", argv, work_dir / "logs" / "triton.log",
                         ports=[("HTTP", http_port), ("gRPC", grpc_port), ("metrics", metrics_port)],
                         env=triton_env(), detach=detach)
        self.http_port = http_port
        self.grpc_url = f"127.0.0.1:{grpc_port}"
        self.models = sorted(p.name for p in repository.iterdir() if (p / "config.pbtxt").exists())

    def _ready(self) -> bool:
        base = f"http://127.0.0.1:{self.http_port}/v2"
        for path in ["/health/ready"] + [f"/models/{m}/ready" for m in self.models]:
            with urllib.request.urlopen(base + path, timeout=1) as r:
                if r.status != 200:
                    return False
        return True

    def start_and_wait(self, timeout_s: float = 120.0) -> LocalTriton:
        self.start()
        self.wait_ready(self._ready, timeout_s)
        return self
