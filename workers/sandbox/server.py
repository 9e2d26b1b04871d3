"""`push-server sandbox`: run the fake APNs, FCM and HMS services and their admin endpoint.

Once every port listens, one line `SANDBOX READY {json}` goes to stdout with the service
URLs and the CA file, so scripts and test fixtures can wait for it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import uvloop
from aiohttp import web

from workers.sandbox.admin import AdminApi
from workers.sandbox.apns import ApnsService
from workers.sandbox.certificates import ensure_certificates, server_ssl_context
from workers.sandbox.counters import Counters
from workers.sandbox.faults import FaultBook
from workers.sandbox.fcm import FcmService
from workers.sandbox.hms import HmsService
from workers.sandbox.http_server import SandboxServer, Service
from workers.sandbox.state import Behaviour, SandboxState

logger = logging.getLogger(__name__)

READY_PREFIX = "SANDBOX READY "
DEFAULT_HOST = "127.0.0.1"
DEFAULT_ADMIN_PORT = 52440
DEFAULT_APNS_PORT = 52443
DEFAULT_APNS_DEVELOPMENT_PORT = 52444
DEFAULT_FCM_PORT = 52445
DEFAULT_HMS_PORT = 52446
DEFAULT_STATE_DIR = Path(".run/sandbox")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="push-server sandbox",
        description="Run local fakes of APNs, FCM HTTP v1 and Huawei Push Kit over TLS.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on")
    parser.add_argument(
        "--apns-port",
        type=int,
        default=DEFAULT_APNS_PORT,
        help="APNs production environment port (0 picks a free port)",
    )
    parser.add_argument(
        "--apns-development-port",
        type=int,
        default=DEFAULT_APNS_DEVELOPMENT_PORT,
        help="APNs development environment port; its responses carry apns-unique-id",
    )
    parser.add_argument(
        "--fcm-port", type=int, default=DEFAULT_FCM_PORT, help="FCM send and OAuth token port"
    )
    parser.add_argument(
        "--hms-port", type=int, default=DEFAULT_HMS_PORT, help="HMS send and OAuth token port"
    )
    parser.add_argument(
        "--admin-port", type=int, default=DEFAULT_ADMIN_PORT, help="plain-HTTP admin API port"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="directory for ca.pem and the server certificate",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault-rule RNG")
    parser.add_argument(
        "--count-tokens",
        action="store_true",
        help="count accepted sends per device token (about 80 bytes per distinct token)",
    )
    parser.add_argument(
        "--no-markers",
        action="store_true",
        help="turn off the built-in token markers (tokens ending in 0000dead and so on)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level, e.g. DEBUG or INFO")
    return parser


def main(argv: Sequence[str]) -> int:
    """Run the sandbox until SIGINT or SIGTERM; return the process exit code."""
    arguments = build_parser().parse_args(list(argv))
    logging.basicConfig(
        level=arguments.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        uvloop.run(_serve(arguments))
    except OSError as error:
        logger.error("sandbox failed to start: %s", error)
        return 1
    return 0


async def _serve(arguments: argparse.Namespace) -> None:
    state = SandboxState(
        faults=FaultBook(arguments.seed),
        counters=Counters(count_tokens=arguments.count_tokens),
        behaviour=Behaviour(markers=not arguments.no_markers),
    )
    paths = ensure_certificates(arguments.state_dir)
    http2_only = server_ssl_context(paths, ["h2"])
    http2_or_1 = server_ssl_context(paths, ["h2", "http/1.1"])

    apns_production = ApnsService(state, "production")
    apns_development = ApnsService(state, "development")
    fcm = FcmService(state)
    hms = HmsService(state)
    host = arguments.host
    listeners: list[tuple[str, Service, int, Any]] = [
        ("apns", apns_production, arguments.apns_port, http2_only),
        ("apns", apns_development, arguments.apns_development_port, http2_only),
        ("fcm", fcm, arguments.fcm_port, http2_or_1),
        ("hms", hms, arguments.hms_port, http2_or_1),
    ]

    servers: dict[str, list[SandboxServer]] = {"apns": [], "fcm": [], "hms": []}
    ports: dict[str, int] = {}
    for provider, service, port, context in listeners:
        server = SandboxServer(service, context)
        ports[service.name] = await server.start(host, port)
        servers[provider].append(server)

    url_host = f"[{host}]" if ":" in host else host
    fcm_url = f"https://{url_host}:{ports['fcm']}"
    fcm.token_audiences |= {f"{fcm_url}/token", f"https://localhost:{ports['fcm']}/token"}
    info: dict[str, Any] = {
        "apns_url": f"https://{url_host}:{ports['apns-production']}",
        "apns_development_url": f"https://{url_host}:{ports['apns-development']}",
        "fcm_url": fcm_url,
        "fcm_token_url": f"{fcm_url}/token",
        "hms_url": f"https://{url_host}:{ports['hms']}",
        "hms_token_url": f"https://{url_host}:{ports['hms']}/oauth2/v3/token",
        "ca_file": str(paths.ca_file.resolve()),
    }

    admin = AdminApi(state, servers, info)
    runner = web.AppRunner(admin.build_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, arguments.admin_port)
    await site.start()
    admin_port = runner.addresses[0][1]
    info["admin_url"] = f"http://{url_host}:{admin_port}"

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)

    print(READY_PREFIX + orjson.dumps(info).decode(), flush=True)
    logger.info("sandbox ready: %s", info)
    await stop.wait()

    logger.info("sandbox stopping")
    await runner.cleanup()
    for server_list in servers.values():
        for server in server_list:
            await server.stop()
