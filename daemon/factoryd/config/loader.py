"""TOML config -> one immutable, validated `Config`.

Validation collects every problem instead of stopping at the first, and
each problem names the file, the key path (``arms[2].pools[0]``) and what
was expected. Unknown keys are errors, with a suggestion when a known key
is close: a typo must never be silently ignored. Relative paths are taken
relative to the config file, so a config works from any current directory.
"""

from __future__ import annotations

import tomllib
import zoneinfo
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from croniter import croniter

from factoryd.config.tomltable import (
    MAX_COUNT,
    MISSING,
    ConfigError,
    Problem,
    Table,
    describe,
)
from factoryd.config.web import WebSettings, parse_web
from factoryd.core.taskspec import Backoff, MissedPolicy, RestartPolicy, TaskKind, TaskSpec
from factoryd.routing.ledger import ScarcityPolicy
from factoryd.routing.model import ArmSpec, PoolSpec, PoolUnit, Priority, RouteRequest, TaskType
from factoryd.routing.quality import QualityPolicy
from factoryd.routing.scoring import STRATEGIES, RoutingPolicy
from factoryd.routing.telemetry import HealthPolicy
from factoryd.units.durations import DurationError, Period, parse_period

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
        return "\n".join(lines)


def _declared(tables: list[Table]) -> set[str]:
    return {t.data["name"] for t in tables if isinstance(t.data.get("name"), str)}


