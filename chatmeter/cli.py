"""The `chatmeter` command: serve, up, demo, pipeline, tenants, keys, top-ups, catalog."""

import json
import logging
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

import click

from chatmeter.catalog import CatalogError, CatalogStore, load_catalog
from chatmeter.settings import Settings
from chatmeter.store import Store


def _emit(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def _settings() -> Settings:
    return Settings()


def _store(settings: Settings) -> Store:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Store(settings.metadata_url)


def _catalog(settings: Settings):
    return CatalogStore(settings.catalog_path, settings.catalog_dir).current


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="log at debug level")
def main(verbose: bool) -> None:
    """chatmeter: metered, limited and billed AI chat for many tenants."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Run the API (one process: admission counters live in it)."""
    import uvicorn

    from serving.app import create_app

    settings = _settings()
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=settings.keep_alive_s,
        timeout_graceful_shutdown=10,
    )


@main.command()
@click.option("--port", default=8000, show_default=True, type=int, help="the API's port")
@click.option("--dagster-port", default=3000, show_default=True, type=int)
@click.option("--streamlit-port", default=8501, show_default=True, type=int)
def up(port: int, dagster_port: int, streamlit_port: int) -> None:
    """API, Dagster webserver + daemon and Streamlit together, on loopback."""
    from chatmeter.up import run_all

    sys.exit(run_all(_settings(), port, dagster_port, streamlit_port))


@main.command()
@click.option(
    "--fresh/--keep",
    default=True,
    show_default=True,
    help="start from an empty data dir (the demo's own, under the data dir)",
)
def demo(fresh: bool) -> None:
    """The whole loop on embedded defaults, with a printed summary."""
    from chatmeter.demo import run_demo

    sys.exit(run_demo(_settings(), fresh=fresh))


@main.group()
def pipeline() -> None:
    """The Dagster + dbt pipeline."""


@pipeline.command("run")
def pipeline_run() -> None:
    """Materialise every asset once, blocking; exit 0 on success."""
    from orchestration.run import run_pipeline

    sys.exit(0 if run_pipeline(_settings()) else 1)


@pipeline.command("prepare")
def pipeline_prepare() -> None:
    """Parse the dbt project (when changed), so the Dagster code location can load."""
    from orchestration.run import ensure_manifest

    ensure_manifest()


# --- tenants ---


@main.group()
def tenant() -> None:
    """Tenants."""


@tenant.command("create")
@click.option("--name", required=True)
@click.option("--plan", default=None, help="a plan of the catalog (default: the catalog's default plan)")
@click.option("--webhook-url", default=None, help="where limit alerts are sent")
@click.option("--origin", "origins", multiple=True, help="an allowed origin for the widget (repeatable; default *)")
def tenant_create(name: str, plan: str | None, webhook_url: str | None, origins: tuple[str, ...]) -> None:
    """Create a tenant; prints {"tenant_id", "api_key", "widget_key"} (the API key is shown once)."""
    settings = _settings()
    catalog = _catalog(settings)
    plan = plan or catalog.default_plan
    if plan not in catalog.plans:
        raise click.BadParameter(f"unknown plan {plan!r}; plans: {', '.join(catalog.plans)}", param_hint="--plan")
    t, api_key, widget = _store(settings).create_tenant(
        name, plan, webhook_url=webhook_url, allowed_origins=origins or ("*",)
    )
    _emit({"tenant_id": t.tenant_id, "api_key": api_key, "widget_key": widget.key})


@tenant.command("list")
def tenant_list() -> None:
    store = _store(_settings())
    from chatmeter.windows import utcnow

    _emit(
        [
            {"tenant_id": t.tenant_id, "name": t.name, "status": t.status, "plan": store.plan_at(t.tenant_id, utcnow())}
            for t in store.list_tenants()
        ]
    )


@tenant.command("plan")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--plan", required=True)
def tenant_plan(tenant_id: str, plan: str) -> None:
    """Move a tenant to another plan from now on (the invoice prorates)."""
    settings = _settings()
    if plan not in _catalog(settings).plans:
        raise click.BadParameter(f"unknown plan {plan!r}", param_hint="--plan")
    store = _store(settings)
    _require_tenant(store, tenant_id)
    a = store.assign_plan(tenant_id, plan)
    _emit({"tenant_id": tenant_id, "plan": a.plan, "effective_from": a.effective_from})


def _require_tenant(store: Store, tenant_id: str) -> None:
    if store.get_tenant(tenant_id) is None:
        raise click.BadParameter(f"no tenant {tenant_id!r}", param_hint="--tenant")


# --- keys ---


@main.group()
def key() -> None:
    """API keys (stored hashed; a new key is shown once)."""


@key.command("create")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--name", default="default")
def key_create(tenant_id: str, name: str) -> None:
    store = _store(_settings())
    _require_tenant(store, tenant_id)
    k, secret = store.create_api_key(tenant_id, name)
    _emit({"key_id": k.key_id, "tenant_id": tenant_id, "name": k.name, "api_key": secret})


@key.command("list")
@click.option("--tenant", "tenant_id", required=True)
def key_list(tenant_id: str) -> None:
    store = _store(_settings())
    _require_tenant(store, tenant_id)
    _emit(
        [
            {
                "key_id": k.key_id,
                "name": k.name,
                "prefix": k.prefix,
                "created_at": k.created_at,
                "revoked_at": k.revoked_at,
            }
            for k in store.list_api_keys(tenant_id)
        ]
    )


@key.command("revoke")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--key-id", required=True)
def key_revoke(tenant_id: str, key_id: str) -> None:
    store = _store(_settings())
    _require_tenant(store, tenant_id)
    if not store.revoke_api_key(tenant_id, key_id):
        raise click.ClickException(f"no live key {key_id} for tenant {tenant_id}")
    _emit({"key_id": key_id, "revoked": True})


# --- top-ups ---


@main.command("topup")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--pack", default=None, help="a top-up pack of the catalog")
@click.option("--meter", default="tokens", show_default=True)
@click.option("--units", type=int, default=None)
@click.option("--amount", default=None, help="price paid, e.g. 2.99")
def topup(tenant_id: str, pack: str | None, meter: str, units: int | None, amount: str | None) -> None:
    """Add units to a tenant's monthly limit for the current billing month."""
    settings = _settings()
    store = _store(settings)
    _require_tenant(store, tenant_id)
    if pack:
        packs = _catalog(settings).topup_packs
        if pack not in packs:
            raise click.BadParameter(f"unknown pack {pack!r}; packs: {', '.join(packs)}", param_hint="--pack")
        t = store.add_topup(tenant_id, packs[pack].meter, packs[pack].units, packs[pack].price, source=f"pack:{pack}")
    else:
        if units is None or amount is None:
            raise click.UsageError("give --pack, or --units and --amount")
        try:
            price = Decimal(amount)
        except InvalidOperation:
            raise click.BadParameter("not a decimal amount", param_hint="--amount") from None
        t = store.add_topup(tenant_id, meter, units, price)
    _emit({n: getattr(t, n) for n in t.__slots__})


# --- catalog ---


@main.group()
def catalog() -> None:
    """The catalog of meters, plans and prices."""


@catalog.command("check")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def catalog_check(path: Path) -> None:
    """Validate a catalog file without putting it in force."""
    try:
        c = load_catalog(path)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None
    _emit({"version": c.version, "effective_from": c.effective_from, "plans": list(c.plans), "digest": c.digest})


if __name__ == "__main__":
    main()
