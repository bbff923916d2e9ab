"""The CLI as a log or CI job sees it, over a real server: whole tables, JSON without matplotlib.

Each command runs as its own process with stdout captured (not a terminal) and
COLUMNS=80, as in a CI log. The matplotlib test hides matplotlib from that
process with a meta-path finder, as if the ``report`` extra were not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import typer

import assay.client as sdk
from assay.client import _cli_common as cli
from assay.client._background import BackgroundServer
from tests.conftest import ROOT, demo_settings

SAMPLES = ROOT / "deploy" / "samples"
HELDOUT = SAMPLES / "digits_heldout"
NOISE = SAMPLES / "ood" / "noise" / "ood"
DIGITS = sorted((SAMPLES / "digits").glob("*.png"))

RUN = "import sys; from assay.client.cli import main; main(sys.argv[1:])"
WITHOUT_MATPLOTLIB = (
    '''
import sys

class NoMatplotlib:
    """Makes matplotlib look uninstalled."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "matplotlib":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoMatplotlib())
for name in [m for m in sys.modules if m.partition(".")[0] == "matplotlib"]:
    del sys.modules[name]
'''
    + RUN
)


def assay(
    *args: str, code: str = RUN, columns: str | None = "80"
) -> subprocess.CompletedProcess[str]:
    """Run `assay ARGS` in a fresh process, output captured, COLUMNS as given (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env if columns is None else {**env, "COLUMNS": columns},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    """A server on the samples, with the digits model's OOD profile fitted."""
    with BackgroundServer(demo_settings(data={"roots": [str(SAMPLES)]})) as server:
        address = f"127.0.0.1:{server.port}"
        with sdk.Client(address) as client:
            job = client.fit_profile("digits_cnn", str(HELDOUT), sample_limit=200)
            events = list(client.watch_job(job.id))
            assert events[-1].job.state == "succeeded", events[-1].job.error
        yield address


def test_tables_are_whole_at_80_columns_without_a_terminal(target: str) -> None:
    images = [str(p) for p in DIGITS[:3]] + [str(p) for p in sorted(NOISE.glob("*.png"))[:2]]
    commands = [
        ["models"],
        ["predict", "--model", "digits_cnn", "--signals", "ood", *images],
        ["ood", "score", "--model", "digits_cnn", "--scorers", "energy,knn,mahalanobis", *images],
        ["ood", "profiles"],
        ["jobs"],
    ]
    for command in commands:
        result = assay(*command, "--target", target)
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert "\x1b[" not in out, "colour codes: the output was taken for a terminal"
        assert "…" not in out, f"`assay {' '.join(command)}` cut a cell:\n{out}"
        assert max(len(line) for line in out.splitlines()) <= 80, out
    folded = assay("models", "--target", target).stdout
    assert "digits_" in folded  # at 80 columns the name may fold onto two lines, never "…"
    log = assay("models", "--target", target, columns=None)
    assert "…" not in log.stdout and "\x1b[" not in log.stdout
    assert "│ digits_cnn │" in log.stdout and "(feature_map)" in log.stdout
    assert 80 < max(len(line) for line in log.stdout.splitlines()) <= cli.LOG_WIDTH


def test_reports_fall_back_to_json_without_matplotlib(target: str, tmp_path: Path) -> None:
    robustness = assay(
        "evaluate", "--model", "digits_cnn", "--data", str(HELDOUT), "--sample-limit", "30",
        "--corruptions", "contrast", "--severities", "1", "--out", str(tmp_path / "r.html"),
        "--target", target, code=WITHOUT_MATPLOTLIB,
    )  # fmt: skip
    assert robustness.returncode == 0, robustness.stderr
    assert "pip install 'assay[report]'; writing JSON instead" in robustness.stderr
    assert not (tmp_path / "r.html").exists()
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["schema"] == "assay.robustness.report/v1" and report["dataset"]["images"] == 30

    with sdk.Client(target) as client:
        (job,) = [j for j in client.list_jobs() if j.kind == "robustness"]
    again = assay(
        "report", job.id, "--out", str(tmp_path / "again.html"), "--target", target,
        code=WITHOUT_MATPLOTLIB,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "again.json").read_text()) == report

    ood = assay(
        "ood", "evaluate", "--model", "digits_cnn", "--id", str(HELDOUT), "--ood", str(NOISE.parent),
        "--sample-limit", "40", "--out", str(tmp_path / "ood.html"), "--target", target,
        code=WITHOUT_MATPLOTLIB,
    )  # fmt: skip
    assert ood.returncode == 0, ood.stderr
    assert "writing JSON instead" in ood.stderr and not (tmp_path / "ood.html").exists()
    assert json.loads((tmp_path / "ood.json").read_text())["schema"] == "assay.ood.evaluation/v1"

    with_plots = assay("report", job.id, "--out", str(tmp_path / "r.html"), "--target", target)
    assert with_plots.returncode == 0, with_plots.stderr
    assert "data:image/png;base64," in (tmp_path / "r.html").read_text()


def test_ctrl_c_while_following_a_job_cancels_it_on_the_server(target: str) -> None:
    with sdk.Client(target) as client:
        job = client.start_evaluation("digits_cnn", str(HELDOUT), "standard")
        watch = client.watch_job

        def interrupted(job_id: str) -> Iterator[sdk.JobProgress]:
            yield next(iter(watch(job_id)))
            raise KeyboardInterrupt

        client.watch_job = interrupted  # type: ignore[method-assign]
        with pytest.raises(typer.Exit) as exit_info:
            cli.follow_job(client, job, "suite")
        assert exit_info.value.exit_code == 130
        client.watch_job = watch  # type: ignore[method-assign]
        final = list(client.watch_job(job.id))[-1].job
    assert final.state == "cancelled" and final.done < final.total


@pytest.mark.parametrize("refused", [False, True], ids=["returned", "failed-precondition"])
def test_ctrl_c_just_after_the_job_ended_still_exits_130(
    target: str, refused: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cancel comes too late: the server returns the ended job or refuses the cancel."""
    with sdk.Client(target) as client:
        job = client.evaluate_ood_scorers(
            "digits_cnn", str(HELDOUT), [str(NOISE.parent)], sample_limit=20
        )
        done = job.wait(timeout_s=120)
        if refused:

            def cancel_job(job_id: str, *, timeout_s: float | None = None) -> sdk.Job:
                details = f"job {job_id} is succeeded; only a live job can be cancelled"
                raise sdk.FailedPreconditionError(grpc.StatusCode.FAILED_PRECONDITION, details)

            client.cancel_job = cancel_job  # type: ignore[method-assign]

        def interrupted(job_id: str) -> Iterator[sdk.JobProgress]:
            raise KeyboardInterrupt
            yield  # a generator, as watch_job is

        client.watch_job = interrupted  # type: ignore[method-assign]
        with pytest.raises(typer.Exit) as exit_info:
            cli.follow_job(client, job, "evaluation")
        assert exit_info.value.exit_code == 130
        assert done.state is client.get_job(job.id).state is sdk.JobState.SUCCEEDED
    said = " ".join(capsys.readouterr().err.split())
    ended = "had already ended" + ("" if refused else " (succeeded)")
    assert f"interrupted; evaluation (job {job.id}) {ended}" in said, said
