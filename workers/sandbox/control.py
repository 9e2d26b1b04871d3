"""Start and steer a sandbox from Python: for tests, demos and benchmarks.

Typical use::

    with SandboxProcess() as sandbox:          # free ports, temporary state directory
        key = ApnsSigningKey.generate()
        sandbox.admin.register_apns_key(key)
        ... point the client at sandbox.urls.apns_url, trusting sandbox.urls.ca_file ...
        assert sandbox.admin.counters()["accepted"]["apns"] == 1

Every admin method has an async twin with an `a` prefix (`await admin.acounters()`), which
runs the blocking call in a thread so an event loop under test keeps running.
"""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from workers.sandbox.credentials import ApnsSigningKey, FcmServiceAccount, HmsClientCredentials
from workers.sandbox.server import READY_PREFIX

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


class SandboxStartFailed(RuntimeError):
    """The sandbox process exited or stayed silent before printing its READY line."""


class SandboxAdminError(RuntimeError):
    """The admin endpoint returned an error status."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"sandbox admin request failed with HTTP {status}: {body}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class SandboxUrls:
    """The URLs of a running sandbox; `ca_file` is the CA that signed its certificate."""

    apns_url: str
    apns_development_url: str
    fcm_url: str
    fcm_token_url: str
    hms_url: str
    hms_token_url: str
    admin_url: str
    ca_file: Path

    @classmethod
    def from_ready_json(cls, data: dict[str, Any]) -> SandboxUrls:
        return cls(
            apns_url=data["apns_url"],
            apns_development_url=data["apns_development_url"],
            fcm_url=data["fcm_url"],
            fcm_token_url=data["fcm_token_url"],
            hms_url=data["hms_url"],
            hms_token_url=data["hms_token_url"],
            admin_url=data["admin_url"],
            ca_file=Path(data["ca_file"]),
        )

    def ssl_context(self) -> ssl.SSLContext:
        """Return a client TLS context that trusts the sandbox CA and offers ALPN h2."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.set_alpn_protocols(["h2", "http/1.1"])
        return context


