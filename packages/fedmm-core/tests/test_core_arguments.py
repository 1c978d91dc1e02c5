"""A technique's arguments, declared once (``Technique.Arguments``): construction checks them and
names the bad one, the signature lists them, ``config()`` returns them, configs and the docs table
are made from them."""

from __future__ import annotations

import copy
import inspect
import json
import pickle
from typing import Any, ClassVar, Literal

import numpy as np
import pytest
from pydantic import Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from fedmm.core import config
from fedmm.core.arguments import ArgumentProblem, TechniqueArguments, argument_table, python_only
from fedmm.core.config import build_technique, json_schema, parse_config
from fedmm.core.errors import ArgumentError, ConfigError
from fedmm.core.protocol import Technique


class EchoArguments(TechniqueArguments):
    level: int = Field(1, ge=1, description="how loud | how often")
    rate: float = Field(0.5, gt=0, le=1, description="a rate")
    limit: float = Field(2.0, ge=1, allow_inf_nan=True, description="inf = none")
    style: Literal["plain", "fancy"] = Field("plain", description="the style")
    quiet: bool = Field(False, description="say nothing")
    stages: int | tuple[int, ...] = Field(3, description="stages")
    cap: int | None = Field(None, ge=1, description="a cap")
    helper: SkipJsonSchema[Any] = python_only("an object")
    progress: bool = Field(True, description="show bars")

    @model_validator(mode="after")
    def _loud_enough(self) -> EchoArguments:
        if self.quiet and self.level > 1:
            raise ArgumentProblem("quiet", "= true with level > 1 says nothing loudly")
        return self


class Echo(Technique):
    name: ClassVar[str] = "echo"
    Arguments: ClassVar[type[TechniqueArguments]] = EchoArguments
    args: EchoArguments


class EchoWithState(Echo):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.heard = 0


def _error(**kwargs: Any) -> ArgumentError:
    with pytest.raises(ArgumentError) as info:
        Echo(**kwargs)
    return info.value


def test_the_signature_lists_the_declared_arguments() -> None:
    params = inspect.signature(Echo).parameters
    assert list(params) == list(EchoArguments.model_fields)
    assert params["level"].default == 1 and params["level"].annotation is int
    assert inspect.signature(EchoWithState).parameters.keys() == params.keys()


def test_arguments_are_validated_typed_and_kept() -> None:
    echo = Echo(np.int64(2), rate=np.float32(0.25), stages=[1, 2], style="fancy", limit=float("inf"))
    assert echo.args.level == 2 and type(echo.args.level) is int
    assert echo.args.stages == (1, 2)
    assert echo.config() == {
        "level": 2,
        "rate": 0.25,
        "limit": float("inf"),
        "style": "fancy",
        "quiet": False,
        "stages": [1, 2],
        "cap": None,
        "progress": True,
    }
    assert Echo(**echo.config()).config() == echo.config()
    json.dumps(Echo().config())  # JSON-able: the Python-only helper is left out
    state = EchoWithState(level=3)
    assert state.heard == 0 and state.args.level == 3
    # Techniques cross to Ray workers and are copied: their arguments go with them.
    assert pickle.loads(pickle.dumps(state)).args == state.args
    assert copy.deepcopy(echo).config() == echo.config()


@pytest.mark.parametrize(
    ("kwargs", "argument", "problem"),
    [
        ({"level": 0}, "level", "must be an integer >= 1, got 0"),
        ({"level": True}, "level", "must be an integer >= 1, got True"),
        ({"level": "3"}, "level", "must be an integer >= 1, got '3'"),
        ({"level": 1.5}, "level", "must be an integer >= 1, got 1.5"),
        ({"rate": float("nan")}, "rate", "must be a finite number in (0, 1], got nan"),
        ({"rate": "high"}, "rate", "must be a finite number in (0, 1], got 'high'"),
        ({"limit": float("nan")}, "limit", "must be a number >= 1, got nan"),
        (
            {"style": "fancey"},
            "style",
            "must be one of 'plain', 'fancy', got 'fancey' (did you mean 'fancy'?)",
        ),
        ({"quiet": "no"}, "quiet", "must be true or false, got 'no'"),
        ({"cap": 0}, "cap", "must be an integer >= 1, got 0"),
        ({"cap": "x"}, "cap", "must be an integer >= 1 or omitted, got 'x'"),
        ({"stages": "3"}, "stages", "must be an integer or a list of integers, got '3'"),
        ({"quiet": True, "level": 2}, "quiet", "= true with level > 1 says nothing loudly"),
        (
            {"levle": 2},
            "levle",
            "unknown argument (did you mean 'level'?); the arguments of Echo are level, rate, limit, "
            "style, quiet, stages, cap, helper, progress",
        ),
    ],
)
def test_a_bad_argument_is_named(kwargs: dict[str, Any], argument: str, problem: str) -> None:
    error = _error(**kwargs)
    assert (error.owner, error.argument, error.problem) == ("echo", argument, problem)


def test_positional_arguments_follow_the_fields() -> None:
    assert Echo(2, 0.1).args.rate == 0.1
    with pytest.raises(TypeError, match="multiple values for argument 'level'"):
        Echo(2, level=3)
    with pytest.raises(TypeError, match="takes 9 positional arguments"):
        Echo(*range(10))


def test_a_technique_with_its_own_constructor_keeps_its_signature() -> None:
    class Own(Technique):
        def __init__(self, width: int = 4) -> None:
            self.width = width

    assert list(inspect.signature(Own).parameters) == ["width"]
    assert Own().config() == {} and repr(Own()) == "Own({})"


class _EntryPoint:
    name = "echo"

    def load(self) -> type[Technique]:
        return Echo


def test_configs_build_it_and_name_the_table_and_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "technique_classes", lambda: {"echo": _EntryPoint()})

    def built(**arguments: Any) -> Any:
        cfg = parse_config({"data": {"name": "synthetic"}, "techniques": [{"name": "echo", **arguments}]})
        return build_technique(cfg.techniques[0], progress=False)

    assert built(level=2, stages=[1, 2]).config()["stages"] == [1, 2]
    assert built().args.progress is False  # -q: progress=False reaches a technique that has it
    with pytest.raises(ConfigError) as info:
        built(rate=0)
    assert str(info.value) == "[[techniques]] #1 (echo).rate: must be a finite number in (0, 1], got 0"
    with pytest.raises(ConfigError, match=r"\(echo\)\.levle: unknown argument \(did you mean 'level'\?\)"):
        built(levle=1)
    # The schema carries its arguments, the Python-only one left out.
    arguments = json_schema()["$defs"]["technique_echo"]
    assert arguments["properties"]["name"] == {
        "const": "echo",
        "description": "the technique, as it is registered",
    }
    assert arguments["properties"]["level"]["minimum"] == 1 and "helper" not in arguments["properties"]
    assert arguments["additionalProperties"] is False


def test_the_docs_table_is_made_from_the_fields() -> None:
    table = argument_table(EchoArguments).splitlines()
    assert table[:2] == ["| argument | takes | default | meaning |", "|---|---|---|---|"]
    assert table[2] == "| `level` | an integer >= 1 | `1` | how loud \\| how often |"
    assert "| `limit` | a number >= 1 | `2.0` | inf = none |" in table
    assert "| `style` | one of 'plain', 'fancy' | `\"plain\"` | the style |" in table
    assert "| `cap` | an integer >= 1 or omitted | none | a cap |" in table
    assert "| `helper` | a Python object (not from a config) | none | an object |" in table
