"""The dataset-adapter interface: read a benchmark's published annotation files into manifest records.

An adapter turns one benchmark's files, as distributed, into manifest lines (models.manifest): the
question, the human answers, the question type where the benchmark has one, the benchmark's own
scoring rule (models.scoring.DATASET_RULES) and, where the benchmark's standard evaluation prompt adds
text to the question (OCR tokens, options, an answer-format instruction), the rendered `prompt`.
Malformed annotations raise AnnotationError naming the file, the record and the field.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

#: LLaVA-1.5's short-answer instruction for VQAv2, GQA, TextVQA and POPE evaluation.
SHORT_ANSWER = "Answer the question using a single word or phrase."


class AnnotationError(ValueError):
    """An annotation file breaks its dataset's published format; names file, record and field."""


@dataclass(frozen=True)
class Source:
    """Where an adapter reads from: the annotation file, the image folder and optional extra files."""

    annotations: Path
    images: Path
    split: str | None = None
    questions: Path | None = None       # VQAv2: the questions file beside the annotations file
    ocr: Path | None = None             # TextVQA: the Rosetta OCR file


def fail(path: Path, record: Any, field: str | None, msg: str) -> AnnotationError:
    """An AnnotationError 'FILE: record R: field 'F': msg'."""
    where = f"{path}: record {record}" + (f": field '{field}'" if field else "")
    return AnnotationError(f"{where}: {msg}")


def load_json(path: Path) -> Any:
    """A whole JSON file, with a clear error for a missing or unreadable one."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise AnnotationError(f"{path}: annotation file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def load_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, object) per non-blank line of a JSON-lines file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AnnotationError(f"{path}: annotation file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: cannot read ({exc})") from None
    for n, raw in enumerate(text.splitlines(), start=1):
        if raw.strip():
            try:
                yield n, json.loads(raw)
            except json.JSONDecodeError as exc:
                raise AnnotationError(f"{path}: line {n}: not valid JSON ({exc.msg})") from None


def field(rec: Any, key: str, kind: type | tuple[type, ...], path: Path, record: Any, *, optional: bool = False):
    """rec[key] checked to be of `kind` (bool is never an int); None when optional and absent."""
    if not isinstance(rec, dict):
        raise fail(path, record, None, f"must be a JSON object, got {type(rec).__name__}")
    if key not in rec or rec[key] is None:
        if optional:
            return None
        raise fail(path, record, key, "is missing")
    val = rec[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(val, bool) and bool not in kinds or not isinstance(val, kinds):
        names = "/".join(k.__name__ for k in kinds)
        raise fail(path, record, key, f"must be {names}, got {type(val).__name__} {val!r:.60}")
    if isinstance(val, str) and not val.strip():
        raise fail(path, record, key, "must be a non-empty string")
    return val


def string_list(rec: dict, key: str, path: Path, record: Any, *, min_len: int = 1) -> list[str]:
    """rec[key] as a list of at least min_len strings (numbers are turned into strings)."""
    val = field(rec, key, list, path, record)
    if len(val) < min_len or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in val):
        raise fail(path, record, key, f"must be a list of at least {min_len} strings")
    return [str(v) for v in val]


class DatasetAdapter(ABC):
    """One benchmark: `records(source)` yields manifest records (dicts) in the file's order."""

    #: the name given to `edgevlm trace manifest`
    name: str = ""
    #: one line for --help
    summary: str = ""
    #: default for --split where the image folder or file layout depends on it
    default_split: str | None = None
    #: extra files this adapter needs besides --annotations (Source field names)
    needs: tuple[str, ...] = ()

    @abstractmethod
    def records(self, source: Source) -> Iterator[dict[str, Any]]:
        """Manifest records: image (a path under source.images), question, answers, sample_id, ..."""

    def image_path(self, source: Source, relative: str) -> Path:
        return source.images / relative