class SandboxAdmin:
    """Client of the sandbox admin endpoint (JSON over plain HTTP)."""

    def __init__(self, admin_url: str, timeout_s: float = 10.0) -> None:
        self.admin_url = admin_url.rstrip("/")
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send one admin request and return the decoded JSON response."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.admin_url + path,
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            raise SandboxAdminError(error.code, error.read().decode("utf-8", "replace")) from error

    def register_apns_key(self, key: ApnsSigningKey, environment: str | None = None) -> None:
        self.request("POST", "/apps/apns", key.registration(environment))

    def register_fcm_account(self, account: FcmServiceAccount) -> None:
        self.request("POST", "/apps/fcm", account.registration())

    def register_hms_app(self, client: HmsClientCredentials) -> None:
        self.request("POST", "/apps/hms", client.registration())

    def add_fault(
        self,
        provider: str,
        outcome: str | None = None,
        *,
        token: str | None = None,
        probability: float = 1.0,
        latency_ms: float = 0.0,
        retry_after: int | str | None = None,
        retry_after_as_date: bool = False,
        count: int | None = None,
    ) -> int:
        """Add a fault rule (see docs/sandbox.md for outcomes) and return its rule ID."""
        rule = {
            "provider": provider,
            "outcome": outcome,
            "token": token,
            "probability": probability,
            "latency_ms": latency_ms,
            "retry_after": retry_after,
            "retry_after_as_date": retry_after_as_date,
            "count": count,
        }
        answer = self.request("POST", "/faults", rule)
        return int(answer["rule_id"])

    def remove_fault(self, rule_id: int) -> None:
        self.request("DELETE", f"/faults/{rule_id}")

    def clear_faults(self) -> None:
        self.request("DELETE", "/faults")

    def set_connection_policy(
        self,
        provider: str,
        *,
        max_concurrent_streams: int | None = None,
        goaway_after_streams: int | None = None,
        clear_goaway: bool = False,
    ) -> dict[str, Any]:
        """Change stream limit or GOAWAY-after-N-streams; open connections get new SETTINGS."""
        body: dict[str, Any] = {"clear_goaway": clear_goaway}
        if max_concurrent_streams is not None:
            body["max_concurrent_streams"] = max_concurrent_streams
        if goaway_after_streams is not None:
            body["goaway_after_streams"] = goaway_after_streams
        answer: dict[str, Any] = self.request("PUT", f"/connections/{provider}", body)
        return answer

    def update_settings(self, **settings: Any) -> dict[str, Any]:
        """Change behaviour switches, e.g. `update_settings(count_tokens=True, markers=False)`."""
        answer: dict[str, Any] = self.request("PATCH", "/settings", settings)
        return answer

    def counters(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.request("GET", "/counters")
        return answer

    def token_counts(self, provider: str, tokens: Sequence[str]) -> dict[str, int]:
        """Return accepted sends per token; needs `count_tokens` switched on first."""
        answer: dict[str, int] = self.request(
            "POST", "/counters/tokens", {"provider": provider, "tokens": list(tokens)}
        )
        return answer

    def set_clock_offset(self, offset_s: float) -> None:
        """Shift the sandbox clock, e.g. 3700 makes every provider token an hour old."""
        self.request("PUT", "/clock", {"offset_s": offset_s})

    def reset(self, everything: bool = False) -> None:
        """Zero the counters; `everything` also drops apps, rules, policies and settings."""
        self.request("POST", "/reset", {"everything": everything})

    async def arequest(self, method: str, path: str, body: Any = None) -> Any:
        return await asyncio.to_thread(self.request, method, path, body)

    async def aregister_apns_key(self, key: ApnsSigningKey, environment: str | None = None) -> None:
        await asyncio.to_thread(self.register_apns_key, key, environment)

    async def aregister_fcm_account(self, account: FcmServiceAccount) -> None:
        await asyncio.to_thread(self.register_fcm_account, account)

    async def aregister_hms_app(self, client: HmsClientCredentials) -> None:
        await asyncio.to_thread(self.register_hms_app, client)

    async def aadd_fault(self, provider: str, outcome: str | None = None, **rule: Any) -> int:
        return await asyncio.to_thread(lambda: self.add_fault(provider, outcome, **rule))

    async def aclear_faults(self) -> None:
        await asyncio.to_thread(self.clear_faults)

    async def aset_connection_policy(self, provider: str, **policy: Any) -> dict[str, Any]:
        return await asyncio.to_thread(lambda: self.set_connection_policy(provider, **policy))

    async def aupdate_settings(self, **settings: Any) -> dict[str, Any]:
        return await asyncio.to_thread(lambda: self.update_settings(**settings))

    async def acounters(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.counters)

    async def atoken_counts(self, provider: str, tokens: Sequence[str]) -> dict[str, int]:
        return await asyncio.to_thread(self.token_counts, provider, tokens)

    async def aset_clock_offset(self, offset_s: float) -> None:
        await asyncio.to_thread(self.set_clock_offset, offset_s)

    async def areset(self, everything: bool = False) -> None:
        await asyncio.to_thread(self.reset, everything)


class SandboxProcess:
    """A sandbox running as a child process (`python -m workers.sandbox`) on free ports.

    `state_dir` defaults to a new temporary directory, removed on `stop()`. The child's log
    goes to `state_dir/sandbox.log`. `extra_args` are passed to the command line, e.g.
    `["--count-tokens", "--seed", "7"]`.
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        extra_args: Sequence[str] = (),
        python: str = sys.executable,
    ) -> None:
        self._own_state_dir = state_dir is None
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="push-sandbox-"))
        self.extra_args = list(extra_args)
        self.python = python
        self.process: subprocess.Popen[bytes] | None = None
        self._urls: SandboxUrls | None = None
        self._admin: SandboxAdmin | None = None

    @property
    def urls(self) -> SandboxUrls:
        if self._urls is None:
            raise RuntimeError("the sandbox is not running; call start() first")
        return self._urls

    @property
    def admin(self) -> SandboxAdmin:
        if self._admin is None:
            raise RuntimeError("the sandbox is not running; call start() first")
        return self._admin

    @property
    def log_file(self) -> Path:
        return self.state_dir / "sandbox.log"

    def start(self, timeout_s: float = 30.0) -> SandboxUrls:
        """Start the process and block until it prints its READY line."""
        command = [
            self.python,
            "-m",
            "workers.sandbox",
            "--state-dir",
            str(self.state_dir),
            *("--apns-port", "0", "--apns-development-port", "0"),
            *("--fcm-port", "0", "--hms-port", "0", "--admin-port", "0"),
            *self.extra_args,
        ]
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPOSITORY_ROOT), environment.get("PYTHONPATH")])
        )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, env=environment
            )
        ready = self._wait_for_ready(timeout_s)
        self._urls = SandboxUrls.from_ready_json(ready)
        self._admin = SandboxAdmin(self._urls.admin_url)
        return self._urls

    async def astart(self, timeout_s: float = 30.0) -> SandboxUrls:
        return await asyncio.to_thread(self.start, timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Send SIGTERM, wait, kill if needed, and remove a temporary state directory."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None and process.stdout is not None:
            process.stdout.close()
        self.process = None
        self._urls = None
        self._admin = None
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    async def astop(self, timeout_s: float = 10.0) -> None:
        await asyncio.to_thread(self.stop, timeout_s)

    def __enter__(self) -> SandboxProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_for_ready(self, timeout_s: float) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + timeout_s
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        buffer = b""
        try:
            while time.monotonic() < deadline:
                if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                    continue
                chunk = os.read(self.process.stdout.fileno(), 65536)
                if not chunk:
                    break
                buffer += chunk
                for line in buffer.decode("utf-8", "replace").splitlines():
                    if line.startswith(READY_PREFIX):
                        result: dict[str, Any] = json.loads(line[len(READY_PREFIX) :])
                        return result
        finally:
            selector.close()

        log_tail = (
            self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
        )
        self.stop()
        raise SandboxStartFailed(
            f"sandbox did not print {READY_PREFIX.strip()} within {timeout_s} s; log:\n{log_tail}"
        )
