"""The SDK's call table and the pieces both clients share: parity, argument order, jobs,
reports and enums (no server; real proto messages)."""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
from typing import Any

import grpc
import pytest

import assay.client as sdk
from assay.client import _calls as calls
from assay.client._aigen import generated_verdict
from assay.client._jobs import job as to_job
from assay.client._jobs import succeeded, timed_out
from assay.v1 import aigen_pb2, jobs_pb2, models_pb2, robustness_pb2


def public_methods(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in vars(cls).items()
        if callable(member) and not name.startswith("_")
    }


def normalised(annotation: Any) -> str:
    """The annotation as the sync client would spell it."""
    text = str(annotation)
    return text.replace("AsyncIterator[", "Iterator[").replace("AsyncJob", "Job")


def test_both_clients_expose_the_same_methods_with_the_same_signatures() -> None:
    sync, aio = public_methods(sdk.Client), public_methods(sdk.AsyncClient)
    assert set(sync) == set(aio)
    assert {"delete_profile", "evaluate_anomaly", "detect_anomaly"} <= set(aio)
    for name, method in sync.items():
        ours, theirs = inspect.signature(method), inspect.signature(aio[name])
        assert list(ours.parameters.values()) == list(theirs.parameters.values()), name
        assert normalised(ours.return_annotation) == normalised(theirs.return_annotation), name
        if name == "watch_job":
            assert "AsyncIterator[" in str(theirs.return_annotation)
        else:  # everything else of AsyncClient is a coroutine
            assert inspect.iscoroutinefunction(aio[name]), name
            assert not inspect.iscoroutinefunction(method), name


