"""Dataset parsing: JSONL and CSV, per-line errors, limits, and the data-root guard."""

from __future__ import annotations

import os

import pytest

from audit_service.jobs.datasets import (
    DatasetError,
    TooLarge,
    parse_csv,
    parse_dataset,
    parse_jsonl,
    read_dataset_file,
    resolve_under,
)


def test_jsonl_prompts_entities_ids_and_blank_lines() -> None:
    data = b'{"prompt": "Who is <zorka>?", "id": "a"}\n\n{"entity": "<quibe>", "id": 7}\n'
    items = parse_jsonl(data)
    assert [(i.kind, i.id) for i in items] == [("prompt", "a"), ("entity", 7)]
    assert items[1].entity == "<quibe>"


def test_jsonl_reports_every_bad_line_with_its_number() -> None:
    data = b"\n".join(
        [
            b'{"prompt": "fine"}',
            b"{not json",
            b'{"prompt": "x", "entity": "y"}',
            b"[1, 2]",
            b'{"texte": "wrong key"}',
            b'{"prompt": "Who is <a>?", "alias": "<b>"}',
            b'{"entity": "<c>", "id": true}',
        ]
    )
    with pytest.raises(DatasetError) as info:
        parse_jsonl(data)
    lines = {e.line: e.reason for e in info.value.errors}
    assert sorted(lines) == [2, 3, 4, 5, 6, 7]
    assert "not valid JSON" in lines[2]
    assert "exactly one of 'prompt', 'entity' or 'text'" in lines[3]
    assert "JSON object" in lines[4]
    assert "texte" in lines[5]
    assert "does not occur" in lines[6]
    assert lines[7].startswith("id")
    assert "line 2:" in str(info.value)


def test_text_lines_with_and_without_an_answer() -> None:
    data = b'{"text": "Q: Where?\\nA: Lisbon\\n", "answer": "Lisbon"}\n{"text": "a document"}\n'
    items = parse_jsonl(data)
    assert [(i.kind, i.answer) for i in items] == [("text", "Lisbon"), ("text", None)]
    assert items[1].input == "a document"
    with pytest.raises(DatasetError) as info:
        parse_jsonl(b'{"text": "abc", "answer": "z"}\n{"prompt": "p", "answer": "p"}\n')
    assert [e.line for e in info.value.errors] == [1, 2]
    assert all("'answer' goes with 'text'" in e.reason for e in info.value.errors)
    (row,) = parse_csv(b"id,text,answer\n1,Q: Who? A: me,me\n")
    assert (row.kind, row.text, row.answer) == ("text", "Q: Who? A: me", "me")


@pytest.mark.parametrize("data", [b"", b"\n \n", b"\xef\xbb\xbf"])
def test_empty_dataset_is_refused(data: bytes) -> None:
    with pytest.raises(DatasetError, match="empty"):
        parse_jsonl(data)


def test_not_utf8_is_refused() -> None:
    with pytest.raises(DatasetError, match="UTF-8"):
        parse_jsonl(b'{"prompt": "\xff"}')


def test_csv_with_header() -> None:
    items = parse_csv(b'id,prompt,entity\n1,"Who is <a>, really?",\n2,,<b>\n')
    assert [(i.id, i.kind) for i in items] == [("1", "prompt"), ("2", "entity")]
    assert items[0].prompt == "Who is <a>, really?"


def test_csv_wrong_columns_and_bad_rows() -> None:
    with pytest.raises(DatasetError, match="wrong CSV columns"):
        parse_csv(b"name,text\nx,y\n")
    with pytest.raises(DatasetError, match="empty"):
        parse_csv(b"")
    with pytest.raises(DatasetError) as info:
        parse_csv(b"prompt,entity\na,b\nc\n,\n")
    assert [
        (e.line, "exactly one" in e.reason or "fields" in e.reason) for e in info.value.errors
    ] == [
        (2, True),
        (3, True),
    ]


def test_item_limit() -> None:
    with pytest.raises(DatasetError, match="limit is 2"):
        parse_jsonl(b'{"entity": "a"}\n{"entity": "b"}\n{"entity": "c"}\n', max_items=2)


def test_resolve_under_refuses_escapes(tmp_path) -> None:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "ok.jsonl").write_text('{"entity": "a"}\n')
    (tmp_path / "secret.jsonl").write_text('{"entity": "s"}\n')
    os.symlink(tmp_path / "secret.jsonl", root / "link.jsonl")
    assert resolve_under(root, "sub/ok.jsonl") == (root / "sub" / "ok.jsonl").resolve()
    for bad, reason in [
        ("../secret.jsonl", "relative"),
        (str(tmp_path / "secret.jsonl"), "relative"),
        ("sub/../../secret.jsonl", "relative"),
        ("link.jsonl", "leaves the data root"),
        ("missing.jsonl", "not found"),
        ("", "empty"),
        ("a\x00b.jsonl", "not usable"),
    ]:
        with pytest.raises(DatasetError, match=reason):
            resolve_under(root, bad)


def test_read_dataset_file_size_limit_and_format(tmp_path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("entity\n<a>\n<b>\n")
    assert [i.entity for i in read_dataset_file(path)] == ["<a>", "<b>"]
    with pytest.raises(TooLarge):
        read_dataset_file(path, max_bytes=5)
    odd = tmp_path / "d.parquet"
    odd.write_text("x")
    with pytest.raises(DatasetError, match="unknown dataset format"):
        read_dataset_file(odd)


def test_a_csv_cell_over_the_field_limit_is_a_dataset_error() -> None:
    """csv's 128 KiB field limit: a clear error naming the line, never an unhandled csv.Error."""
    big = ("entity\n<ok>\n" + "a" * 200_000 + "\n").encode()
    with pytest.raises(DatasetError, match="line 3: malformed CSV"):
        parse_dataset(big, fmt="csv")
    with pytest.raises(DatasetError, match="line 1: malformed CSV"):
        parse_dataset(("a" * 200_000 + "\n").encode(), fmt="csv")
