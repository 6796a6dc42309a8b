"""``roost proxy``: run the edge proxy on its own — beside a ``roost server`` (following
its store file), or as one host's proxy in a fleet (``--store etcd://...``)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from roost.cli.session import Session, default_data_dir, resolve_token


@click.command("proxy")
@click.option(
    "--listen",
    metavar="HOST:PORT",
    default="0.0.0.0:8080",
    show_default=True,
    help="Where to take app traffic (run the server with --no-proxy or another port).",
)
@click.option(
    "--tls-listen",
    metavar="HOST:PORT",
    help="Where to take HTTPS traffic [default: none].",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Certificate (PEM) for HTTPS [default: a self-signed *.DOMAIN one].",
)
@click.option(
    "--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Its key."
)
@click.option("--domain", default="localhost", show_default=True, help="Apps are <app>.DOMAIN.")
@click.option("--region", default="local", show_default=True, help="This proxy's region.")
@click.option(
    "--autostop-interval",
    type=click.FloatRange(min=0.1),
    default=120.0,
    show_default=True,
    metavar="SECONDS",
    help="How often to look for idle machines to stop.",
)
@click.option(
    "--store",
    "store_url",
    metavar="URL",
    help="Fleet mode: the fleet's store (etcd://HOST:PORT[,...]); needs --host-id.",
)
@click.option("--host-id", help="Fleet mode: the host this proxy serves (its agent's --host-id).")
@click.option(
    "--backhaul-listen",
    metavar="HOST:PORT",
    help="Fleet mode: where other hosts' proxies deliver to this host [default: LISTEN's "
    "host, port 8081].",
)
@click.option(
    "--backhaul-advertise",
    metavar="HOST:PORT",
    help="Fleet mode: the backhaul address other proxies dial [default: --backhaul-listen].",
)
@click.option("--v4-subnet", default="172.30.0.0/17", show_default=True, metavar="CIDR")
@click.option("--v6-subnet", default="fdaa:0:1::/64", show_default=True, metavar="CIDR")
@click.pass_obj
def proxy(
    session: Session,
    listen: str,
    tls_listen: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    domain: str,
    region: str,
    autostop_interval: float,
    store_url: str | None,
    host_id: str | None,
    backhaul_listen: str | None,
    backhaul_advertise: str | None,
    v4_subnet: str,
    v6_subnet: str,
) -> None:
    """Run the edge proxy on its own.

    Beside a server: it follows the store of the server whose data dir is --data-dir
    and asks that server's API (--api-url) to start and stop machines. In a fleet
    (--store, --host-id): it serves one host, reaching other hosts' machines through
    their proxies.
    """
    from roost.proxy.server import ProxyConfig, ProxyError
    from roost.roles import serving

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if bool(store_url) != bool(host_id):
        raise click.UsageError("--store and --host-id go together (fleet mode)")
    data_dir = session.data_dir or default_data_dir()
    config = ProxyConfig(
        listen=listen,
        domain=domain,
        region=region,
        autostop_interval=autostop_interval,
        tls_listen=tls_listen,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_dir=data_dir / "tls",
    )
    if store_url and host_id:
        from roost.net.ipam import MachineAddressing
        from roost.roles.proxy import serve_in_fleet
        from roost.store import StoreError

        config.host_id = host_id
        config.backhaul_listen = backhaul_listen or f"{listen.rpartition(':')[0]}:8081"
        wildcard = config.backhaul_listen.rpartition(":")[0] in ("0.0.0.0", "[::]", "::", "")
        if wildcard and not backhaul_advertise:
            raise click.UsageError(
                "give --backhaul-advertise HOST:PORT: the address other hosts reach this "
                "proxy at (the backhaul listens on a wildcard address)"
            )
        config.backhaul_advertise = backhaul_advertise
        addressing = MachineAddressing(v4_subnet, v6_subnet)
        serving.run(lambda: serve_in_fleet(store_url, config, addressing), (ProxyError, StoreError))
        return
    from roost.roles.proxy import serve_beside_server

    token = resolve_token(session.token, session.data_dir, os.environ)
    serving.run(
        lambda: serve_beside_server(data_dir, session.api_url, token, config), (ProxyError,)
    )
