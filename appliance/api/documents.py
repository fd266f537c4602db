"""Documents and search of the caller's tenant. Another tenant's document answers 404."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from appliance.api.auditing import audit_action
from appliance.api.deps import AuditDep, ServicesDep, require, tenant_of
from appliance.api.uploads import read_upload
from appliance.apikeys import Principal, parse_groups
from appliance.corpus.filters import MAX_VALUES, DocumentFilter
from appliance.corpus.ingest import IngestOptions, ingest_bytes
from appliance.corpus.search import MAX_K, MAX_QUERY_CHARS, search
from appliance.errors import Forbidden

router = APIRouter(prefix="/v1", tags=["documents"])
Reader = Annotated[Principal, Depends(require("analyst", "reviewer"))]
Writer = Annotated[Principal, Depends(require("analyst"))]


class FiltersRequest(BaseModel):
    """Narrow a search or a question to some documents (fields AND, values OR)."""

    model_config = {
        "extra": "forbid",
        "json_schema_extra": {
            "examples": [{"sources": ["leases/*"], "updated_after": "2026-01-01"}]
        },
    }

    document_ids: list[int] = Field(default=[], max_length=MAX_VALUES)
    sources: list[str] = Field(
        default=[], max_length=MAX_VALUES, description="glob patterns on the source name"
    )
    media_types: list[str] = Field(default=[], max_length=MAX_VALUES)
    updated_after: str | None = Field(default=None, description="ISO 8601 date or time")
    updated_before: str | None = Field(default=None, description="ISO 8601 date or time")

    def to_filter(self) -> DocumentFilter:
        return DocumentFilter.of(**self.model_dump())


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, examples=["notice period"])
    k: int = Field(default=10, ge=1, le=MAX_K)
    mode: Literal["hybrid", "bm25", "vector"] = "hybrid"
    filters: FiltersRequest | None = None


@router.post(
    "/documents",
    status_code=201,
    openapi_extra={
        **audit_action("documents.upload"),
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "acl": {
                                "type": "string",
                                "description": "Groups allowed to see it: g1,g2",
                                "example": "contracts,legal",
                            },
                        },
                    }
                }
            },
        },
    },
)
async def upload_document(
    request: Request,
    response: Response,
    principal: Writer,
    services: ServicesDep,
    record: AuditDep,
) -> dict[str, Any]:
    """Ingest one document (multipart field ``file``, optional ``acl``).

    201 with the new document version; 200 when the same bytes are already stored under
    that name. A new upload under an existing name becomes its next version.
    """
    tenant = tenant_of(principal)
    options = IngestOptions.from_settings(services.settings)
    upload = await read_upload(request, options.limits.max_bytes)
    acl = parse_groups(upload.fields.get("acl"))
    if principal.acl_groups is not None and not set(acl) <= principal.acl_groups:
        raise Forbidden("you can only restrict a document to groups your key belongs to")
    record.payload.update(source=upload.filename, bytes=len(upload.data), acl=list(acl))
    corpus = await run_in_threadpool(services.corpus, tenant)
    record.models["embedding"] = services.embedder_entry().ref
    report = await run_in_threadpool(
        lambda: ingest_bytes(corpus, upload.filename, upload.data, acl=acl, options=options)
    )
    if report.unchanged:
        response.status_code = 200
        known = corpus.store.lookup(upload.filename)
        assert known is not None
        document = corpus.store.document(known[0], principal.acl_groups)
        record.resource = f"document:{document.id}"
        return {**asdict(document), "unchanged": True}
    done = report.ingested[0]
    record.resource = f"document:{done.document_id}"
    document = corpus.store.document(done.document_id, principal.acl_groups)
    return {**asdict(document), "unchanged": False}


@router.get("/documents")
def list_documents(principal: Reader, services: ServicesDep) -> list[dict[str, Any]]:
    """Documents of the caller's tenant that the caller's groups may see."""
    store = services.corpus(tenant_of(principal)).store
    return [asdict(d) for d in store.documents(principal.acl_groups)]


@router.get("/documents/{document_id}")
def get_document(document_id: int, principal: Reader, services: ServicesDep) -> dict[str, Any]:
    """One document's record; 404 when it does not exist for this caller."""
    store = services.corpus(tenant_of(principal)).store
    return asdict(store.document(document_id, principal.acl_groups))


@router.delete(
    "/documents/{document_id}", status_code=204, openapi_extra=audit_action("documents.delete")
)
def delete_document(
    document_id: int, principal: Writer, services: ServicesDep, record: AuditDep
) -> None:
    """Delete a document from the store and both indexes."""
    record.resource = f"document:{document_id}"
    corpus = services.corpus(tenant_of(principal))
    record.payload["source"] = corpus.store.document(document_id, principal.acl_groups).source
    corpus.delete_document(document_id)


@router.post("/search")
def search_documents(
    body: SearchRequest, principal: Reader, services: ServicesDep
) -> list[dict[str, Any]]:
    """Hybrid search; the caller's ACL groups filter inside both retrievers."""
    corpus = services.corpus(tenant_of(principal))
    filters = body.filters.to_filter() if body.filters is not None else None
    hits = search(
        corpus, body.query, k=body.k, groups=principal.acl_groups, mode=body.mode, filters=filters
    )
    return [asdict(h) for h in hits]
