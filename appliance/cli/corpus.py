"""``appliance tenants | ingest | search | documents``: the corpus from the shell."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from appliance.apikeys import parse_groups
from appliance.cli.common import audited, human_size, print_json, services
from appliance.errors import InvalidInput

tenants_app = typer.Typer(
    help="Tenants: each has its own keys, documents and index.", no_args_is_help=True
)
documents_app = typer.Typer(help="Documents of a tenant.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
TenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="The tenant.")]


@tenants_app.command("create")
def tenants_create(name: str) -> None:
    """Create a tenant (its data key is generated and wrapped by the master key)."""
    svc = services()
    with audited(svc, "tenants.create", tenant=None, resource=f"tenant:{name}"):
        info = svc.tenants().create(name)
    svc.close()
    print(f"created tenant {info.name}")


@tenants_app.command("list")
def tenants_list(as_json: JsonOpt = False) -> None:
    """List tenants."""
    rows = [
        {"name": t.name, "created_at": t.created_at.isoformat()}
        for t in services().tenants().list()
    ]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        print(f"{row['name']:40} created {row['created_at']}")
    if not rows:
        print("no tenants yet: appliance tenants create NAME")


@tenants_app.command("delete")
def tenants_delete(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a tenant: destroys its key (crypto-shredding), then its files."""
    if not yes:
        typer.confirm(
            f"Delete tenant {name!r}? Its key is destroyed and its documents are unrecoverable",
            abort=True,
        )
    svc = services()
    with audited(svc, "tenants.delete", tenant=None, resource=f"tenant:{name}"):
        svc.delete_tenant(name)
    svc.close()
    print(f"deleted tenant {name}; its key is destroyed")


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (recursive).")],
    tenant: TenantOpt,
    acl: Annotated[
        str | None, typer.Option(help="Groups allowed to see these documents: g1,g2.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest documents; ends with 'N ingested, M unchanged, K failed'. Exit 1 if any failed."""
    from appliance.corpus.ingest import IngestOptions, discover
    from appliance.corpus.ingest import ingest as run_ingest

    groups = parse_groups(acl)
    svc = services()
    with audited(svc, "documents.ingest", tenant=tenant, resource="cli") as payload:
        corpus = svc.corpus(tenant)
        sources = discover(paths)
        with _Progress(len(sources), enabled=not as_json) as advance:
            report = run_ingest(
                corpus,
                sources,
                acl=groups,
                options=IngestOptions.from_settings(svc.settings),
                progress=advance,
            )
        payload.update(
            acl=list(groups),
            ingested=[[d.source, d.document_id, d.version] for d in report.ingested],
            unchanged=report.unchanged,
            failed=[[f.source, f.problem] for f in report.failed],
        )
    svc.close()
    if as_json:
        print_json(
            {
                "ingested": [asdict(d) for d in report.ingested],
                "unchanged": report.unchanged,
                "failed": [asdict(f) for f in report.failed],
                "summary": report.summary(),
            }
        )
    else:
        for doc in report.ingested:
            note = "  (needs_ocr: no text stored)" if doc.status == "needs_ocr" else ""
            print(
                f"ingested  {doc.source}  doc {doc.document_id} v{doc.version}, "
                f"{doc.chunks} chunks{note}"
            )
        for failure in report.failed:
            print(f"FAILED    {failure.source}: {failure.reason}")
        print(report.summary())
    if report.failed:
        raise typer.Exit(1)


class _Progress:
    """A progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled and sys.stderr.isatty()

    def __enter__(self):  # type: ignore[no-untyped-def]
        if not self.enabled:
            return lambda source, done=None, total=None: None
        from rich.progress import Progress

        self._bar = Progress(transient=True, console=None)
        self._bar.start()
        task = self._bar.add_task("ingesting", total=self.total)

        def advance(source: str, done: int | None = None, total: int | None = None) -> None:
            if done is None:
                self._bar.update(task, advance=1, description=source[-40:])
            else:
                self._bar.update(task, completed=done, total=total, description=source[-40:])

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._bar.stop()


def search(
    query: str,
    tenant: TenantOpt,
    k: Annotated[int, typer.Option("--k", min=1, max=200)] = 10,
    groups: Annotated[str | None, typer.Option(help="Search as a caller in these groups.")] = None,
    mode: Annotated[str, typer.Option(help="hybrid, bm25 or vector.")] = "hybrid",
    as_json: JsonOpt = False,
) -> None:
    """Hybrid (BM25 + vector) search of a tenant's documents."""
    from appliance.corpus.search import search as run_search

    if mode not in ("hybrid", "bm25", "vector"):
        raise InvalidInput(f"unknown mode {mode!r}: use hybrid, bm25 or vector")
    caller = frozenset(parse_groups(groups)) if groups is not None else None
    hits = run_search(services().corpus(tenant), query, k=k, groups=caller, mode=mode)  # type: ignore[arg-type]
    if as_json:
        print_json([asdict(h) for h in hits])
        return
    for i, h in enumerate(hits, start=1):
        where = h.location + (f" [{h.cells}]" if h.cells else "")
        print(f"{i:2}. {h.source} — {where}  (score {h.score:.4f})")
        print("    " + " ".join(h.text.split())[:300])
    if not hits:
        print("no results")


@documents_app.command("list")
def documents_list(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """Documents of a tenant."""
    docs = services().corpus(tenant).store.documents()
    if as_json:
        print_json([asdict(d) for d in docs])
        return
    for d in docs:
        acl = ",".join(d.acl) or "-"
        print(
            f"{d.id:6}  v{d.version:<3} {d.status:9} {human_size(d.size):>9} "
            f"{d.chunks:5} chunks  acl {acl:12} {d.source}"
        )
    print(f"{len(docs)} documents")


@documents_app.command("show")
def documents_show(
    document_id: int,
    tenant: TenantOpt,
    text: Annotated[bool, typer.Option("--text", help="Also print the extracted text.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """One document's record (and its extracted text with --text)."""
    corpus = services().corpus(tenant)
    info = asdict(corpus.store.document(document_id))
    if text:
        info["text"] = corpus.store.document_text(document_id)
    if as_json:
        print_json(info)
        return
    for key, value in info.items():
        if key != "text":
            print(f"{key:11} {value}")
    if text:
        print("\n" + info["text"])


@documents_app.command("delete")
def documents_delete(document_id: int, tenant: TenantOpt) -> None:
    """Delete a document from the tenant's store and index."""
    svc = services()
    with audited(svc, "documents.delete", tenant=tenant, resource=f"document:{document_id}"):
        svc.corpus(tenant).delete_document(document_id)
    svc.close()
    print(f"deleted document {document_id}")


def reindex(tenant: TenantOpt) -> None:
    """Re-embed a tenant's documents with the active embedding model.

    Run it after activating another embedding model (`appliance models activate`), with the
    API stopped: until then the tenant refuses to open under the new model.
    """
    svc = services()
    with audited(svc, "tenants.reindex", tenant=tenant, resource=f"tenant:{tenant}") as payload:
        model = svc.embedder_entry().ref
        with _Progress(0, enabled=True) as advance:
            chunks = svc.reindex(tenant, lambda done, total: advance("re-embedding", done, total))
        payload.update(embedding_model=model, chunks=chunks)
    svc.close()
    print(f"re-embedded {chunks} chunks of tenant {tenant} with {model}")


def register(app: typer.Typer) -> None:
    app.add_typer(tenants_app, name="tenants")
    app.add_typer(documents_app, name="documents")
    app.command()(ingest)
    app.command()(search)
    app.command()(reindex)