def _passed(method: Any) -> tuple[str, list[str]]:
    """The call-table function a client method calls and the names it passes, in order."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(method)))
    tuples = {
        node.targets[0].id: [e.id for e in node.value.elts]  # type: ignore[attr-defined]
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple)
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "calls"
        ):
            names: list[str] = []
            for arg in node.args:
                if isinstance(arg, ast.Starred):
                    names += tuples[arg.value.id]  # type: ignore[attr-defined]
                else:
                    names.append(arg.id)  # type: ignore[attr-defined]
            return node.func.attr, names
    raise AssertionError(f"{method.__qualname__} calls nothing in the call table")


@pytest.mark.parametrize("cls", [sdk.Client, sdk.AsyncClient])
def test_every_method_passes_its_arguments_in_order_to_its_call_table_entry(cls: type) -> None:
    for name, method in public_methods(cls).items():
        if name == "close":
            continue
        entry, passed = _passed(method)
        assert entry == name, f"{cls.__name__}.{name} builds {entry}"
        own = [p for p in inspect.signature(method).parameters if p != "self"]
        assert passed == own, f"{cls.__name__}.{name} passes {passed}, declares {own}"
        builder = list(inspect.signature(getattr(calls, name)).parameters.values())
        assert [p.name for p in builder[: len(own)]] == own, name
        assert all(p.default is not inspect.Parameter.empty for p in builder[len(own) :]), name


def test_job_states_are_str_enums_that_compare_with_the_old_strings() -> None:
    message = jobs_pb2.Job(id="j1", kind="robustness", state=jobs_pb2.JOB_STATE_SUCCEEDED)
    info = to_job(message)
    assert info.state is sdk.JobState.SUCCEEDED and info.state == "succeeded"
    assert f"{info.state}" == "succeeded" and info.finished
    assert [s.value for s in sdk.JobState] == [
        jobs_pb2.JobState.Name(v).removeprefix("JOB_STATE_").lower()
        for v in jobs_pb2.JobState.values()
    ]
    unknown = jobs_pb2.Job(id="j2", state=99)  # type: ignore[arg-type]
    assert to_job(unknown).state is sdk.JobState.UNSPECIFIED


def test_aigen_verdicts_are_str_enums() -> None:
    for value in aigen_pb2.AigenVerdict.values():
        verdict = generated_verdict(aigen_pb2.GeneratedResult(verdict=value)).verdict
        expected = aigen_pb2.AigenVerdict.Name(value).removeprefix("AIGEN_VERDICT_").lower()
        assert isinstance(verdict, sdk.AigenVerdict) and verdict == expected


def _failed(code: grpc.StatusCode, state: int = jobs_pb2.JOB_STATE_FAILED) -> jobs_pb2.Job:
    message = jobs_pb2.Job(id="j", state=state)  # type: ignore[arg-type]
    message.error.code = code.value[0]
    message.error.message = f"because {code.name}"
    return message


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL, grpc.StatusCode.NOT_FOUND],
)
def test_a_failed_job_raises_job_failed_error_with_its_status(code: grpc.StatusCode) -> None:
    info = to_job(_failed(code))
    with pytest.raises(sdk.JobFailedError) as raised:
        succeeded("j", info)
    error = raised.value
    assert (error.code, error.details, error.job_id, error.job) == (
        code,
        f"because {code.name}",
        "j",
        info,
    )
    assert isinstance(error, sdk.JobError) and not isinstance(error, sdk.InvalidArgumentError)


def test_cancelled_unfinished_and_timed_out_jobs_raise_their_errors() -> None:
    cancelled = to_job(_failed(grpc.StatusCode.CANCELLED, jobs_pb2.JOB_STATE_CANCELLED))
    with pytest.raises(sdk.JobCancelledError) as raised:
        succeeded("j", cancelled)
    assert raised.value.code is grpc.StatusCode.CANCELLED
    running = to_job(jobs_pb2.Job(id="j", state=jobs_pb2.JOB_STATE_RUNNING))
    for last in (running, None):
        with pytest.raises(sdk.UnavailableError):
            succeeded("j", last)
    error = timed_out("j", 0.5, running)
    assert isinstance(error, sdk.JobTimeoutError) and error.job is running
    assert (
        error.code is grpc.StatusCode.DEADLINE_EXCEEDED and "running after 0.5 s" in error.details
    )
    done = to_job(jobs_pb2.Job(id="j", state=jobs_pb2.JOB_STATE_SUCCEEDED))
    assert succeeded("j", done) is done


def test_a_job_not_made_by_a_client_cannot_wait() -> None:
    with pytest.raises(TypeError, match="not returned by a client"):
        sdk.Job(**vars(to_job(jobs_pb2.Job(id="x")))).wait()


def test_report_reads_like_its_json_and_types_the_shared_fields() -> None:
    document = {"schema": "assay.ood.evaluation/v1", "model": {"name": "m", "version": "2"}}
    report = calls.get_report("j9", None).parse(
        jobs_pb2.Report(job_id="j9", json=json.dumps(document))
    )
    assert isinstance(report, sdk.Report) and report.job_id == "j9"
    assert (report.schema, report.model, report.model_version) == (
        "assay.ood.evaluation/v1",
        "m",
        "2",
    )
    assert report == document and dict(report) == report.raw == document
    assert report["model"]["name"] == "m" and report.get("missing") is None
    detector = sdk.Report("", {"schema": "assay.aigen.evaluation/v1", "detector": {"name": "d"}})
    assert (detector.model, detector.model_version) == ("d", "")
    inline = calls.score_robustness("m", [], [], None, "quick", None, {}).parse(
        robustness_pb2.ScoreRobustnessResponse(json='{"schema": "s"}')
    )
    assert (inline.job_id, inline.schema) == ("", "s")


def test_pages_read_until_the_last_page_or_the_limit() -> None:
    pages = calls.list_jobs("", ["running"], 3)
    assert pages.request.page_size == 3 and list(pages.request.states) == [
        jobs_pb2.JOB_STATE_RUNNING
    ]
    items: list[Any] = []
    first = jobs_pb2.ListJobsResponse(
        jobs=[jobs_pb2.Job(id="a"), jobs_pb2.Job(id="b")], next_page_token="t1"
    )
    assert pages.collect(first, items) and pages.call.request.page_token == "t1"
    second = jobs_pb2.ListJobsResponse(
        jobs=[jobs_pb2.Job(id="c"), jobs_pb2.Job(id="d")], next_page_token="t2"
    )
    assert not pages.collect(second, items)  # the limit is reached
    assert [j.id for j in pages.result(items)] == ["a", "b", "c"]
    models = calls.list_models(2.5)
    assert models.call.deadline(30.0) == 2.5
    assert not models.collect(models_pb2.ListModelsResponse(), [])


def test_deadlines_default_except_for_long_calls() -> None:
    assert calls.get_job("j", None).deadline(30.0) == 30.0
    assert calls.get_job("j", 4.0).deadline(30.0) == 4.0
    assert calls.watch_job("j").deadline(30.0) is None  # a suite may run for hours
    assert calls.watch_job("j", 7.0).deadline(30.0) == 7.0  # Job.wait(timeout_s=7)


def test_requests_carry_the_arguments() -> None:
    anomaly = calls.evaluate_anomaly("digits_cnn", "/data/tiles").request
    assert (anomaly.model.name, anomaly.dataset) == ("digits_cnn", "/data/tiles")
    deleted = calls.delete_profile("digits_cnn", "2").request
    assert (deleted.model.name, deleted.model.version) == ("digits_cnn", "2")
    fit = calls.fit_profile("m", "/d", ["knn"], 0.9, 0.3, None, 4).request
    assert not fit.HasField("sample_limit") and (fit.target_tpr, fit.seed) == (0.9, 4)
    assert calls.fit_profile("m", "/d", [], 0.9, 0.3, 0, 4).request.HasField("sample_limit")
    detect = calls.detect_generated([b"x"], ["d:3"], True, None, False, ["i"], None).request
    assert (detect.detectors[0].name, detect.detectors[0].version, detect.images[0].id) == (
        "d",
        "3",
        "i",
    )
    with pytest.raises(ValueError, match="2 ids for 1 images"):
        calls.predict("m", [b"x"], 0, (), "", ["a", "b"], (), None)
    with pytest.raises(ValueError, match="is not a folder"):
        calls.upload_dataset("n", "/no/such/folder", False)
