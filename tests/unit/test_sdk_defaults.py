"""Defaults live in the server's job specs only: the SDK and CLI send nothing they were not given.

A call without the optional arguments must build a request whose only set
fields are the required ones (proto3 reads an unset scalar as "the spec's
default"), and no SDK method or CLI command may declare a default of its own
for a field a server spec defines.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import typer
from google.protobuf.message import Message

import assay.client as sdk
from assay.client import _calls as calls
from assay.client.cli import app
from assay.server.aigen.specs import AigenEvaluationSpec, AigenProfileSpec
from assay.server.ood.specs import AnomalyEvaluationSpec, OodEvaluationSpec, OodProfileSpec
from assay.server.robustness.specs import RobustnessSpec

SPECS = (
    OodProfileSpec,
    OodEvaluationSpec,
    AnomalyEvaluationSpec,
    AigenProfileSpec,
    AigenEvaluationSpec,
    RobustnessSpec,
)
DEFAULTED = {
    name for spec in SPECS for name, info in spec.model_fields.items() if not info.is_required()
}
"""Every spec field with a server default (target_tpr, holdout_fraction, seed, preset, ...)."""
CLI_NAMES = {"suite": "preset"}
"""CLI options spelled differently from the spec field they set."""
NOTHING = (None, (), "")
"""Defaults that send nothing."""


def sent(message: Message) -> set[str]:
    """The dotted names of the fields a request carries (empty sub-messages carry none)."""
    names: set[str] = set()
    for field, value in message.ListFields():
        if field.message_type is not None and not field.is_repeated:
            names |= {f"{field.name}.{inner}" for inner in sent(value)}
        else:
            names.add(field.name)
    return names


def built_with_defaults(name: str, *required: Any) -> Message:
    """The request `Client.<name>` builds when given only `required`, via the call table."""
    bound = inspect.signature(getattr(sdk.Client, name)).bind(None, *required)
    bound.apply_defaults()
    arguments = list(bound.arguments.values())[1:]  # without self; the order the client passes
    request: Message = getattr(calls, name)(*arguments).request
    return request


@pytest.mark.parametrize(
    ("name", "required", "fields"),
    [
        ("fit_profile", ("m", "/d"), {"model.name", "dataset"}),
        (
            "evaluate_ood_scorers",
            ("m", "/in", ["/ood"]),
            {"model.name", "in_dataset", "ood_datasets"},
        ),
        ("fit_detector", ("d", "/d"), {"detector.name", "dataset"}),
        ("evaluate_aigen_detector", ("d", "/d"), {"detector.name", "dataset"}),
        ("start_evaluation", ("m", "/d"), {"model.name", "dataset"}),
        ("score_robustness", ("m", [b"x"], ["3"]), {"model.name", "images", "labels"}),
        ("predict", ("m", [b"x"]), {"model.name", "images"}),
        ("detect_generated", ([b"x"],), {"images"}),
    ],
)
def test_a_call_without_optional_arguments_sends_only_the_required_fields(
    name: str, required: tuple[Any, ...], fields: set[str]
) -> None:
    assert sent(built_with_defaults(name, *required)) == fields


def test_given_numbers_are_sent_and_a_set_sample_limit_keeps_its_presence() -> None:
    fit = calls.fit_detector("d", "/d", 0.1, 0.25, 0, 7).request
    assert (fit.target_fpr, fit.holdout_fraction, fit.seed) == (0.1, 0.25, 7)
    assert fit.HasField("sample_limit") and fit.sample_limit == 0
    assert calls.predict("m", [b"x"], 4, (), "", None, (), None).request.top_k == 4
    suite = calls.start_evaluation("m", "/d", "standard", "", None, {}).request.suite
    assert suite.preset == "standard"


def sdk_methods() -> Iterator[tuple[str, Callable[..., Any]]]:
    for cls in (sdk.Client, sdk.AsyncClient):
        for name, member in vars(cls).items():
            if callable(member) and not name.startswith("_"):
                yield f"{cls.__name__}.{name}", member


def cli_commands(
    group: typer.Typer, prefix: str = "assay"
) -> Iterator[tuple[str, Callable[..., Any]]]:
    for command in group.registered_commands:
        assert command.callback is not None
        yield f"{prefix} {command.name or command.callback.__name__}", command.callback
    for sub in group.registered_groups:
        assert sub.typer_instance is not None
        yield from cli_commands(sub.typer_instance, f"{prefix} {sub.name}")


def test_no_sdk_method_or_cli_command_declares_a_default_a_server_spec_owns() -> None:
    checked = set()
    for where, function in [*sdk_methods(), *cli_commands(app)]:
        for parameter in inspect.signature(function).parameters.values():
            field = (
                CLI_NAMES.get(parameter.name, parameter.name) if " " in where else parameter.name
            )
            if field in DEFAULTED and parameter.default is not inspect.Parameter.empty:
                assert parameter.default in NOTHING, (
                    f"{where}({parameter.name}={parameter.default!r})"
                )
                checked.add(field)
    assert {"target_tpr", "target_fpr", "holdout_fraction", "seed", "preset"} <= checked