class _Loader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[Problem] = []
        #: Names declared in the file, valid or not: references to them do not
        #: cascade into a second error when the declaration itself is bad.
        self.declared_pools: set[str] = set()
        self.declared_arms: set[str] = set()

    def problem(self, key: str, message: str) -> None:
        self.problems.append(Problem(str(self.path), key, message))

    def path_of(self, text: str) -> Path:
        p = Path(text).expanduser()
        return p if p.is_absolute() else (self.path.parent / p).resolve()

    def items(self, root: Table, name: str) -> list[Table]:
        value = root.raw(name)
        if value is MISSING:
            return []
        if not isinstance(value, list):
            root.problem(name, f"expected an array of tables ([[{name}]]), got {describe(value)}")
            return []
        return [Table(self, v, f"{name}[{i}]") for i, v in enumerate(value)]

    def unique(self, tables: list[Table], values: list[Any], what: str) -> None:
        seen: dict[str, int] = {}
        for table, value in zip(tables, values, strict=True):
            if not isinstance(value, str):
                continue
            if value in seen:
                table.problem(
                    "name", f"duplicate {what} name {value!r} (also {what}s[{seen[value]}])"
                )
            else:
                seen[value] = len(seen)

    # -- sections ----------------------------------------------------------

    def daemon(self, t: Table) -> DaemonSettings:
        state_dir = self.path_of(t.string("state_dir", "state"))
        log_dir = self.path_of(t.string("log_dir", str(state_dir / "logs")))
        socket = self.path_of(t.string("control_socket", str(state_dir / "control.sock")))
        spool = t.string("spool_dir", None)
        listen = t.string("metrics_listen", "127.0.0.1:9464")
        if isinstance(listen, str) and listen != "off":
            host, sep, port = listen.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                t.problem("metrics_listen", f"expected HOST:PORT or 'off', got {listen!r}")
        settings = DaemonSettings(
            state_dir=state_dir,
            log_dir=log_dir,
            control_socket=socket,
            max_concurrent=t.number("max_concurrent", 16, lo=1, hi=MAX_COUNT, integer=True),
            loop_interval=t.duration("loop_interval", 5.0),
            metrics_listen=listen,
            log_format=t.string("log_format", "auto", ("auto", "json", "console")),
            log_level=t.string("log_level", "info", ("debug", "info", "warning", "error")),
            inherit_env=t.str_list(
                "inherit_env", ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER")
            ),
            run_log_max_bytes=t.size("run_log_max_bytes", 16 * 1024 * 1024),
            retain_runs=t.duration("retain_runs", 7 * 86400.0),
            spool_dir=self.path_of(spool) if isinstance(spool, str) else None,
        )
        if settings.loop_interval is not None and settings.loop_interval < 0.05:
            t.problem("loop_interval", "expected at least 50ms (it is a safety net, not a poll)")
        t.done()
        return settings

    def routing(
        self, t: Table
    ) -> tuple[RoutingPolicy, ScarcityPolicy, QualityPolicy, HealthPolicy, float]:
        d = RoutingPolicy()
        weights = t.sub("weights")
        quality = t.sub("quality")
        health = t.sub("health")
        scarcity = t.sub("scarcity")
        policy = RoutingPolicy(
            strategy=t.string("strategy", d.strategy, tuple(STRATEGIES)),
            task_fit_weight=weights.number("task_fit", d.task_fit_weight, hi=1000),
            throughput_weight=weights.number("throughput", d.throughput_weight, hi=1000),
            latency_weight=weights.number("latency", d.latency_weight, hi=1000),
            consumption_weight=weights.number("consumption", d.consumption_weight, hi=1000),
            cost_weight=weights.number("cost", d.cost_weight, hi=10),
            max_staleness=t.duration("max_staleness", d.max_staleness, allow_none=True),
            session_token_budget=t.number(
                "session_token_budget", d.session_token_budget, lo=1, integer=True
            ),
            throughput_target=t.number("throughput_target", d.throughput_target, exclusive_lo=True),
            latency_target=t.duration("latency_target", d.latency_target) or d.latency_target,
            reservation_ttl=t.duration("reservation_ttl", d.reservation_ttl),
        )
        weights.done()
        q = QualityPolicy(
            alpha=quality.number("alpha", 0.3, hi=1.0, exclusive_lo=True),
            min_observations=quality.number("min_observations", 3, hi=MAX_COUNT, integer=True),
            observed_weight=quality.number("observed_weight", 0.7, hi=1.0),
        )
        quality.done()
        h = HealthPolicy(
            failure_threshold=health.number("failure_threshold", 3, lo=1, hi=1000, integer=True),
            cooldown=health.duration("cooldown", 300.0),
            max_cooldown=health.duration("max_cooldown", 3600.0),
        )
        health.done()
        s = ScarcityPolicy(
            max_multiplier=scarcity.number("max_multiplier", 100.0, lo=1.0, hi=1e6),
            discount_window=scarcity.duration("discount_window", 3600.0),
            discount_min_fraction=scarcity.number("discount_min_fraction", 0.3, hi=1.0),
            discount=scarcity.number("discount", 0.5, hi=1.0, exclusive_lo=True),
        )
        scarcity.done()
        window = t.duration("telemetry_window", 3600.0)
        if not window:
            t.problem("telemetry_window", "must be longer than zero")
            window = 3600.0
        t.done()
        return policy, s, q, h, window

    def pool(self, t: Table) -> tuple[PoolSpec | None, int | None]:
        name = t.name("name")
        unit = t.string("unit", None, tuple(u.value for u in PoolUnit))
        if unit is None and "unit" not in t.data:
            t.problem("unit", "is required: one of tokens, runs, usd")
        limit = t.number("limit", MISSING, exclusive_lo=True)
        window: Period | None = None
        raw = t.raw("window")
        if raw is not MISSING and raw != "none":
            if not isinstance(raw, str):
                t.problem(
                    "window", f"expected a period such as '5h', '7d' or '1mo', got {describe(raw)}"
                )
            else:
                try:
                    window = parse_period(raw)
                except DurationError as exc:
                    t.problem("window", str(exc))
                else:
                    if not window.months and window.seconds < 1:
                        t.problem("window", "expected at least 1s")
                        window = None
        anchor = self._anchor(t)
        spec_k = t.number("scarcity_k", 2.0, hi=16)
        backoff = t.duration("limit_backoff", 900.0) or 900.0
        backoff_max = t.duration("limit_backoff_max", 6 * 3600.0) or 6 * 3600.0
        cap = t.number("max_concurrent", None, lo=1, hi=MAX_COUNT, integer=True)
        t.done()
        if not isinstance(name, str) or unit is None or limit is None:
            return None, None
        return (
            PoolSpec(
                name=name,
                unit=PoolUnit(unit),
                limit=float(limit),
                window=window,
                anchor=anchor,
                scarcity_k=float(spec_k),
                limit_backoff=backoff,
                limit_backoff_max=max(backoff, backoff_max),
            ),
            cap,
        )

    def _anchor(self, t: Table) -> float:
        raw = t.raw("anchor")
        if raw is MISSING:
            return 0.0
        if isinstance(raw, datetime):
            value = raw if raw.tzinfo else raw.replace(tzinfo=zoneinfo.ZoneInfo("UTC"))
            return value.timestamp()
        if isinstance(raw, date):
            return datetime(
                raw.year, raw.month, raw.day, tzinfo=zoneinfo.ZoneInfo("UTC")
            ).timestamp()
        if isinstance(raw, str):
            try:
                value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            except ValueError:
                pass
            else:
                if value.tzinfo is None:
                    value = value.replace(tzinfo=zoneinfo.ZoneInfo("UTC"))
                return value.timestamp()
        t.problem(
            "anchor",
            f"expected an RFC 3339 date-time such as 2026-01-01T09:00:00Z, got {describe(raw)}",
        )
        return 0.0

    def arm(self, t: Table, pools: dict[str, PoolSpec]) -> tuple[ArmSpec | None, ArmLaunch]:
        name = t.name("name")
        cli = t.string("cli", MISSING, CLIS)
        pool_names = t.str_list("pools")
        raw_pools = t.data.get("pools", [])
        pools_ok = isinstance(raw_pools, list) and all(isinstance(x, str) for x in raw_pools)
        for i, pool in enumerate(pool_names):
            # A declared but invalid pool has its own error; do not cascade.
            if pool not in pools and pool not in self.declared_pools:
                known = ", ".join(pools) or "none are defined"
                self.problem(f"{t.key('pools')}[{i}]", f"no pool named {pool!r} (known: {known})")
        if len(set(pool_names)) != len(pool_names):
            t.problem("pools", "lists a pool more than once")
        rates_table = t.sub("rates")
        rates: dict[str, float] = {}
        for pool in list(rates_table.data):
            rate = rates_table.number(pool, 1.0, hi=1e6)
            if pools_ok and pool not in pool_names:
                rates_table.problem(pool, "is not one of this arm's pools")
            rates[pool] = float(rate)
        thinking = t.str_list("thinking")
        max_complexity = t.number("max_complexity", None, hi=1.0)
        argv = t.str_list("argv") if "argv" in t.data else None
        if t.data.get("argv") == []:
            t.problem("argv", "must not be empty")
        spec = ArmSpec(
            name=name,
            cli=cli or "command",
            provider=t.string("provider", ""),
            model=t.string("model", ""),
            pools=pool_names,
            rates=rates,
            context_window=t.number("context_window", 0, hi=1e9, integer=True),
            tools=t.boolean("tools", True),
            vision=t.boolean("vision", False),
            thinking=thinking,
            local=t.boolean("local", False),
            cost_per_1k_input=float(t.number("cost_per_1k_input", 0.0, hi=1e6)),
            cost_per_1k_output=float(t.number("cost_per_1k_output", 0.0, hi=1e6)),
            max_complexity=None if max_complexity is None else float(max_complexity),
            enabled=t.boolean("enabled", True),
            fallback=t.boolean("fallback", True),
        )
        secrets = t.str_map("secrets")
        for var, source in secrets:
            if not (source.startswith("env:") or source.startswith("file:")) or len(source) < 5:
                self.problem(
                    f"{t.key('secrets')}.{var}",
                    f"expected 'env:NAME' or 'file:/path', got {source!r}",
                )
        launch = ArmLaunch(
            argv=argv,
            executable=t.string("executable", None),
            args=t.str_list("args"),
            env=t.str_map("env"),
            secrets=secrets,
            config_dir=self._opt_path(t, "config_dir"),
            base_url=t.string("base_url", None),
            max_concurrent=t.number("max_concurrent", None, lo=1, hi=MAX_COUNT, integer=True),
        )
        t.done()
        rates_table.done()
        if not isinstance(name, str) or cli is None:
            return None, launch
        return spec, launch

    def _opt_path(self, t: Table, name: str) -> str | None:
        value = t.string(name, None)
        return None if value is None else str(self.path_of(value))

    def task(
        self,
        t: Table,
        arms: dict[str, ArmSpec],
        launch: dict[str, ArmLaunch],
        base: TaskSpec | None = None,
        *,
        template: bool = False,
    ) -> TaskSpec | None:
        name = t.name("name") if base is None else t.string("name", base.name)
        kind_default = base.kind.value if base else "service"
        kind = t.string("kind", kind_default, tuple(k.value for k in TaskKind))
        schedule = t.string("schedule", base.schedule if base else None)
        tz = t.string("timezone", base.timezone if base else "UTC")
        if isinstance(tz, str):
            try:
                zoneinfo.ZoneInfo(tz)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                t.problem(
                    "timezone", f"unknown time zone {tz!r} (use an IANA name like Europe/Paris)"
                )
        if kind == "scheduled" and not schedule:
            t.problem("schedule", "is required for a scheduled task (a cron expression)")
        if schedule is not None and kind != "scheduled":
            t.problem("schedule", 'only scheduled tasks take a schedule (set kind = "scheduled")')
        if isinstance(schedule, str) and not croniter.is_valid(schedule):
            t.problem("schedule", f"not a valid cron expression: {schedule!r}")
        r0 = base.route if base else None
        allowed = t.str_list("arms", r0.arms if r0 else ())
        for i, arm in enumerate(allowed):
            if arm not in arms and arm not in self.declared_arms:
                self.problem(
                    f"{t.key('arms')}[{i}]",
                    f"no arm named {arm!r} (known: {', '.join(arms) or 'none'})",
                )
        effort = t.string("effort", r0.effort if r0 else None)
        route = RouteRequest(
            task=name if isinstance(name, str) else "?",
            type=TaskType(
                t.string(
                    "type", str(r0.type) if r0 else "generation", tuple(x.value for x in TaskType)
                )
            ),
            priority=Priority(
                t.string(
                    "priority",
                    str(r0.priority) if r0 else "normal",
                    tuple(p.value for p in Priority),
                )
            ),
            estimated_tokens=t.number(
                "estimated_tokens", r0.estimated_tokens if r0 else 0, hi=1e12, integer=True
            ),
            requires_tools=t.boolean("requires_tools", r0.requires_tools if r0 else False),
            requires_vision=t.boolean("requires_vision", r0.requires_vision if r0 else False),
            complexity=float(t.number("complexity", r0.complexity if r0 else 0.0, hi=1.0)),
            effort=effort,
            arms=allowed,
            min_quality=t.number("min_quality", r0.min_quality if r0 else None, hi=1.0),
        )
        prompt = t.string("prompt", base.prompt if base else None)
        prompt_file = self._opt_path(t, "prompt_file") or (base.prompt_file if base else None)
        if prompt is not None and "prompt_file" in t.data:
            t.problem("prompt_file", "give either prompt or prompt_file, not both")
        argv = t.str_list("argv") if "argv" in t.data else (base.argv if base else None)
        if t.data.get("argv") == []:
            t.problem("argv", "must not be empty")
        b0 = base.backoff if base else Backoff()
        bt = t.sub("backoff")
        backoff = Backoff(
            initial=bt.duration("initial", b0.initial),
            max=bt.duration("max", b0.max),
            jitter=bt.boolean("jitter", b0.jitter),
            reset_after=bt.duration("reset_after", b0.reset_after),
        )
        if (
            backoff.initial is not None
            and backoff.max is not None
            and backoff.max < backoff.initial
        ):
            bt.problem("max", "must not be shorter than backoff.initial")
        bt.done()
        default_restart = (
            base.restart.value if base else ("always" if kind == "service" else "on-failure")
        )
        workdir = self._opt_path(t, "workdir") or (base.workdir if base else None)
        env = t.str_map("env") or (base.env if base else ())
        spec = TaskSpec(
            name=name if isinstance(name, str) else "?",
            kind=TaskKind(kind or "service"),
            route=route,
            prompt=prompt,
            prompt_file=prompt_file,
            argv=argv,
            workdir=workdir,
            env=env,
            inherit_env=t.str_list("inherit_env", base.inherit_env if base else ()),
            timeout=t.duration("timeout", base.timeout if base else None, allow_none=True),
            stall_timeout=t.duration(
                "stall_timeout", base.stall_timeout if base else None, allow_none=True
            ),
            restart=RestartPolicy(
                t.string("restart", default_restart, tuple(r.value for r in RestartPolicy))
            ),
            max_restarts=t.number(
                "max_restarts", base.max_restarts if base else 5, hi=MAX_COUNT, integer=True
            ),
            restart_window=t.duration("restart_window", base.restart_window if base else 600.0),
            backoff=backoff,
            stop_grace=t.duration("stop_grace", base.stop_grace if base else 10.0),
            isolate_home=t.boolean("isolate_home", base.isolate_home if base else False),
            stdin_prompt=t.boolean("stdin_prompt", base.stdin_prompt if base else False),
            schedule=schedule,
            timezone=tz or "UTC",
            missed=MissedPolicy(
                t.string(
                    "missed",
                    base.missed.value if base else "once",
                    tuple(m.value for m in MissedPolicy),
                )
            ),
            missed_cap=t.number(
                "missed_cap", base.missed_cap if base else 10, lo=1, hi=10_000, integer=True
            ),
            enabled=t.boolean("enabled", base.enabled if base else True),
        )
        for key, value in (("timeout", spec.timeout), ("stall_timeout", spec.stall_timeout)):
            if value == 0:
                t.problem(key, "must be longer than zero (or 'none')")
        # A task that may land on a `command` arm needs a program to run.
        candidates = [arms[a] for a in allowed if a in arms] or list(arms.values())
        if not template and spec.argv is None:
            for arm in candidates:
                if arm.cli == "command" and launch.get(arm.name, ArmLaunch()).argv is None:
                    t.problem(
                        "argv",
                        f"is required: arm {arm.name!r} is a command arm without argv",
                    )
                    break
        t.done()
        return spec

    def load(self, data: dict[str, Any]) -> Config | None:
        root = Table(self, data, "")
        daemon = self.daemon(root.sub("daemon"))
        routing, scarcity, quality, health, telemetry_window = self.routing(root.sub("routing"))
        pool_tables = self.items(root, "pools")
        arm_tables = self.items(root, "arms")
        self.declared_pools = _declared(pool_tables)
        self.declared_arms = _declared(arm_tables)
        parsed_pools = [self.pool(t) for t in pool_tables]
        self.unique(pool_tables, [t.data.get("name") for t in pool_tables], "pool")
        pools = {p.name: p for p, _ in parsed_pools if p is not None}
        pool_caps = {p.name: cap for p, cap in parsed_pools if p is not None and cap is not None}
        parsed_arms = [(t, *self.arm(t, pools)) for t in arm_tables]
        self.unique(arm_tables, [t.data.get("name") for t in arm_tables], "arm")
        arms = {a.name: a for _, a, _ in parsed_arms if a is not None}
        launch = {a.name: ln for _, a, ln in parsed_arms if a is not None}
        for t, arm, ln in parsed_arms:
            if arm is not None and arm.cli != "command" and ln.argv is not None:
                t.problem("argv", f"only command arms take argv; a {arm.cli} arm builds its own")
        template_tables = self.items(root, "templates")
        templates: dict[str, TaskSpec] = {}
        for t in template_tables:
            spec = self.task(t, arms, launch, template=True)
            if spec is not None:
                templates[spec.name] = spec
        self.unique(template_tables, [t.data.get("name") for t in template_tables], "template")
        task_tables = self.items(root, "tasks")
        tasks = [self.task(t, arms, launch) for t in task_tables]
        self.unique(task_tables, [t.data.get("name") for t in task_tables], "task")
        web = parse_web(root.sub("web"), self.path_of, daemon.metrics_listen)
        root.done()
        if self.problems:
            return None
        return Config(
            path=self.path,
            daemon=daemon,
            routing=routing,
            scarcity=scarcity,
            quality=quality,
            health=health,
            telemetry_window=telemetry_window,
            pools=tuple(pools.values()),
            pool_caps=pool_caps,
            arms=tuple(arms.values()),
            launch=launch,
            tasks=tuple(t for t in tasks if t is not None),
            templates=templates,
            web=web,
        )


