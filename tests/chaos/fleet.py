"""The daemons of a round: `outbox run` subprocesses, each sending to its own simulator port, so
that the simulator's log says which process sent what.

Every process started is registered with the session's reaper and SIGKILLed at the latest when
the session ends: nothing outlives the test run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

OUTBOX = Path(sys.executable).parent / "outbox"
TOKEN = "chaos-token"
PHONE = "1234567890"
# Short leases and delays so that a round takes seconds; pacing lifted (the rounds measure
# correctness, not Meta's limits).
FLAGS = {
    "--lease-seconds": "2",
    "--concurrency": "16",
    "--batch-size": "50",
    "--rate": "5000",
    "--pair-burst": "1000",
    "--pair-interval": "0.5",
    "--retry-delay": "0.2",
    "--poll-interval": "0.5",
    "--pause-probe": "1",
    "--max-attempts": "25",
}


@dataclass(eq=False)
class Daemon:
    """One `outbox run` process; `host` (its simulator endpoint) names the requests it sent."""

    name: str
    host: str
    log: Path
    process: asyncio.subprocess.Process
    drain: bool = False
    killed_at: float | None = None  # when it was SIGKILLed

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Fleet:
    """Starts, kills and stops the daemons of one round; close() leaves none running."""

    endpoint: Callable[[], Awaitable[str]]  # a new simulator port for each daemon
    workdir: Path
    reaper: list[asyncio.subprocess.Process]  # the session's: it kills what is left
    daemons: list[Daemon] = field(default_factory=list)

    async def spawn(
        self,
        database_url: str,
        *,
        token: str = TOKEN,
        drain: bool = False,
        flags: dict[str, str] | None = None,
        environ: dict[str, str] | None = None,
    ) -> Daemon:
        """Start `outbox run` (FLAGS, then `flags`) with the environment it documents."""
        url = await self.endpoint()
        name = f"{'drain' if drain else 'daemon'}-{len(self.daemons) + 1}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "META_"))}
        env.update(
            OUTBOX_DATABASE_URL=database_url,
            META_ACCESS_TOKEN=token,
            META_PHONE_NUMBER_ID=PHONE,
            META_GRAPH_API_URL=url,
            OUTBOX_MEDIA_MODE="link",  # the load links to hosts that do not exist
        )
        env.update(environ or {})
        args = [item for pair in {**FLAGS, **(flags or {})}.items() for item in pair]
        log = self.workdir / f"{name}.log"
        with log.open("wb") as output:
            process = await asyncio.create_subprocess_exec(
                str(OUTBOX),
                "run",
                *args,
                *(["--drain"] if drain else []),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
            )
        self.reaper.append(process)
        daemon = Daemon(name, url.split("://", 1)[1], log, process, drain)
        self.daemons.append(daemon)
        return daemon

    async def kill(self, daemon: Daemon) -> None:
        """SIGKILL: no shutdown, no release; its in-flight parts stay unrecorded."""
        if daemon.alive:
            daemon.process.send_signal(signal.SIGKILL)
            daemon.killed_at = time.time()
        await daemon.process.wait()

    async def stop(self, daemon: Daemon, within: float = 60.0) -> int | None:
        """SIGTERM and wait; the exit code, or None when it had to be SIGKILLed."""
        if daemon.alive:
            daemon.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(daemon.process.wait(), within)
        except TimeoutError:
            await self.kill(daemon)
            return None

    async def stop_all(self) -> list[Daemon]:
        """Stop every daemon still running but drains; those that did not exit 0. A daemon
        still starting dies of the SIGTERM itself (no handler yet, nothing claimed): that
        counts as a clean exit."""
        running = [daemon for daemon in self.daemons if daemon.alive and not daemon.drain]
        codes = await asyncio.gather(*(self.stop(daemon) for daemon in running))
        clean = (0, -signal.SIGTERM)
        return [daemon for daemon, code in zip(running, codes, strict=True) if code not in clean]

    def kill_times(self) -> dict[str, float]:
        """When each SIGKILLed daemon died, by its simulator host."""
        return {d.host: d.killed_at for d in self.daemons if d.killed_at is not None}

    async def close(self) -> None:
        for daemon in self.daemons:
            await self.kill(daemon)
