"""Documents and search of the caller's tenant. Another tenant's document answers 404."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from appliance.api.deps import AuditDep, ServicesDep, require, tenant_of
from appliance.apikeys import Principal
from appliance.corpus.search import MAX_K, MAX_QUERY_CHARS, search

router = APIRouter(prefix="/v1", tags=["documents"])
Reader = Annotated[Principal, Depends(require("analyst", "reviewer"))]
Writer = Annotated[Principal, Depends(require("analyst"))]


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, examples=["notice period"])
    k: int = Field(default=10, ge=1, le=MAX_K)
    mode: Literal["hybrid", "bm25", "vector"] = "hybrid"


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


@router.delete("/documents/{document_id}", status_code=204)
def delete_document(
    document_id: int, principal: Writer, services: ServicesDep, record: AuditDep
) -> None:
    """Delete a document from the store and both indexes."""
    record.action, record.resource = "documents.delete", f"document:{document_id}"
    corpus = services.corpus(tenant_of(principal))
    record.payload["source"] = corpus.store.document(document_id, principal.acl_groups).source
    corpus.delete_document(document_id)


@router.post("/search")
def search_documents(
    body: SearchRequest, principal: Reader, services: ServicesDep
) -> list[dict[str, Any]]:
    """Hybrid search; the caller's ACL groups filter inside both retrievers."""
    corpus = services.corpus(tenant_of(principal))
    hits = search(corpus, body.query, k=body.k, groups=principal.acl_groups, mode=body.mode)
    return [asdict(h) for h in hits]
