"""Classification over the API: taxonomies, examples, training and versions, classify (one
or a batch job), the review queue, per-taxonomy metrics. Another tenant's taxonomy, item or
job answers 404 (each tenant has its own classification database). A batch job runs in a
thread of this process; one the process did not finish is reported ``interrupted``."""

from __future__ import annotations

import threading
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field, model_validator
from starlette.concurrency import run_in_threadpool

from appliance.api.auditing import audit_action
from appliance.api.deps import AuditDep, ServicesDep, require, tenant_of
from appliance.apikeys import Principal
from appliance.errors import ApplianceError
from appliance.review.batch_jobs import FAILED
from appliance.review.classification import Classification, label_store
from appliance.review.labelling import Taxonomy
from appliance.services import Services

router = APIRouter(prefix="/v1", tags=["classification"])
Admin = Annotated[Principal, Depends(require())]
Reader = Annotated[Principal, Depends(require("analyst", "reviewer"))]
Analyst = Annotated[Principal, Depends(require("analyst"))]
Reviewer = Annotated[Principal, Depends(require("reviewer"))]
MAX_BATCH = 100_000

EXAMPLE_TAXONOMY = {
    "name": "contracts",
    "labels": {"lease": "Property leases and rentals", "nda": "Non-disclosure agreements"},
    "rules": [{"label": "nda", "pattern": r"non-disclosure|confidentiality agreement"}],
    "thresholds": {"auto": 0.95, "review": 0.8, "sample_rate": 0.1, "auto_sample_rate": 0.02},
}


class ExampleItem(BaseModel):
    label: str = Field(min_length=1, max_length=64)
    text: str = Field(min_length=1, max_length=1_000_000)
    source: str = Field(default="api", max_length=255)


class ExamplesRequest(BaseModel):
    examples: list[ExampleItem] = Field(min_length=1, max_length=10_000)


class ClassifyRequest(BaseModel):
    model_config = {
        "json_schema_extra": {"examples": [{"taxonomy": "contracts", "document_id": 12}]}
    }

    taxonomy: str = Field(min_length=1, max_length=64)
    document_id: int | None = None
    text: str | None = Field(default=None, max_length=1_000_000)

    @model_validator(mode="after")
    def _one_subject(self) -> ClassifyRequest:
        if (self.document_id is None) == (self.text is None):
            raise ValueError("give exactly one of document_id or text")
        return self


class BatchRequest(BaseModel):
    taxonomy: str = Field(min_length=1, max_length=64)
    document_ids: list[int] | None = Field(default=None, max_length=MAX_BATCH)
    all: bool = False

    @model_validator(mode="after")
    def _one_scope(self) -> BatchRequest:
        if (self.document_ids is None) == (not self.all):
            raise ValueError("give document_ids, or all: true")
        return self


class DecisionRequest(BaseModel):
    decision: Literal["accept", "correct"]
    label: str | None = Field(default=None, max_length=64)
    note: str | None = Field(default=None, max_length=2000)


class RollbackRequest(BaseModel):
    version: int = Field(ge=1)


def _classification(services: Services, principal: Principal) -> Classification:
    return Classification.of(services, tenant_of(principal))


@router.post("/taxonomies", status_code=201, openapi_extra=audit_action("taxonomy.create"))
def create_taxonomy(
    body: Annotated[dict[str, Any], Field(examples=[EXAMPLE_TAXONOMY])],
    principal: Admin,
    services: ServicesDep,
    record: AuditDep,
) -> dict[str, Any]:
    """Create a taxonomy: labels with descriptions, optional rules, routing thresholds."""
    taxonomy = Taxonomy.from_json(body)
    record.resource = f"taxonomy:{taxonomy.name}"
    record.payload["labels"] = list(taxonomy.labels)
    label_store(services, tenant_of(principal)).create_taxonomy(taxonomy)
    return taxonomy.to_json()


