"""Run the image's command as a local process under the pod's file-system constraints.

There is no container engine here or in CI, so the constraints are rebuilt
around a plain process: HOME is the image user's unwritable home, the
installation (this checkout and the Python environment) cannot be written,
and the one writable place is a temporary folder standing in for the data
volume (plus a scratch folder for TMPDIR, as the pod's /tmp emptyDir).

We run as root here and in CI, and root ignores file modes, so two ways are
tried, each proved by a probe that must fail to write where the pod cannot:

- a private mount namespace (``unshare --mount``; ``--user --map-root-user``
  when not root) in which every mount holding the installation or HOME is
  remounted read-only and only the temporary folder is bind-mounted writable;
- else, as root, running as the image's numeric user (10001), which cannot
  write anything root owns; this needs the checkout and interpreter to be
  readable by other users.

Neither copies anything. `Dockerfile` reads what the image runs: ENTRYPOINT +
CMD, ENV, the user's home, and the COPY lines that map image paths to the
checkout.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Dockerfile:
    """What the runtime stage (after the last FROM) of an image declares."""

    command: tuple[str, ...]
    """ENTRYPOINT followed by CMD."""
    healthcheck: tuple[str, ...]
    env: Mapping[str, str]
    home: str
    user: tuple[int, int]
    volumes: tuple[str, ...]
    copies: Mapping[str, Path]
    """Image path -> the checkout's source of it."""

    @classmethod
    def parse(cls, path: Path) -> Dockerfile:
        """Read the runtime stage of a Dockerfile (JSON-form ENTRYPOINT/CMD only)."""
        text = path.read_text(encoding="utf-8").replace("\\\n", " ")
        stage = re.split(r"^FROM .*$", text, flags=re.MULTILINE)[-1]

        def directive(name: str) -> list[str]:
            return re.findall(rf"^{name} (.+)$", stage, re.MULTILINE)

        health = re.search(r"^HEALTHCHECK .*? CMD (\[.*\])$", stage, re.MULTILINE)
        (cmd,) = directive("CMD")  # HEALTHCHECK's CMD is not at a line start
        env = dict(pair.split("=", 1) for line in directive("ENV") for pair in shlex.split(line))
        home = re.search(r"--home-dir (\S+)", stage)
        uid, gid = directive("USER")[-1].split(":")
        copies = {}
        for line in directive("COPY"):
            if not line.startswith("--"):
                source, target = line.split()
                copies[target] = ROOT / source
        assert health and home, "the runtime stage declares a HEALTHCHECK and a user home"
        return cls(
            command=(*json.loads(directive("ENTRYPOINT")[-1]), *json.loads(cmd)),
            healthcheck=tuple(json.loads(health.group(1))),
            env=env,
            home=home.group(1),
            user=(int(uid), int(gid)),
            volumes=tuple(v for line in directive("VOLUME") for v in json.loads(line)),
            copies=copies,
        )

    def local_argv(self, argv: Sequence[str]) -> list[str]:
        """The image's command with the executable and COPY targets mapped to this checkout."""
        mapped = _executable(argv[0])
        for arg in argv[1:]:
            for target, source in self.copies.items():
                if arg == target or arg.startswith(target + "/"):
                    arg = str(source) + arg[len(target) :]
            mapped.append(arg)
        return mapped


def _executable(name: str) -> list[str]:
    """The installed console script beside this interpreter (what the image's PATH finds)."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return [str(beside)]
    found = shutil.which(name)
    return [found] if found else [sys.executable, "-m", "assay.client"]


@dataclass(frozen=True)
class Sandbox:
    """How to start a process so that it can write only under `writable`."""

    how: str
    prefix: tuple[str, ...]
    user: tuple[int, int] | None

    def popen(self, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[str]:
        """Start argv (stdout and stderr together, as text) inside the constraints."""
        uid, gid = self.user if self.user is not None else (None, None)
        return subprocess.Popen(
            [*self.prefix, *argv],
            env=dict(env),
            cwd=ROOT,  # read-only, like the image's WORKDIR in the pod
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            user=uid,
            group=gid,
            extra_groups=None if self.user is None else [],
        )


_NAMESPACE_SCRIPT = (
    'set -e; writable=$1; shift; mount --bind "$writable" "$writable"; '
    'while [ "$1" != -- ]; do mount -o remount,bind,ro "$1"; shift; done; shift; exec "$@"'
)


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path):
        path = path.parent
    return path


def _read_only_mounts(home: str) -> list[str]:
    """Mounts holding the checkout, the Python environment, HOME, and / itself."""
    paths = [Path("/"), ROOT, Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable)]
    existing = Path(home)
    while not existing.exists():
        existing = existing.parent
    return sorted({str(_mount_point(p)) for p in [*paths, existing]})


def _probe(home: str, writable: Path, runs: Sequence[str]) -> list[str]:
    """Exits 0 only when HOME and the installation are unwritable, `writable` is
    writable and `runs` (the image's executable) can run."""
    checks = (
        f'mkdir -p "{home}/probe" 2>/dev/null && exit 3; '
        f'touch "{ROOT}/.container-probe" 2>/dev/null && exit 4; '
        f'touch "{Path(sys.prefix)}/.container-probe" 2>/dev/null && exit 5; '
        f'touch "{writable}/.container-probe" && rm "{writable}/.container-probe"; '
        'exec "$@" >/dev/null'
    )
    return ["sh", "-c", checks, "sh", *runs]


def _probe_env() -> dict[str, str]:
    env = {"PATH": os.defpath, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def make_sandbox(writable: Path, image: Dockerfile) -> tuple[Sandbox | None, list[str]]:
    """The first way that provably confines a process here, and why others failed."""
    candidates, failures = [], []
    if shutil.which("unshare") and shutil.which("mount"):
        user_ns = () if os.geteuid() == 0 else ("--user", "--map-root-user")
        prefix = ("unshare", "--mount", "--propagation", "private", *user_ns,
                  "sh", "-c", _NAMESPACE_SCRIPT, "sh", str(writable),
                  *_read_only_mounts(image.home), "--")  # fmt: skip
        candidates.append(Sandbox("mount namespace", prefix, None))
    else:
        failures.append("mount namespace: no `unshare` or `mount` on PATH (util-linux, mount)")
    if os.geteuid() == 0:
        candidates.append(Sandbox(f"uid {image.user[0]}", (), image.user))
    else:
        failures.append(f"uid {image.user[0]}: switching to it needs root")
    for sandbox in candidates:
        if sandbox.user is not None:
            shutil.chown(writable, *sandbox.user)
            for sub in writable.iterdir():
                shutil.chown(sub, *sandbox.user)
        try:
            runs = image.local_argv([image.command[0], "--help"])
            done = sandbox.popen(_probe(image.home, writable, runs), _probe_env())
            output, _ = done.communicate(timeout=PROBE_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as exc:
            failures.append(f"{sandbox.how}: {exc}")
            continue
        if done.returncode == 0:
            return sandbox, failures
        failures.append(f"{sandbox.how}: probe exited {done.returncode}: {output.strip()}")
    return None, failures
