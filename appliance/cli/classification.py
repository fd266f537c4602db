"""``appliance taxonomy | classify | review | eval classify``: classification from the shell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from appliance.cli.common import audited, cli_actor, eval_app, print_json, services
from appliance.errors import InvalidInput

taxonomy_app = typer.Typer(
    help="Taxonomies: labels, rules, examples, classifier versions.", no_args_is_help=True
)
review_app = typer.Typer(help="The human review queue.", no_args_is_help=True)
TenantOpt = Annotated[str, typer.Option("--tenant", help="The tenant.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
MAX_FILE_BYTES = 20 * 2**20


def _read_spec(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InvalidInput(f"{path} does not exist")
    import yaml

    text = path.read_text(encoding="utf-8", errors="replace")
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise InvalidInput(f"{path}: give a .yaml, .yml or .json file")
    try:
        raw = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0]
        raise InvalidInput(f"{path} is not valid {suffix[1:].upper()}: {first}") from None
    if isinstance(raw, dict) and "labels" in raw:
        return raw
    return {"labels": raw}


@taxonomy_app.command("create")
def taxonomy_create(
    name: str,
    tenant: TenantOpt,
    labels: Annotated[Path, typer.Option(help="YAML/JSON: labels (and rules, thresholds).")],
) -> None:
    """Create a taxonomy from a labels file."""
    from appliance.review.classification import label_store
    from appliance.review.labelling import Taxonomy

    svc = services()
    with audited(svc, "taxonomy.create", tenant=tenant, resource=f"taxonomy:{name}") as payload:
        taxonomy = Taxonomy.from_json({**_read_spec(labels), "name": name})
        payload["labels"] = list(taxonomy.labels)
        label_store(svc, tenant).create_taxonomy(taxonomy)
    svc.close()
    print(
        f"created taxonomy {name} with {len(taxonomy.labels)} labels: {', '.join(taxonomy.labels)}"
    )


@taxonomy_app.command("list")
def taxonomy_list(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """The tenant's taxonomies."""
    from appliance.review.classification import label_store

    svc = services()
    store = label_store(svc, tenant)
    rows = [
        {**t.to_json(), "active_version": store.active_version(t.name)} for t in store.taxonomies()
    ]
    svc.close()
    if as_json:
        print_json(rows)
        return
    for row in rows:
        version = row["active_version"] or "-"
        print(f"{row['name']}\t{len(row['labels'])} labels\tversion {version}")