@router.get("/taxonomies")
def list_taxonomies(principal: Reader, services: ServicesDep) -> list[dict[str, Any]]:
    """The tenant's taxonomies."""
    return [t.to_json() for t in label_store(services, tenant_of(principal)).taxonomies()]


@router.get("/taxonomies/{name}")
def show_taxonomy(name: str, principal: Reader, services: ServicesDep) -> dict[str, Any]:
    """One taxonomy, its examples per label and origin, its classifier versions."""
    store = label_store(services, tenant_of(principal))
    return {
        **store.taxonomy(name).to_json(),
        "examples": store.example_counts(name),
        "versions": store.versions(name),
    }


@router.delete("/taxonomies/{name}", status_code=204, openapi_extra=audit_action("taxonomy.delete"))
def delete_taxonomy(name: str, principal: Admin, services: ServicesDep, record: AuditDep) -> None:
    """Delete a taxonomy with its examples, versions, results and review items."""
    record.resource = f"taxonomy:{name}"
    label_store(services, tenant_of(principal)).delete_taxonomy(name)


@router.post(
    "/taxonomies/{name}/examples", status_code=201, openapi_extra=audit_action("taxonomy.examples")
)
async def add_examples(
    name: str, body: ExamplesRequest, principal: Admin, services: ServicesDep, record: AuditDep
) -> dict[str, Any]:
    """Add labelled example texts (embedded; the texts themselves are not kept)."""
    record.resource = f"taxonomy:{name}"
    items = [(e.label, e.text, e.source) for e in body.examples]
    record.payload["labels"] = sorted({e.label for e in body.examples})
    added = await run_in_threadpool(
        lambda: _classification(services, principal).add_examples(name, items)
    )
    return {"added": added}


@router.post(
    "/taxonomies/{name}/train", status_code=201, openapi_extra=audit_action("taxonomy.train")
)
async def train(
    name: str, principal: Admin, services: ServicesDep, record: AuditDep
) -> dict[str, Any]:
    """Train a new calibrated classifier version on the examples of the embedding model in
    use; it becomes active. ``left_out`` counts the examples other models made, and why."""
    record.resource = f"taxonomy:{name}"
    version = await run_in_threadpool(
        lambda: _classification(services, principal).train(name, principal.key_id)
    )
    record.payload.update(
        version=version["version"], ece=version["ece"], left_out=version["left_out"]["examples"]
    )
    return version


@router.get("/taxonomies/{name}/versions")
def versions(name: str, principal: Reader, services: ServicesDep) -> list[dict[str, Any]]:
    """Classifier versions, with their training size and measured calibration error."""
    store = label_store(services, tenant_of(principal))
    store.taxonomy(name)
    return store.versions(name)


@router.post("/taxonomies/{name}/rollback", openapi_extra=audit_action("taxonomy.rollback"))
def rollback(
    name: str, body: RollbackRequest, principal: Admin, services: ServicesDep, record: AuditDep
) -> dict[str, Any]:
    """Make an earlier classifier version the active one."""
    record.resource = f"taxonomy:{name}"
    store = label_store(services, tenant_of(principal))
    store.activate_version(name, body.version)
    record.payload["version"] = body.version
    return {"taxonomy": name, "active": body.version}


@router.get("/taxonomies/{name}/metrics")
def taxonomy_metrics(name: str, principal: Reader, services: ServicesDep) -> dict[str, Any]:
    """Coverage and reviewed precision per route, corrections per label, confidences."""
    from appliance.review.classification_metrics import summary

    store = label_store(services, tenant_of(principal))
    store.taxonomy(name)
    return summary(store.route_stats(name))


