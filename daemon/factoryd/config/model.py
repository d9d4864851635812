"""The validated config: immutable values the rest of the daemon reads.

Nothing here reads TOML or reports problems; the readers in this folder
build these values, and every other layer takes them as given. Keeping the
shapes apart from the parsing lets a reader of the daemon see what a config
*is* without wading through how each key is checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from factoryd.config.fleet import FleetSettings
from factoryd.config.web import WebSettings
from factoryd.core.taskspec import TaskSpec
from factoryd.routing.ledger import ScarcityPolicy
from factoryd.routing.model import ArmSpec, PoolSpec
from factoryd.routing.quality import QualityPolicy
from factoryd.routing.scoring import RoutingPolicy
from factoryd.routing.telemetry import HealthPolicy

#: Default cap on a task's `prompt_file` (`[daemon] prompt_max_bytes`).
PROMPT_MAX_BYTES = 1024 * 1024

CLIS = ("command", "opencode", "claude", "codex", "gemini")


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    state_dir: Path
    log_dir: Path
    control_socket: Path
    max_concurrent: int = 16
    loop_interval: float = 5.0
    metrics_listen: str = "127.0.0.1:9464"
    log_format: str = "auto"
    log_level: str = "info"
    inherit_env: tuple[str, ...] = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER")
    run_log_max_bytes: int = 16 * 1024 * 1024
    #: The largest `prompt_file` a run may read (checked before reading).
    prompt_max_bytes: int = PROMPT_MAX_BYTES
    retain_runs: float = 7 * 86400.0
    spool_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class ArmLaunch:
    """How to start an arm's CLI; the routing engine never reads this."""

    argv: tuple[str, ...] | None = None
    executable: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    #: Environment variables whose values come from a secret source:
    #: "env:NAME" (the daemon's environment) or "file:/path".
    secrets: tuple[tuple[str, str], ...] = ()
    config_dir: str | None = None
    base_url: str | None = None
    max_concurrent: int | None = None


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    daemon: DaemonSettings
    routing: RoutingPolicy
    scarcity: ScarcityPolicy
    quality: QualityPolicy
    health: HealthPolicy
    telemetry_window: float
    pools: tuple[PoolSpec, ...]
    pool_caps: dict[str, int]
    arms: tuple[ArmSpec, ...]
    launch: dict[str, ArmLaunch]
    tasks: tuple[TaskSpec, ...]
    templates: dict[str, TaskSpec] = field(default_factory=dict)
    #: The `[fleet]` table; None: this host runs alone (no PostgreSQL).
    fleet: FleetSettings | None = None
    web: WebSettings = field(default_factory=WebSettings)

    def arm(self, name: str) -> ArmSpec:
        return next(a for a in self.arms if a.name == name)

    def summary(self) -> str:
        lines = [f"config {self.path}: OK"]
        lines.append(
            f"  strategy {self.routing.strategy}, max_concurrent "
            f"{self.daemon.max_concurrent}, metrics {self.daemon.metrics_listen}"
        )
        lines.append(f"  {len(self.pools)} pool(s):")
        for p in self.pools:
            window = str(p.window) if p.window else "never resets"
            lines.append(
                f"    {p.name:<20} {p.limit:g} {p.unit}, window {window}, k={p.scarcity_k:g}"
            )
        lines.append(f"  {len(self.arms)} arm(s):")
        for a in self.arms:
            state = "" if a.enabled else " (disabled)"
            model = f" {a.provider}/{a.model}" if a.model else ""
            pools = ", ".join(a.pools) or "no pools"
            lines.append(f"    {a.name:<20} {a.cli}{model} [{pools}]{state}")
        lines.append(f"  {len(self.tasks)} task(s):")
        for t in self.tasks:
            arms = ", ".join(t.route.arms) or "any arm"
            extra = f" schedule '{t.schedule}' {t.timezone}" if t.schedule else ""
            state = "" if t.enabled else " (disabled)"
            lines.append(f"    {t.name:<20} {t.kind}{extra}, {t.route.type}, {arms}{state}")
        if self.templates:
            lines.append(f"  {len(self.templates)} template(s): {', '.join(self.templates)}")
        if self.fleet is not None:
            lines.append(self.fleet.summary())
        return "\n".join(lines)
