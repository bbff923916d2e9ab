"""A real tritonserver on this machine, from the nvidia-pytriton wheel.

`python deploy/triton/local_triton.py serve` (or `make triton`):
  1. creates `.venv-triton` (pytriton needs numpy<2, so it gets its own venv)
     with nvidia-pytriton and onnxruntime;
  2. lays out `.triton/backends/python/` from the files the wheel bundles
     (libtriton_python.so, triton_python_backend_utils.py and the stub for
     this Python version);
  3. generates `.triton/model_repository/`, the CPU test variant of
     `deploy/triton/model_repository/`: each production ONNX model served by
     the Python backend (python_onnx/model.py), with the same tensors, batch
     size and dynamic batching, derived from the production config.pbtxt;
  4. starts tritonserver on 127.0.0.1 and stops it cleanly on SIGINT/SIGTERM.

The e2e tests and bench/triton.py use `TritonProcess` from here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_REPOSITORY = ROOT / "deploy" / "triton" / "model_repository"
PYTHON_MODEL = ROOT / "deploy" / "triton" / "python_onnx" / "model.py"
VENV = ROOT / ".venv-triton"
WORK = ROOT / ".triton"
PACKAGES = ("nvidia-pytriton==0.7.0", "onnxruntime", "numpy<2")


def venv_python() -> Path:
    """The Triton venv's interpreter, created (with its packages) on first use."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PACKAGES],
            check=True,
        )
        stamp.touch()
    return python


def pytriton_home(python: Path) -> Path:
    """The folder inside the pytriton wheel that holds bin/, backends/ and stubs."""
    out = subprocess.run(
        [
            str(python),
            "-c",
            "import pytriton, pathlib; print(pathlib.Path(pytriton.__file__).parent)",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip()) / "tritonserver"


def layout_backend(home: Path, python: Path) -> Path:
    """`.triton/backends/python/` with the bundled backend and this Python's stub."""
    version = subprocess.run(
        [str(python), "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    target = WORK / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for source in (
        home / "backends" / "python" / "libtriton_python.so",
        home / "backends" / "python" / "triton_python_backend_utils.py",
        home / "python_backend_stubs" / version / "triton_python_backend_stub",
    ):
        destination = target / source.name
        if destination.exists() and destination.stat().st_size == source.stat().st_size:
            continue  # already laid out (and maybe running: never rewrite in place)
        staging = destination.with_suffix(".tmp")
        shutil.copy2(source, staging)
        os.replace(staging, destination)
    return target.parent


def cpu_variant(config_text: str) -> str:
    """The Python-backend config for a production onnxruntime config.

    Same name, tensors, max_batch_size and dynamic batching; platform becomes
    `backend: "python"` and instances run on the CPU.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse(config_text, model_config_pb2.ModelConfig())
    if config.platform != "onnxruntime_onnx":
        raise ValueError(
            f"{config.name}: expected platform onnxruntime_onnx, got {config.platform!r}"
        )
    config.ClearField("platform")
    config.backend = "python"
    del config.instance_group[:]
    config.instance_group.add(count=1, kind=model_config_pb2.ModelInstanceGroup.KIND_CPU)
    config.parameters["intra_op_threads"].string_value = "1"
    return text_format.MessageToString(config)


def generate_cpu_repository(
    production: Path = PRODUCTION_REPOSITORY,
    out: Path | None = None,
    only: tuple[str, ...] | None = None,
) -> Path:
    """Write the CPU test repository for the built production ONNX models (or `only` these)."""
    out = out or WORK / "model_repository"
    if out.exists():
        shutil.rmtree(out)
    for config_path in sorted(production.glob("*/config.pbtxt")):
        model_dir = config_path.parent
        if only is not None and model_dir.name not in only:
            continue
        onnx_files = sorted(model_dir.glob("*/model.onnx"))
        if not onnx_files:
            continue  # not built (e.g. efficientnet_lite0 before `make models`)
        target = out / model_dir.name
        target.mkdir(parents=True)
        (target / "config.pbtxt").write_text(cpu_variant(config_path.read_text()))
        for labels in model_dir.glob("*.txt"):
            shutil.copy2(labels, target / labels.name)
        for onnx_file in onnx_files:
            version = target / onnx_file.parent.name
            version.mkdir()
            (version / "model.onnx").symlink_to(onnx_file)
            shutil.copy2(PYTHON_MODEL, version / "model.py")
    return out


def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TritonProcess:
    """A tritonserver child process bound to 127.0.0.1."""

    repository: Path
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    log_path: Path = WORK / "tritonserver.log"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def grpc_url(self) -> str:
        """host:port of the gRPC endpoint."""
        return f"127.0.0.1:{self.grpc_port}"

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The tritonserver command line and environment."""
        python = venv_python()
        home = pytriton_home(python)
        backends = layout_backend(home, python)
        # The stub must load this Python's libpython and the CUDA runtime stub
        # libraries the wheel bundles beside the package.
        libdirs = (
            sysconfig.get_config_var("LIBDIR") or "",
            str(home.parents[1] / "nvidia_pytriton.libs"),
            os.environ.get("LD_LIBRARY_PATH", ""),
        )
        env = {
            **os.environ,
            "LD_LIBRARY_PATH": ":".join(p for p in libdirs if p),
            "PATH": f"{VENV / 'bin'}:{os.environ.get('PATH', '')}",
        }
        args = [
            str(home / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--cache-directory={home / 'caches'}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--allow-cpu-metrics=false",
            "--exit-on-error=false",
            "--log-verbose=0",
        ]
        return args, env

    def start(self, timeout_s: float = 60.0) -> TritonProcess:
        """Start tritonserver and wait until it reports ready."""
        args, env = self.command()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        """Poll /v2/health/ready until it answers 200."""
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.http_port}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"tritonserver exited with {self.proc.returncode}; see {self.log_path}"
                )
            try:
                if urllib.request.urlopen(url, timeout=1).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"tritonserver not ready after {timeout_s}s; see {self.log_path}")

    def metrics(self) -> str:
        """Triton's own Prometheus metrics text."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        return urllib.request.urlopen(url, timeout=5).read().decode()

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (Triton unloads models and exits), SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: an abrupt outage, for failure tests."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def main() -> None:
    """`serve`: run the CPU test repository until interrupted."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "command",
        choices=["serve", "prepare"],
        help="serve: run tritonserver; prepare: only create the venv, backend and repository",
    )
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    args = parser.parse_args()
    repository = generate_cpu_repository()
    if args.command == "prepare":
        python = venv_python()
        layout_backend(pytriton_home(python), python)
        print(f"Triton venv: {VENV}; CPU test repository: {repository}")
        return
    triton = TritonProcess(repository, args.grpc_port, args.http_port, args.metrics_port)
    print(f"starting tritonserver (log: {triton.log_path}) ...", flush=True)
    triton.start()
    print(
        f"tritonserver ready: gRPC {triton.grpc_url}, HTTP 127.0.0.1:{triton.http_port}, "
        f"metrics http://127.0.0.1:{triton.metrics_port}/metrics; Ctrl-C stops it",
        flush=True,
    )
    stop = {"now": False}

    def request_stop(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    while not stop["now"] and triton.proc is not None and triton.proc.poll() is None:
        time.sleep(0.2)
    triton.stop()
    print("tritonserver stopped", flush=True)


if __name__ == "__main__":
    main()