@taxonomy_app.command("show")
def taxonomy_show(name: str, tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """A taxonomy with its examples per label and its classifier versions."""
    from appliance.review.classification import label_store

    svc = services()
    store = label_store(svc, tenant)
    shown = {
        **store.taxonomy(name).to_json(),
        "examples": store.example_counts(name),
        "versions": store.versions(name),
    }
    svc.close()
    if as_json:
        print_json(shown)
        return
    print(f"taxonomy {name}")
    for label, description in shown["labels"].items():
        count = sum(shown["examples"].get(label, {}).values())
        print(f"  {label}\t{count} examples\t{description}")
    for v in shown["versions"]:
        mark = "*" if v["active"] else " "
        print(
            f" {mark}v{v['version']}\t{v['created_at']}\t{v['examples']} examples"
            f"\tECE {v['ece']:.3f}\t{' + '.join(v['views'])}"
        )


def _texts(folder: Path) -> list[tuple[str, str, str]]:
    """``(label, text, source)`` from ``folder/<label>/*``, each file parsed."""
    from appliance.corpus.parsers import parse

    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder (expected one sub-folder per label)")
    items = []
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in sorted(p for p in label_dir.iterdir() if p.is_file()):
            if path.stat().st_size > MAX_FILE_BYTES:
                raise InvalidInput(f"{path}: over {MAX_FILE_BYTES // 2**20} MB")
            text = parse(path.read_bytes(), filename=path.name).text
            if text.strip():
                items.append((label_dir.name, text, f"{label_dir.name}/{path.name}"))
    if not items:
        raise InvalidInput(f"{folder}: no example files in label sub-folders")
    return items


@taxonomy_app.command("train")
def taxonomy_train(
    name: str,
    tenant: TenantOpt,
    examples: Annotated[
        Path | None, typer.Option(help="Folder with one sub-folder of files per label.")
    ] = None,
) -> None:
    """Add labelled examples (if given) and train a new classifier version."""
    from appliance.review.classification import Classification

    svc = services()
    with audited(svc, "taxonomy.train", tenant=tenant, resource=f"taxonomy:{name}") as payload:
        c = Classification.of(svc, tenant)
        c.store.taxonomy(name)
        if examples is not None:
            payload["added"] = c.add_examples(name, _texts(examples))
        version = c.train(name, cli_actor())
        left_out = version["left_out"]
        payload.update(
            version=version["version"], ece=version["ece"], left_out=left_out["examples"]
        )
    svc.close()
    print(
        f"taxonomy {name}: version {version['version']} trained on {version['examples']} "
        f"examples ({' + '.join(version['views'])}; out-of-fold ECE {version['ece']:.3f}); "
        "it is now active"
    )
    if left_out["examples"]:
        print(f"note: {left_out['reason']}")
    if version["words_missing"]:
        print(
            f"note: {version['words_missing']} examples were stored before examples kept "
            "their word counts, so this version reads embeddings only; add them again from "
            "their sources (--examples DIR) to train the word view too"
        )


@taxonomy_app.command("rollback")
def taxonomy_rollback(
    name: str, tenant: TenantOpt, version: Annotated[int, typer.Option(min=1)]
) -> None:
    """Make an earlier classifier version the active one."""
    from appliance.review.classification import label_store

    svc = services()
    with audited(svc, "taxonomy.rollback", tenant=tenant, resource=f"taxonomy:{name}") as p:
        label_store(svc, tenant).activate_version(name, version)
        p["version"] = version
    svc.close()
    print(f"taxonomy {name}: version {version} is active")


def classify(
    taxonomy: Annotated[str, typer.Option(help="The taxonomy.")],
    tenant: TenantOpt,
    paths: Annotated[list[Path] | None, typer.Argument(help="Files to classify.")] = None,
    all_documents: Annotated[bool, typer.Option("--all", help="Every document.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Classify files, or every document of the tenant (--all)."""
    from appliance.cli.corpus import _Progress
    from appliance.corpus.parsers import parse
    from appliance.review.classification import Classification

    if bool(paths) == all_documents:
        raise InvalidInput("give files to classify, or --all for the tenant's documents")
    svc = services()
    results = []
    with audited(svc, "classify", tenant=tenant, resource=f"taxonomy:{taxonomy}") as payload:
        c = Classification.of(svc, tenant)
        c.store.taxonomy(taxonomy)
        if all_documents:
            subjects: list[tuple[str, Any]] = [
                (d.source, lambda d=d: c.document(d.id, None)) for d in c.corpus.store.documents()
            ]
        else:
            subjects = [
                (str(p), lambda p=p: c.text(parse(p.read_bytes(), filename=p.name).text))
                for p in paths or []
            ]
        with _Progress(len(subjects), enabled=not as_json) as advance:
            for name, subject in subjects:
                result = c.classify(taxonomy, subject())
                results.append({"name": name, **result})
                advance(name)
        payload["results"] = [
            {k: r[k] for k in ("subject", "label", "confidence", "route")} for r in results
        ]
    svc.close()
    if as_json:
        print_json(results)
        return
    for r in results:
        print(f"{r['name']}\t{r['label']}\t{r['confidence']:.3f}\t{r['tier']}\t{r['route']}")


@review_app.command("list")
def review_list(
    tenant: TenantOpt,
    taxonomy: Annotated[str | None, typer.Option(help="Only this taxonomy.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Pending review items: lowest confidence first, then oldest."""
    from dataclasses import asdict

    from appliance.review.classification import label_store

    svc = services()
    store = label_store(svc, tenant)
    if taxonomy is not None:
        store.taxonomy(taxonomy)
    items = [asdict(i) for i in store.review_items(taxonomy, "pending", limit)]
    svc.close()
    if as_json:
        print_json(items)
        return
    for i in items:
        r = i["result"]
        sample = "\tquality sample (automated)" if i["quality_sample"] else ""
        print(
            f"{i['id']}\t{i['taxonomy']}\t{r['subject']}\t{r['label']}\t{i['confidence']:.3f}"
            f"{sample}"
        )


@review_app.command("decide")
def review_decide(
    item_id: int,
    tenant: TenantOpt,
    accept: Annotated[bool, typer.Option("--accept", help="The label is right.")] = False,
    correct: Annotated[str | None, typer.Option("--correct", help="The right label.")] = None,
    note: Annotated[str | None, typer.Option(help="A note for the record.")] = None,
) -> None:
    """Accept or correct a review item; it becomes a training example."""
    from appliance.review.classification import Classification, Decision

    if accept == (correct is not None):
        raise InvalidInput("give --accept, or --correct LABEL")
    svc = services()
    with audited(svc, "review.decide", tenant=tenant, resource=f"review:{item_id}") as payload:
        decision: Decision = "accept" if accept else "correct"
        payload.update(decision=decision, label=correct, note=note)
        outcome = Classification.of(svc, tenant).decide(
            item_id, decision, correct, note, cli_actor()
        )
        payload.update(previous_label=outcome["previous_label"], taxonomy=outcome["taxonomy"])
    svc.close()
    print(f"review item {item_id}: {decision}ed as {outcome['label']}")


@eval_app.command("classify")
def eval_classify(
    data: Annotated[Path, typer.Option(help="Folder with one sub-folder of .txt per label.")],
    train_per_label: Annotated[int, typer.Option(min=2, max=100_000)] = 50,
    seed: int = 0,
    as_json: JsonOpt = False,
) -> None:
    """Accuracy, macro-F1, ECE and route coverage/precision vs a TF-IDF + LR baseline."""
    from appliance.review.classification_eval import evaluate, load_folders

    svc = services()
    report = evaluate(svc.embedder(), load_folders(data), train_per_label, seed)
    svc.close()
    if as_json:
        print_json(report)
        return
    print(f"labels {', '.join(report['labels'])}; sizes {report['sizes']}")
    for name in ("ours", "embedding_only", "baseline_tfidf_lr", "after_review_corrections"):
        r = report[name]
        auto = r["routes"]["auto"]
        print(
            f"{name:26} accuracy {r['accuracy']:.3f}  macro-F1 {r['macro_f1']:.3f}  "
            f"ECE {r['ece']:.3f}  auto {auto['coverage']:.1%} at precision {auto['precision']}"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(taxonomy_app, name="taxonomy")
    app.add_typer(review_app, name="review")
    app.command()(classify)
