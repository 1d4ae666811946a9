"""Request input for a served model: ``instances`` and ``dataframe_split`` checked against the
model's signature, each problem located so that the 422 names the field."""

from __future__ import annotations

import math
from typing import Any

import pytest
from mlflow.types import ColSpec, DataType, Schema, TensorSpec

from mlops.core.errors import InvalidFields
from mlops.deployments.inputs import MAX_PROBLEMS, InputSchema, ModelInput

NUMBERS = InputSchema(
    Schema([ColSpec(DataType.double, "mean radius"), ColSpec(DataType.double, "mean texture")])
)
MIXED = InputSchema(
    Schema(
        [
            ColSpec(DataType.long, "age"),
            ColSpec(DataType.string, "city"),
            ColSpec(DataType.boolean, "member"),
            ColSpec(DataType.integer, "visits"),
            ColSpec(DataType.float, "score"),
            ColSpec(DataType.double, "spend", required=False),
        ]
    )
)
PERSON = {"age": 41, "city": "Lyon", "member": True, "visits": 3, "score": 0.5}


def problems(schema: InputSchema, body: Any) -> list[tuple[tuple[str, ...], str]]:
    with pytest.raises(InvalidFields) as caught:
        schema.parse(body)
    assert caught.value.errors
    return [(tuple(error["loc"]), error["message"]) for error in caught.value.errors]


def locations(schema: InputSchema, body: Any) -> list[tuple[str, ...]]:
    return [where for where, _ in problems(schema, body)]


# --- the two shapes ---------------------------------------------------------------------------


def test_instances_become_rows_in_the_signature_order() -> None:
    parsed = NUMBERS.parse(
        {
            "instances": [
                {"mean texture": 2.5, "mean radius": 1},
                {"mean radius": 3.0, "mean texture": 4},
            ]
        }
    )
    assert parsed == ModelInput(("mean radius", "mean texture"), [[1, 2.5], [3.0, 4]])
    assert len(parsed) == 2


def test_dataframe_split_is_reordered_and_keeps_its_index() -> None:
    parsed = NUMBERS.parse(
        {
            "dataframe_split": {
                "columns": ["mean texture", "mean radius"],
                "data": [[2.5, 1.0], [4.0, 3.0]],
                "index": ["a", "b"],
            }
        }
    )
    assert parsed.rows == [[1.0, 2.5], [3.0, 4.0]]
    assert parsed.index == ["a", "b"]


def test_frame_casts_integers_to_the_declared_double() -> None:
    frame = NUMBERS.frame([NUMBERS.parse({"instances": [{"mean radius": 1, "mean texture": 2}]})])
    assert list(frame.columns) == ["mean radius", "mean texture"]
    assert [str(dtype) for dtype in frame.dtypes] == ["float64", "float64"]
    assert frame.iloc[0].tolist() == [1.0, 2.0]


def test_frame_of_several_inputs_is_one_frame_in_order() -> None:
    inputs = [
        NUMBERS.parse({"instances": [{"mean radius": i, "mean texture": -i}]}) for i in range(3)
    ]
    frame = NUMBERS.frame(inputs)
    assert frame["mean radius"].tolist() == [0.0, 1.0, 2.0]
    assert frame.index.tolist() == [0, 1, 2]


def test_frame_of_mixed_types_uses_each_declared_dtype() -> None:
    parsed = MIXED.parse({"instances": [PERSON, {**PERSON, "spend": 12.5}]})
    frame = MIXED.frame([parsed])
    dtypes = {name: str(dtype) for name, dtype in frame.dtypes.items()}
    assert dtypes["age"] == "int64"
    assert dtypes["member"] == "bool"
    assert dtypes["visits"] == "int32"
    assert dtypes["score"] == "float32"
    assert dtypes["spend"] == "float64"
    assert math.isnan(frame["spend"][0])  # an optional column may be left out
    assert frame["city"].tolist() == ["Lyon", "Lyon"]


def test_an_optional_column_may_be_null() -> None:
    parsed = MIXED.parse({"instances": [{**PERSON, "spend": None}]})
    assert parsed.rows[0][-1] is None


# --- what is wrong, and where ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"dataframe_records": []},
        {"instances": [], "dataframe_split": {}},
        [{"mean radius": 1.0}],
        "instances",
    ],
)
def test_exactly_one_shape_is_required(body: Any) -> None:
    assert locations(NUMBERS, body) == [("body",)]


@pytest.mark.parametrize("instances", [[], {"mean radius": 1.0}, "x", None])
def test_instances_must_be_a_non_empty_list(instances: Any) -> None:
    assert locations(NUMBERS, {"instances": instances}) == [("body", "instances")]


def test_each_instance_must_be_a_record() -> None:
    body = {"instances": [{"mean radius": 1.0, "mean texture": 2.0}, [1.0, 2.0]]}
    assert locations(NUMBERS, body) == [("body", "instances", "1")]


def test_a_missing_column_is_named_with_its_row() -> None:
    body = {"instances": [{"mean radius": 1.0, "mean texture": 2.0}, {"mean radius": 1.0}]}
    assert problems(NUMBERS, body) == [
        (("body", "instances", "1", "mean texture"), "required column is missing")
    ]


def test_an_unknown_column_is_named_and_the_known_ones_listed() -> None:
    body = {"instances": [{"mean radius": 1.0, "mean texture": 2.0, "colour": "red"}]}
    ((where, message),) = problems(NUMBERS, body)
    assert where == ("body", "instances", "0", "colour")
    assert "unknown column 'colour'" in message and "mean radius, mean texture" in message