def parse_config(text: bytes | str, path: Path) -> Config:
    """Validate config text; raise ConfigError listing every problem."""
    loader = _Loader(path)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = text[: exc.start].count(b"\n") + 1
            raise ConfigError(
                [Problem(str(path), f"(line {line})", f"invalid UTF-8 at byte {exc.start}")]
            ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(str(path), "(syntax)", f"invalid TOML: {exc}")]) from None
    config = loader.load(data)
    if config is None:
        raise ConfigError(loader.problems)
    return config


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; raise ConfigError naming file and key."""
    p = Path(path).expanduser().resolve()
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError([Problem(str(p), "(file)", f"cannot read: {exc.strerror}")]) from None
    return parse_config(raw, p)


def parse_task_override(
    config: Config,
    data: dict[str, Any],
    *,
    template: str | None,
    where: str,
    route_only: bool = False,
) -> TaskSpec:
    """A submitted task: a template plus overrides, or a full spec. Raises ConfigError."""
    loader = _Loader(Path(where))
    arms = {a.name: a for a in config.arms}
    base = None
    if template is not None:
        base = config.templates.get(template)
        if base is None:
            known = ", ".join(config.templates) or "none are defined"
            raise ConfigError(
                [Problem(where, "template", f"no template named {template!r} (known: {known})")]
            )
    spec = loader.task(Table(loader, data, ""), arms, config.launch, base, template=route_only)
    if loader.problems or spec is None:
        raise ConfigError(loader.problems)
    return spec


__all__ = [
    "ArmLaunch",
    "Config",
    "ConfigError",
    "DaemonSettings",
    "Problem",
    "load_config",
    "parse_config",
    "parse_task_override",
]