@router.post("/classify", openapi_extra=audit_action("classify"))
async def classify(
    body: ClassifyRequest, principal: Analyst, services: ServicesDep, record: AuditDep
) -> dict[str, Any]:
    """Classify one stored document (or a text): label, confidence, tier, route, signals."""
    record.resource = f"taxonomy:{body.taxonomy}"

    def work() -> dict[str, Any]:
        c = _classification(services, principal)
        subject = (
            c.document(body.document_id, principal.acl_groups)
            if body.document_id is not None
            else c.text(body.text or "")
        )
        return c.classify(body.taxonomy, subject)

    result = await run_in_threadpool(work)
    record.models["embedding"] = result["embedding_model"]
    record.payload.update(
        subject=result["subject"],
        label=result["label"],
        confidence=result["confidence"],
        tier=result["tier"],
        route=result["route"],
        classifier=result["classifier"],
    )
    return result


@router.post("/classify/batch", status_code=202, openapi_extra=audit_action("classify.batch"))
def classify_batch(
    body: BatchRequest, principal: Analyst, services: ServicesDep, record: AuditDep
) -> dict[str, Any]:
    """Start a job classifying documents (listed, or all the caller may see); poll its id."""
    record.resource = f"taxonomy:{body.taxonomy}"
    c = _classification(services, principal)
    c.store.taxonomy(body.taxonomy)  # 404 now, not inside the job
    ids = body.document_ids or [d.id for d in c.corpus.store.documents(principal.acl_groups)]
    job_id = c.store.jobs.create(body.taxonomy, len(ids))
    record.payload.update(job=job_id, documents=len(ids))
    threading.Thread(
        target=_run_job,
        args=(c, body.taxonomy, ids, principal.acl_groups, job_id),
        name=f"classify-job-{job_id}",
        daemon=True,
    ).start()
    return c.store.jobs.get(job_id)


def _run_job(
    c: Classification, taxonomy: str, ids: list[int], groups: frozenset[str] | None, job: int
) -> None:
    done = failed = 0
    try:
        for doc_id in ids:
            try:
                c.classify(taxonomy, c.document(doc_id, groups))
                done += 1
            except ApplianceError:  # a missing or empty document: counted, the job goes on
                failed += 1
            if (done + failed) % 20 == 0:
                c.store.jobs.update(job, done, failed)
        c.store.jobs.update(job, done, failed, "finished")
    except Exception:
        c.store.jobs.update(job, done, failed, "failed", FAILED)
        raise


@router.get("/classify/jobs/{job_id}")
def job_status(job_id: int, principal: Analyst, services: ServicesDep) -> dict[str, Any]:
    """A batch job's progress: total, done, failed, status (``running``, ``finished``,
    ``failed``, or ``interrupted`` when the process stopped), and ``error``: why it stopped."""
    return label_store(services, tenant_of(principal)).jobs.get(job_id)


@router.get("/review")
def review_queue(
    principal: Reviewer,
    services: ServicesDep,
    taxonomy: Annotated[str | None, Query(max_length=64)] = None,
    status: Literal["pending", "decided"] = "pending",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[dict[str, Any]]:
    """Items waiting for a reviewer: lowest confidence first, then oldest."""
    store = label_store(services, tenant_of(principal))
    if taxonomy is not None:
        store.taxonomy(taxonomy)
    return [asdict(i) for i in store.review_items(taxonomy, status, limit)]


@router.post("/review/{item_id}", openapi_extra=audit_action("review.decide"))
def decide(
    item_id: int,
    body: DecisionRequest,
    principal: Reviewer,
    services: ServicesDep,
    record: AuditDep,
) -> dict[str, Any]:
    """Accept or correct a result; 409 if already decided. The decision trains the next version."""
    record.resource = f"review:{item_id}"
    record.payload.update(decision=body.decision, label=body.label, note=body.note)
    outcome = _classification(services, principal).decide(
        item_id, body.decision, body.label, body.note, principal.key_id
    )
    record.payload.update(
        taxonomy=outcome["taxonomy"],
        label=outcome["label"],
        previous_label=outcome["previous_label"],
    )
    return outcome