def test_a_string_where_a_double_is_expected_names_row_and_column() -> None:
    rows: list[dict[str, Any]] = [{"mean radius": 1.0, "mean texture": 2.0} for _ in range(5)]
    rows[3]["mean radius"] = "12.5"
    with pytest.raises(InvalidFields) as caught:
        NUMBERS.parse({"instances": rows})
    error = caught.value
    assert error.errors == [
        {
            "loc": ["body", "instances", "3", "mean radius"],
            "field": "instances.3.mean radius",
            "message": "expected a number (double), got a string",
        }
    ]
    assert error.detail.startswith("instances.3.mean radius: expected a number")


@pytest.mark.parametrize("value", [None, float("nan")])
def test_null_or_nan_in_a_required_column_is_refused(value: Any) -> None:
    body = {"instances": [{"mean radius": value, "mean texture": 2.0}]}
    ((where, message),) = problems(NUMBERS, body)
    assert where == ("body", "instances", "0", "mean radius")
    assert "null is not allowed" in message


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("age", 4.0, "expected an integer (long), got a number"),
        ("age", True, "expected an integer (long), got a boolean"),
        ("age", 2**63, "out of range for long"),
        ("visits", 2**31, "out of range for integer"),
        ("member", 1, "expected true or false (boolean), got a number"),
        ("city", 7, "expected a string (string), got a number"),
        ("score", "high", "expected a number (float), got a string"),
        ("score", [0.5], "expected a number (float), got a list"),
        ("score", {"v": 0.5}, "expected a number (float), got an object"),
    ],
)
def test_each_type_takes_only_its_json_values(column: str, value: Any, expected: str) -> None:
    body = {"instances": [{**PERSON, column: value}]}
    ((where, message),) = problems(MIXED, body)
    assert where == ("body", "instances", "0", column)
    assert expected in message


def test_every_problem_is_reported_up_to_a_limit() -> None:
    few = {"instances": [{"mean radius": "x", "mean texture": "y"}]}
    assert len(problems(NUMBERS, few)) == 2
    many = {"instances": [{"mean radius": "x", "mean texture": 1.0}] * 100}
    with pytest.raises(InvalidFields) as caught:
        NUMBERS.parse(many)
    error = caught.value
    assert error.errors is not None and len(error.errors) == MAX_PROBLEMS
    assert error.detail.endswith(f"(and {MAX_PROBLEMS - 1} more problems)")


@pytest.mark.parametrize("split", [None, [], {"data": [[1.0, 2.0]]}])
def test_dataframe_split_needs_columns(split: Any) -> None:
    where = ("body", "dataframe_split") if not isinstance(split, dict) else None
    found = locations(NUMBERS, {"dataframe_split": split})
    assert found == [where or ("body", "dataframe_split", "columns")]


def test_dataframe_split_names_missing_unknown_and_repeated_columns() -> None:
    columns = ["mean radius", "colour", "mean radius"]
    body = {"dataframe_split": {"columns": columns, "data": [[1.0, "red", 1.0]]}}
    found = problems(NUMBERS, body)
    assert {where for where, _ in found} == {("body", "dataframe_split", "columns")}
    messages = " | ".join(message for _, message in found)
    assert "column 'mean radius' is given twice" in messages
    assert "required column 'mean texture' is missing" in messages
    assert "unknown column 'colour'" in messages


@pytest.mark.parametrize("data", [None, [], [[1.0, 2.0]], "x"])
def test_dataframe_split_needs_rows(data: Any) -> None:
    body = {"dataframe_split": {"columns": ["mean radius"], "data": data}}
    where = ("body", "dataframe_split", "data") if data != [[1.0, 2.0]] else None
    found = locations(InputSchema(Schema([ColSpec(DataType.double, "mean radius")])), body)
    assert found == [where or ("body", "dataframe_split", "data", "0")]


def test_dataframe_split_rows_have_one_value_per_column() -> None:
    columns = ["mean radius", "mean texture"]
    body = {"dataframe_split": {"columns": columns, "data": [[1.0, 2.0], [1.0], "ab"]}}
    assert locations(NUMBERS, body) == [
        ("body", "dataframe_split", "data", "1"),
        ("body", "dataframe_split", "data", "2"),
    ]


def test_dataframe_split_wrong_value_names_row_and_column() -> None:
    columns = ["mean texture", "mean radius"]
    body = {"dataframe_split": {"columns": columns, "data": [[1.0, 2.0], [None, 2.0]]}}
    ((where, message),) = problems(NUMBERS, body)
    assert where == ("body", "dataframe_split", "data", "1", "mean texture")
    assert "null is not allowed" in message


def test_dataframe_split_index_has_one_label_per_row() -> None:
    split = {"columns": ["mean radius", "mean texture"], "data": [[1.0, 2.0]], "index": [1, 2]}
    assert locations(NUMBERS, {"dataframe_split": split}) == [("body", "dataframe_split", "index")]


# --- signatures checked by MLflow itself -------------------------------------------------------


def test_a_signature_beyond_scalars_is_enforced_by_mlflow_per_request() -> None:
    from mlflow.types.schema import Array

    schema = InputSchema(Schema([ColSpec(Array(DataType.double), "vector")]))
    assert not schema.complete
    assert schema.parse({"instances": [{"vector": [1.0, 2.0]}]}).rows == [[[1.0, 2.0]]]
    ((where, message),) = problems(schema, {"instances": [{"vector": "not a list"}]})
    assert where == ("body", "instances")
    assert "does not match the model's signature" in message
    assert locations(schema, {"instances": [{"vector": [1.0], "x": 1}]}) == [
        ("body", "instances", "0", "x")
    ]


def test_an_unnamed_tensor_signature_cannot_be_served() -> None:
    import numpy as np

    with pytest.raises(ValueError, match="unnamed tensor"):
        InputSchema(Schema([TensorSpec(np.dtype("float64"), (-1, 4))]))
