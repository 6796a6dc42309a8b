"""``roost proxy``: run the edge proxy on its own, beside a ``roost server``."""

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
) -> None:
    """Run the edge proxy on its own.

    It follows the store of the server whose data dir is --data-dir and asks that
    server's API (--api-url) to start and stop machines.
    """
    from roost.proxy.server import ProxyConfig
    from roost.proxy.standalone import run

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    data_dir = session.data_dir or default_data_dir()
    run(
        data_dir,
        session.api_url,
        resolve_token(session.token, session.data_dir, os.environ),
        ProxyConfig(
            listen=listen,
            domain=domain,
            region=region,
            autostop_interval=autostop_interval,
            tls_listen=tls_listen,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_dir=data_dir / "tls",
        ),
    )
