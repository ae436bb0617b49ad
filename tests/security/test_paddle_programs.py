"""Malformed Paddle inference programs (issue 10, case 9): a feed op without ``Out`` and bad
PIR JSON (IndexError / AttributeError / RecursionError before) are one-line porter errors."""

from __future__ import annotations

import json

import pytest

from tests.security import tfwire
from tests.security.conftest import assert_one_line_error, open_all


def _program(ops: list[bytes]) -> bytes:
    block = tfwire.field(1, 0) + tfwire.field(2, 0) + b"".join(tfwire.field(4, o) for o in ops)
    return tfwire.field(1, block)


def _op(kind: str, inputs: dict[str, list[str]], outputs: dict[str, list[str]]) -> bytes:
    def slots(d: dict[str, list[str]], num: int) -> bytes:
        return b"".join(tfwire.field(num, tfwire.field(1, k.encode()) + b"".join(
            tfwire.field(2, a.encode()) for a in v)) for k, v in d.items())
    return slots(inputs, 1) + slots(outputs, 2) + tfwire.field(3, kind.encode())


@pytest.mark.parametrize("op", [_op("feed", {"X": ["feed"]}, {}),
                                _op("fetch", {}, {"Out": ["fetch"]})])
def test_feed_or_fetch_without_its_variable(arena, op: bytes) -> None:
    model, cwd = arena
    (model / "inference.pdmodel").write_bytes(_program([op]))
    (model / "inference.pdiparams").write_bytes(b"")
    assert_one_line_error(open_all(model / "inference.pdmodel", cwd), "without its")


_OK_OP = {"#": "1.relu", "I": [{"%": 1}], "O": [{"%": 2, "TT": {"D": [{"#": "0.t_f32"}, [1]]}}]}


@pytest.mark.parametrize("doc", [
    {"program": {"regions": [{"blocks": [{"ops": [{"#": "p", "A": [], "O": []}]}]}]}},
    {"program": {"regions": [{"blocks": [{"ops": [{"#": "1.relu", "O": ["x"]}]}]}]}},
    {"program": {"regions": [{"blocks": [{"ops": "nope"}]}]}},
    {"program": {"regions": []}},
    {"program": {"regions": [{"blocks": [{"ops": [_OK_OP, 7]}]}]}},
])
def test_bad_pir_json_is_a_format_error(arena, doc) -> None:
    model, cwd = arena
    (model / "inference.json").write_text(json.dumps(doc))
    (model / "inference.pdiparams").write_bytes(b"")
    assert_one_line_error(open_all(model / "inference.json", cwd), "PIR program")


def test_deeply_nested_pir_json(arena) -> None:
    model, cwd = arena
    (model / "inference.json").write_text('{"program": ' + "[" * 100_000 + "]" * 100_000 + "}")
    (model / "inference.pdiparams").write_bytes(b"")
    assert_one_line_error(open_all(model / "inference.json", cwd), "PIR program")
