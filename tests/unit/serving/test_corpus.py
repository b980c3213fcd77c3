from __future__ import annotations

from pathlib import Path

import pytest

from serving.errors import CorpusError
from serving.index.corpus import document_text, read_corpus


def test_reads_a_dataset_dir_and_keeps_extra_fields(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text(
        '{"_id": "1", "title": "Wings", "text": "lift", "brand": "x"}\n\n{"_id": 2, "text": "b"}\n'
    )
    docs = list(read_corpus(tmp_path))
    assert docs == [
        {"_id": "1", "title": "Wings", "text": "lift", "brand": "x"},
        {"_id": "2", "text": "b"},
    ]


def test_bad_line_is_named_with_file_and_line_number(tmp_path: Path) -> None:
    file = tmp_path / "docs.jsonl"
    file.write_text('{"_id": "1", "text": "a"}\n{"_id": "2", "text": \n')
    with pytest.raises(CorpusError, match=r"docs\.jsonl:2: not valid JSON"):
        list(read_corpus(file))


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ('{"text": "a"}', "'_id' must be a non-empty string"),
        ('{"_id": "1", "title": 5}', "'title' must be a string"),
        ('["a"]', "must be a JSON object"),
    ],
)
def test_invalid_documents_are_refused(tmp_path: Path, line: str, rule: str) -> None:
    file = tmp_path / "docs.jsonl"
    file.write_text(line + "\n")
    with pytest.raises(CorpusError, match=rule):
        list(read_corpus(file))


def test_missing_corpus_is_named(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="neither a JSONL file nor a dataset dir"):
        list(read_corpus(tmp_path))


def test_document_text_joins_non_empty_fields() -> None:
    doc = {"title": " Wings ", "text": "lift and drag", "other": "x"}
    assert document_text(doc, ["title", "text"]) == "Wings lift and drag"
    assert document_text({"title": "", "text": "only"}, ["title", "text"]) == "only"
    assert document_text({}, ["title", "text"]) == ""
