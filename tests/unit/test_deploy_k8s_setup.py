"""What a cluster needs besides `kubectl apply -k deploy/k8s`: the database Secret, created
once outside the kustomization so that re-applying it never resets the password, and the
init step that makes the shared data volume writable where the storage ignores fsGroup."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_deploy_manifests import (
    DEPLOY,
    K8S,
    SETUP,
    Doc,
    load_all,
    pod,
    secret_value,
    shipped,
    workloads,
)

NOBODY = 65534


def secret_refs() -> dict[str, set[str]]:
    """Secret name -> the keys the shipped workloads read from it."""
    refs: dict[str, set[str]] = {}
    for doc in workloads():
        for c in doc["spec"]["template"]["spec"]["containers"]:
            for env in c.get("env", []):
                if ref := env.get("valueFrom", {}).get("secretKeyRef"):
                    refs.setdefault(ref["name"], set()).add(ref["key"])
    return refs


def comment_text(path: Path) -> str:
    """A YAML file's comment lines as one line (shell continuations joined)."""
    lines = [line.lstrip("# ").rstrip("\\ ") for line in path.read_text().splitlines()]
    return " ".join(line for line in lines if line)


def test_apply_k_holds_no_secret_so_it_cannot_reset_the_password() -> None:
    kustomization = load_all(K8S / "kustomization.yaml")[0]
    assert not shipped("Secret"), "a Secret applied with -k would put the empty password back"
    assert "secretGenerator" not in kustomization
    assert not [r for r in kustomization["resources"] if r.startswith("setup")]
    assert "setup/postgres-secret.yaml" in (K8S / "kustomization.yaml").read_text()
    readme = (DEPLOY.parent / "README.md").read_text(encoding="utf-8")
    assert "deploy/k8s/setup/postgres-secret.yaml" in readme


def test_the_documented_secret_has_every_key_the_workloads_read() -> None:
    refs = secret_refs()
    assert refs == {"assay-postgres": {"url", "password"}}
    (path,) = SETUP
    assert shipped("Secret", SETUP)["assay-postgres"]["stringData"].keys() == refs["assay-postgres"]
    assert secret_value("assay-postgres", "password") == ""  # no default password in git
    # The documented command creates (never applies) the same Secret with the same keys.
    comment = comment_text(path)
    found = re.search(
        r"kubectl -n (\S+) (\w+) secret generic (\S+)((?: --from-literal=\w+=\S+)+)", comment
    )
    assert found, comment
    namespace, verb, name, literals = found.groups()
    assert (namespace, verb, name) == ("assay", "create", "assay-postgres")
    values = dict(pair.split("=", 1) for pair in re.findall(r"--from-literal=(\S+)", literals))
    assert values.keys() == refs[name]
    assert values["url"] == secret_value(name, "url")
    assert f"kubectl create -f deploy/k8s/setup/{path.name}" in comment
    # What an empty password really does: the server exits at start and is restarted.
    assert "exits 1 at start" in comment and "CrashLoopBackOff" in comment
    assert "NOT_SERVING" not in comment


def data_owner() -> tuple[Doc, Doc, tuple[int, int]]:
    """The init step, the assay container and the (uid, gid) assay runs as."""
    spec = pod("assay")["spec"]
    (init,) = spec["initContainers"]
    (c,) = spec["containers"]
    return init, c, (c["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"])


def test_the_data_owner_step_touches_only_the_data_mount_with_two_capabilities() -> None:
    init, c, (uid, gid) = data_owner()
    assert init["image"] == c["image"]  # nothing else to pull
    (mount,) = init["volumeMounts"]
    assert mount in c["volumeMounts"] and mount["mountPath"] == "/var/lib/assay"
    security = init["securityContext"]
    assert (security["runAsUser"], security["runAsNonRoot"]) == (0, False)
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]}
    script = init["command"][-1]
    assert f"dir={mount['mountPath']} owner={uid}:{gid}\n" in script
    assert "-R" not in script  # the mount point only: a large volume is not walked


@pytest.fixture
def volume() -> Iterator[Path]:
    """A mount point stand-in, root's and 0755, in a folder any user may enter."""
    parent = Path(tempfile.mkdtemp(prefix="assay-data-owner-"))
    parent.chmod(0o755)
    (folder := parent / "data").mkdir(mode=0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(parent)


def run_data_owner(folder: Path, *, uid: int = 0) -> subprocess.CompletedProcess[str]:
    """The init step's script on `folder`, as `uid` with only the step's capabilities."""
    assert os.geteuid() == 0, (
        "running the data-owner step as the pod does needs root (CI and `make test` run as root)"
    )
    init, _, _ = data_owner()
    caps = ",".join(f"+{cap.lower()}" for cap in init["securityContext"]["capabilities"]["add"])
    script = init["command"][-1].replace("/var/lib/assay", str(folder))
    user = [f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] if uid else []
    argv = ["setpriv", "--no-new-privs", f"--bounding-set=-all,{caps}", *user, "sh", "-c", script]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def test_the_data_owner_step_hands_a_roots_mount_point_to_the_assay_user(volume: Path) -> None:
    _, _, owner = data_owner()
    done = run_data_owner(volume)
    assert done.returncode == 0 and not done.stderr, done
    assert (volume.stat().st_uid, volume.stat().st_gid) == owner
    assert volume.stat().st_mode & 0o700 == 0o700
    again = run_data_owner(volume)  # every pod start: nothing left to do
    assert again.returncode == 0 and "already owned" in again.stdout, again


def test_where_root_is_squashed_it_says_why_and_lets_assay_try(volume: Path) -> None:
    done = run_data_owner(volume, uid=NOBODY)  # what an NFS root_squash export makes of root
    assert done.returncode == 0, done  # assay then names the folder it cannot write
    assert "writable by uid or gid 10001" in done.stderr, done
    assert (volume.stat().st_uid, volume.stat().st_gid) == (0, 0)
