"""``roost server``: run the platform for this host in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from roost.cli import host_options
from roost.cli.session import Session


@click.command("server")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where state lives [default: the global --data-dir, else $ROOST_DATA_DIR, "
    "/var/lib/roost as root, ~/.local/share/roost otherwise].",
)
@click.option("--api-listen", metavar="HOST:PORT", help="API address [default: 127.0.0.1:4280].")
@click.option("--region", help="This host's region [default: local].")
@host_options.region_aliases
@click.option(
    "--driver",
    type=click.Choice(["runc", "process"]),
    help="How machines run [default: runc when usable, else process].",
)
@click.option(
    "--registry-listen",
    metavar="HOST:PORT",
    help="Local image registry address [default: 127.0.0.1:5000].",
)
@click.option("--no-registry", is_flag=True, help="Run without the local image registry.")
@click.option("--no-demo-images", is_flag=True, help="Do not build the demo images.")
@host_options.cpus
@click.option(
    "--memory",
    "memory_mb",
    type=click.IntRange(min=1),
    metavar="MB",
    help="Schedulable memory [default: the host's, minus 512 MB].",
)
@click.option(
    "--proxy-listen",
    metavar="HOST:PORT",
    help="Where the proxy takes app traffic [default: 0.0.0.0:8080].",
)
@click.option("--no-proxy", is_flag=True, help="Run without the proxy.")
@click.option(
    "--proxy-tls-listen",
    metavar="HOST:PORT",
    help="Where the proxy takes HTTPS traffic [default: 0.0.0.0:8443].",
)
@click.option("--no-proxy-tls", is_flag=True, help="Run the proxy without its HTTPS listener.")
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Certificate (PEM) for HTTPS [default: a self-signed *.DOMAIN one].",
)
@click.option(
    "--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Its key."
)
@click.option(
    "--proxy-domain",
    metavar="DOMAIN",
    help="Apps answer as <app>.DOMAIN on the proxy [default: localhost].",
)
@click.option(
    "--autostop-interval",
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    help="How often the proxy looks for idle machines to stop [default: 120].",
)
@click.option("--host-id", help="This host's id [default: generated once, kept in the data dir].")
@click.option(
    "--insecure-registry",
    "insecure_registries",
    multiple=True,
    metavar="HOST:PORT",
    help="Pull from this registry over plain HTTP (loopback registries always are).",
)
@click.option("--bridge", help="Host bridge for machine networks [default: rst0].")
@click.option("--v4-subnet", metavar="CIDR", help="Machine IPv4 subnet [default: 172.30.0.0/17].")
@click.option("--v6-subnet", metavar="CIDR", help="Machine IPv6 subnet [default: fdaa:0:1::/64].")
@click.option("--netns-prefix", help="Prefix of machine network namespaces [default: rst-].")
@click.option("--cgroup-parent", help="cgroup under which machines run [default: /roost].")
@click.pass_obj
def server(
    session: Session,
    data_dir: Path | None,
    api_listen: str | None,
    region: str | None,
    region_aliases: tuple[str, ...],
    driver: str | None,
    registry_listen: str | None,
    no_registry: bool,
    no_demo_images: bool,
    cpus: int | None,
    memory_mb: int | None,
    proxy_listen: str | None,
    no_proxy: bool,
    proxy_tls_listen: str | None,
    no_proxy_tls: bool,
    tls_cert: Path | None,
    tls_key: Path | None,
    proxy_domain: str | None,
    autostop_interval: float | None,
    host_id: str | None,
    insecure_registries: tuple[str, ...],
    bridge: str | None,
    v4_subnet: str | None,
    v6_subnet: str | None,
    netns_prefix: str | None,
    cgroup_parent: str | None,
) -> None:
    """Run the roost server (API, agent, proxy, registry).

    Runs in the foreground until interrupted; machines keep running across restarts.
    """
    if no_registry and registry_listen:
        raise click.UsageError("--registry-listen and --no-registry exclude each other")
    # Imported here: the server stack takes about a second to import, and no other
    # command needs it.
    from roost.server import ServerConfig, run

    settings: dict[str, Any] = {
        "data_dir": data_dir or session.data_dir,
        "api_listen": api_listen,
        "region": region,
        "region_aliases": region_aliases or None,
        "driver": driver,
        "registry_listen": registry_listen,
        "cpus": cpus,
        "memory_mb": memory_mb,
        "proxy_listen": proxy_listen,
        "proxy_tls_listen": proxy_tls_listen,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "proxy_domain": proxy_domain,
        "autostop_interval": autostop_interval,
        "host_id": host_id,
        "insecure_registries": insecure_registries or None,
        "bridge": bridge,
        "v4_subnet": v4_subnet,
        "v6_subnet": v6_subnet,
        "netns_prefix": netns_prefix,
        "cgroup_parent": cgroup_parent,
    }
    # Unset options keep ServerConfig's own defaults.
    config = ServerConfig(**{k: v for k, v in settings.items() if v is not None})
    if no_registry:
        config.registry_listen = None
    if no_proxy and proxy_listen:
        raise click.UsageError("--proxy-listen and --no-proxy exclude each other")
    if no_proxy:
        config.proxy_listen = None
    if no_proxy_tls or no_proxy:
        config.proxy_tls_listen = None
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if no_demo_images:
        config.seed_demo_images = False
    run(config)
