"""``roost api`` and ``roost agent``: the fleet's processes (``roost server`` is all of
them in one, for a single host)."""

from __future__ import annotations

from pathlib import Path

import click

from roost.cli import host_options
from roost.cli.session import Session, default_data_dir

STORE_HELP = "The fleet's store: etcd://HOST:PORT[,HOST:PORT...] (or sqlite:PATH for one host)."


def _subnet_options(fn: click.decorators.FC) -> click.decorators.FC:
    fn = click.option(
        "--v6-subnet",
        default="fdaa:0:1::/64",
        show_default=True,
        metavar="CIDR",
        help="Machine IPv6 subnet (the same on every host and API).",
    )(fn)
    return click.option(
        "--v4-subnet",
        default="172.30.0.0/17",
        show_default=True,
        metavar="CIDR",
        help="Machine IPv4 subnet (the same on every host and API).",
    )(fn)


@click.command("api")
@click.option("--store", "store_url", required=True, metavar="URL", help=STORE_HELP)
@click.option("--listen", default="127.0.0.1:4280", show_default=True, metavar="HOST:PORT")
@click.option(
    "--region",
    default="local",
    show_default=True,
    help="Where machines go when a create names no region (then anywhere).",
)
@click.option("--no-controller", is_flag=True, help="Never stand for election as controller.")
@_subnet_options
@click.pass_obj
def api(
    session: Session,
    store_url: str,
    listen: str,
    region: str,
    no_controller: bool,
    v4_subnet: str,
    v6_subnet: str,
) -> None:
    """Run the API of a fleet, and stand for election as its controller.

    Run one or more; each serves the whole fleet from the store. The first one on a new
    store creates the admin token and saves it in --data-dir.
    """
    from roost.roles import serving
    from roost.roles.api import ApiConfig, serve_api
    from roost.store import StoreError

    config = ApiConfig(
        store=store_url,
        data_dir=session.data_dir or default_data_dir(),
        listen=listen,
        region=region,
        v4_subnet=v4_subnet,
        v6_subnet=v6_subnet,
        controller=not no_controller,
    )
    serving.run(lambda: serve_api(config), (StoreError,))


@click.command("agent")
@click.option("--store", "store_url", required=True, metavar="URL", help=STORE_HELP)
@click.option("--region", required=True, help="This host's region, e.g. ams.")
@host_options.region_aliases
@click.option("--host-id", help="This host's id [default: generated once, kept in the data dir].")
@host_options.cpus
@click.option(
    "--memory",
    "memory_mb",
    type=click.IntRange(min=1),
    metavar="MB",
    help="Schedulable memory [default: the host's, minus 512 MB].",
)
@click.option(
    "--listen",
    default="0.0.0.0:4281",
    show_default=True,
    metavar="HOST:PORT",
    help="The endpoint the API reaches this host's machines through.",
)
@click.option(
    "--advertise",
    metavar="HOST:PORT",
    help="The endpoint's address as the API dials it [default: --listen].",
)
@click.option(
    "--driver",
    type=click.Choice(["runc", "process"]),
    help="How machines run [default: runc when usable, else process].",
)
@click.option(
    "--insecure-registry",
    "insecure_registries",
    multiple=True,
    metavar="HOST:PORT",
    help="Pull from this registry over plain HTTP.",
)
@click.option("--bridge", default="rst0", show_default=True, help="Bridge for machine networks.")
@click.option("--netns-prefix", default="rst-", show_default=True, help="Machine netns prefix.")
@click.option("--cgroup-parent", default="/roost", show_default=True, help="Machines' cgroup.")
@_subnet_options
@click.pass_obj
def agent(
    session: Session,
    store_url: str,
    region: str,
    region_aliases: tuple[str, ...],
    host_id: str | None,
    cpus: int | None,
    memory_mb: int | None,
    listen: str,
    advertise: str | None,
    driver: str | None,
    insecure_registries: tuple[str, ...],
    bridge: str,
    netns_prefix: str,
    cgroup_parent: str,
    v4_subnet: str,
    v6_subnet: str,
) -> None:
    """Run this host's agent in a fleet: its machines, and the endpoint to reach them.

    Machines keep running when the agent stops; the next agent adopts them.
    """
    from roost.net.iproute import NetworkError
    from roost.roles import serving
    from roost.roles.agent import AgentConfig, serve_agent
    from roost.roles.host import HostConfig
    from roost.runtime import DriverError
    from roost.store import StoreError

    data_dir: Path = session.data_dir or default_data_dir()
    config = AgentConfig(
        store=store_url,
        listen=listen,
        advertise=advertise or "",
        host=HostConfig(
            data_dir=data_dir,
            region=region,
            region_aliases=region_aliases,
            host_id=host_id or "",
            driver=driver,
            insecure_registries=insecure_registries,
            bridge=bridge,
            v4_subnet=v4_subnet,
            v6_subnet=v6_subnet,
            netns_prefix=netns_prefix,
            cgroup_parent=cgroup_parent,
            cpus=cpus or 0,
            memory_mb=memory_mb or 0,
        ),
    )
    serving.run(lambda: serve_agent(config), (StoreError, DriverError, NetworkError))
