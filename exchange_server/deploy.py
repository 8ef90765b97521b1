"""The deploy kit: the original's per-service layout, generated (``exchange-server deploy DIR``).

:func:`generate` writes, under ``DIR``, one directory per service instance::

    <instance>/bin/<service>          start it daemonised under its watchdog (a shell wrapper)
    <instance>/conf/config.json       a complete config in the original's format
    <instance>/log/                   the service's log files (``log.path``)
    <instance>/shell/restart.sh       the original's: SIGQUIT, sleep 1 (wait until gone), start
    <instance>/shell/stop.sh          graceful stop (SIGQUIT to the pid in the lock file), waits
    <instance>/shell/check_alive.sh   start it if it is not running (for cron)
    systemd/exchange-<instance>.service, systemd/exchange.target   the systemd alternative
    nginx/exchange.conf, nginx/exchange-locations.conf, nginx/exchange-public-locations.conf,
    nginx/nginx.conf                                               the load balancer
    start_all.sh, stop_all.sh, README.md                           the whole tree on one machine
    check_health.sh, monitoring/{thresholds.json,prometheus.yml,prometheus-rules.yml,
    grafana-dashboard.json}       the whole exchange's health (``exchange-server status``),
                                  Prometheus and Grafana (only with metrics, the default)

The instances are the six services of :data:`SERVICE_TABLE` (one row per service: its ports,
config builder, systemd ordering, stop timeout), with the original's sample ports;
readhistory, accesshttp and accessws may have several instances on this host
(``DeployOptions(instances={"accesshttp": 2})``): the first is ``accesshttp``, the next
``accesshttp-2``..., their ports are the base port + 100 per instance (or given one by one),
and each keeps its single-instance lock in its own ``<instance>/run/`` instead of ``/tmp``
(``--lock-dir``).  The gateways reach every readhistory instance (their rpc client fails over
across the list, each gateway starting with a different instance), and nginx spreads clients
over the accesshttp and accessws instances.

Several matchengines (``instances={"matchengine": 2}``) are one active/standby group
(docs/operations.md 15): each gets the shared ``leader`` block (``DeployOptions.leader``, else
:class:`LeaderConfig`'s defaults) with ``instance`` set to its own name, its own RPC, console and
metrics ports (base + 10 per instance: + 100 would hit marketprice's 7416), lock, log and data
directories; every gateway lists every engine's RPC address (a standby keeps its port closed, so
the gateways' rpc client moves on to the active).  With one matchengine nothing of this is
written (no ``leader`` block unless ``DeployOptions.leader`` asks for one).

Trust model (README.md): the JSON-RPC API is a trusted back-office API.  Each accesshttp instance
also gets a public listener (``public.bind``, port ``accesshttp_public``) that answers only the
public market-data methods (accesshttp/routes.py); nginx's public TLS server reaches only those
listeners (and accessws), its internal plain-HTTP server (``http_listen``, loopback or private
addresses only) the full API.

The templates live in ``deploy/templates/`` of the source tree (``$EXCHANGE_DEPLOY_TEMPLATES``
or ``DeployOptions.templates`` elsewhere).  Their ``{{name}}`` placeholders are filled by
:class:`KitTemplate`, a :class:`string.Template` whose placeholder is ``{{name}}`` rather than
``$name``: the shell scripts and the nginx config are full of their own ``$``, which then need no
escaping, and every placeholder must get a value (``substitute``, not ``safe_substitute``: a
misspelt one is an error, not a hole in a generated script).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import resource
import shlex
import site
import string
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from exchange_server.accesshttp.routes import PUBLIC_PATH_PREFIXES, PUBLIC_PATHS
from exchange_server.common.config import (
    LeaderConfig,
    MysqlConfig,
    default_matchengine_data,
    read_json,
)
from exchange_server.common.configread import ConfigError
from exchange_server.common.names import Service

#: Extension: each process's Prometheus ``GET /metrics`` port (the ``metrics`` block) is its
#: main port + METRICS_OFFSET (matchengine 27316, accesshttp 28080, ...).
METRICS_OFFSET = 20000
#: Instance N (1-based) of a service listens on the base port + (N - 1) * PORT_STEP.
PORT_STEP = 100
#: ... but a matchengine on + (N - 1) * 10 (7316, 7326...: marketprice has 7416).
MATCHENGINE_PORT_STEP = 10
#: Seconds a graceful stop may take (the matchengine's row asks for more).
DEFAULT_STOP_TIMEOUT = 30

DEFAULT_MYSQL = MysqlConfig(host="127.0.0.1", user="exchange", password="exchange", name="")
DEFAULT_SSL_CERTIFICATE = "/etc/ssl/exchange/fullchain.pem"
DEFAULT_SSL_CERTIFICATE_KEY = "/etc/ssl/exchange/privkey.pem"
DEFAULT_AUTH_URL = "http://127.0.0.1:9000/internal/exchange/user/auth"
DEFAULT_SIGN_URL = "http://127.0.0.1:9000/internal/exchange/user/sign"
#: accessws's svr.keep_alive (idle seconds before it closes a connection); nginx waits longer.
WS_KEEP_ALIVE = 3600
#: process.file_limit: the original's sample, capped at this machine's hard limit (a process
#: without CAP_SYS_RESOURCE cannot go past it, and the service would not start).
FILE_LIMIT = 1_000_000
HTTP_MAX_PKG = 102400
#: rpc clients' max_pkg_size (replies such as order.book / order.pending can be large).
CLIENT_MAX_PKG = 2_000_000

_TEMPLATES_ENV = "EXCHANGE_DEPLOY_TEMPLATES"


class DeployError(RuntimeError):
    """The deployment cannot be generated (bad option, existing files, missing templates)."""


class KitTemplate(string.Template):
    """A :class:`string.Template` with ``{{name}}`` placeholders (no escapes: the templates'
    ``$`` belong to the shell and to nginx); any other ``{{`` is an invalid placeholder."""

    delimiter = "{{"
    # a str, compiled by string.Template itself (typeshed declares the compiled result)
    pattern = (r"\{\{(?:(?P<braced>\w+)\}\}"  # type: ignore[assignment]
               r"|(?P<named>(?!))|(?P<escaped>(?!))|(?P<invalid>))")


def render(text: str, values: Mapping[str, object], what: str = "template") -> str:
    """Fill the ``{{name}}`` placeholders of ``text``; every one must have a value."""
    try:
        return KitTemplate(text).substitute(values)
    except KeyError as e:
        raise DeployError(f"{what}: no value for {{{{{e.args[0]}}}}}") from None
    except ValueError as e:
        raise DeployError(f"{what}: {e}") from None


@dataclass(frozen=True)
class Instance:
    """One service instance of the deployment."""

    service: str
    #: directory and unit name: the service's name, then ``<service>-2``, ``<service>-3``...
    name: str
    index: int
    dir: Path
    #: where the other services (and nginx) reach it
    address: str
    #: the address it listens on
    bind: str
    #: "svr" (the main port), plus "cli" (matchengine) or "monitor" (gateways)
    ports: dict[str, int]
    #: None: the default lock directory (/tmp, or $EXCHANGE_LOCK_DIR)
    lock_dir: Path | None

    @property
    def port(self) -> int:
        return self.ports["svr"]

    @property
    def lock_file(self) -> Path:
        return (self.lock_dir or Path("/tmp")) / f"{self.service}.lock"

    @property
    def config_path(self) -> Path:
        return self.dir / "conf" / "config.json"

    @property
    def unit(self) -> str:
        return f"exchange-{self.name}.service"

    @property
    def local_address(self) -> str:
        """Where a script on this machine reaches it."""
        return "127.0.0.1" if self.address in ("0.0.0.0", "") else self.address


@dataclass
class Deployment:
    """What :func:`generate` wrote."""

    root: Path
    instances: list[Instance]
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    @property
    def nginx_dir(self) -> Path:
        return self.root / "nginx"

    def of(self, service: str) -> list[Instance]:
        return [i for i in self.instances if i.service == service]

    def instance(self, name: str) -> Instance:
        for inst in self.instances:
            if inst.name == name:
                return inst
        raise KeyError(name)


@dataclass(frozen=True)
class DeployOptions:
    """What :func:`generate` writes (``exchange-server deploy``'s options; all have defaults)."""

    #: where the services reach each other (one machine)
    host: str = "127.0.0.1"
    #: the address every service listens on (None: its own address)
    bind: str | None = None
    #: per service or instance name, overrides ``host`` (``{"matchengine": "10.0.0.5"}``) for a
    #: spread-out topology
    hosts: Mapping[str, str] = field(default_factory=dict)
    #: the MySQL server and account (its ``name`` is ignored: ``db_log`` / ``db_history``)
    mysql: MysqlConfig = DEFAULT_MYSQL
    db_log: str = "trade_log"
    db_history: str = "trade_history"
    #: the Redis Sentinel block of marketprice and alertcenter
    sentinels: Sequence[str] = ("127.0.0.1:26379",)
    sentinel_master: str = "mymaster"
    redis_db: int = 0
    #: the Kafka brokers; ``topic_prefix`` prefixes the topic names (extension, several
    #: systems on one cluster)
    kafka: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    #: base ports by key of :data:`DEFAULT_PORTS`, or one port per instance
    ports: Mapping[str, int | Sequence[int]] = field(default_factory=dict)
    #: instances per service (readhistory, accesshttp and accessws may have several; several
    #: matchengines are one active/standby group)
    instances: Mapping[str, int] = field(default_factory=dict)
    #: the matchengines' shared ``leader`` block (``instance`` is each one's name); None: the
    #: defaults with several matchengines, no block with one
    leader: LeaderConfig | None = None
    #: the lock directory of single-instance services (None: /tmp)
    lock_dir: str | os.PathLike[str] | None = None
    #: what runs ``exchange-server`` (None: :func:`default_command`)
    command: str | Sequence[str] | None = None
    #: extra environment of the services and scripts
    environment: Mapping[str, str] = field(default_factory=dict)
    #: the matchengine's assets and markets (None: the original's samples)
    assets: list[dict[str, Any]] | None = None
    markets: list[dict[str, Any]] | None = None
    auth_url: str = DEFAULT_AUTH_URL
    sign_url: str = DEFAULT_SIGN_URL
    log_flag: str = "fatal,error,warn,info"
    #: process.file_limit (None: :func:`default_file_limit`)
    file_limit: int | None = None
    #: a Prometheus metrics block per process, check_health.sh and monitoring/
    metrics: bool = True
    server_name: str = "_"
    #: nginx's internal server (the full API): a loopback or private address only
    http_listen: str = "127.0.0.1:8000"
    https_listen: str = "443"
    ssl_certificate: str = DEFAULT_SSL_CERTIFICATE
    ssl_certificate_key: str = DEFAULT_SSL_CERTIFICATE_KEY
    #: nginx's ``host:port`` lists (None: the instances generated here); ``public_upstreams``:
    #: the accesshttp public listeners for nginx's public server
    http_upstreams: Sequence[str] | None = None
    public_upstreams: Sequence[str] | None = None
    ws_upstreams: Sequence[str] | None = None
    nginx_user: str | None = None
    nginx_workers: str = "auto"
    systemd_user: str | None = None
    #: the templates folder (None: :func:`templates_dir`'s search)
    templates: str | os.PathLike[str] | None = None
    #: overwrite existing files
    force: bool = False


# -- the services' configs -----------------------------------------------------------------------


def _db(mysql: MysqlConfig, name: str) -> dict[str, Any]:
    return {"host": mysql.host, "port": mysql.port, "user": mysql.user, "pass": mysql.password,
            "name": name}


@dataclass
class _ConfigBuilder:
    """Each service's ``conf/config.json`` (the services table names the method per service)."""

    deployment: Deployment
    options: DeployOptions
    file_limit: int
    assets: list[dict[str, Any]]
    markets: list[dict[str, Any]]
    #: the public ``wss://`` address of the WebSocket API (None: not known, no server name)
    ws_url: str | None = None

    @property
    def redis(self) -> dict[str, Any]:
        o = self.options
        return {"name": o.sentinel_master, "addr": list(o.sentinels), "db": o.redis_db}

    def _one(self, service: str) -> Instance:
        return self.deployment.of(service)[0]

    def _client(self, service: str, first: int = 0) -> dict[str, Any]:
        """An rpc client block reaching every instance of ``service`` (failover order starts
        at instance ``first``, so that the gateways spread over the readhistory instances)."""
        targets = self.deployment.of(service)
        k = first % len(targets)
        ordered = targets[k:] + targets[:k]
        return {"name": service, "addr": [f"tcp@{t.address}:{t.port}" for t in ordered],
                "max_pkg_size": CLIENT_MAX_PKG}

    def _kafka(self, topic: str) -> dict[str, Any]:
        return {"brokers": self.options.kafka, "topic": self.options.topic_prefix + topic,
                "partition": 0}

    def _rpc_svr(self, inst: Instance, max_pkg_size: int) -> dict[str, Any]:
        return {"bind": [f"tcp@{inst.bind}:{inst.port}", f"udp@{inst.bind}:{inst.port}"],
                "max_pkg_size": max_pkg_size, "heartbeat_check": False}

    def _monitor(self, inst: Instance) -> dict[str, Any]:
        return {"bind": [f"tcp@{inst.bind}:{inst.ports['monitor']}"], "max_pkg_size": 1000}

    def build(self, inst: Instance) -> dict[str, Any]:
        data: dict[str, Any] = {
            "debug": False,
            # core_limit 0: a Python service has no use for core files
            "process": {"file_limit": self.file_limit, "core_limit": 0},
            "log": {"path": str(inst.dir / "log" / inst.service), "flag": self.options.log_flag,
                    "shift": "size", "max": 100_000_000, "num": 10},
        }
        if "metrics" in inst.ports:
            data["metrics"] = {"bind": [f"tcp@{inst.bind}:{inst.ports['metrics']}"]}
        if inst.service != Service.ALERTCENTER:
            alert = self._one(Service.ALERTCENTER)
            data["alert"] = {"host": inst.name, "addr": f"{alert.address}:{alert.port}"}
        data.update(SERVICE_TABLE[inst.service].config(self, inst))
        return data

    def matchengine(self, inst: Instance) -> dict[str, Any]:
        o = self.options
        data = {
            "svr": self._rpc_svr(inst, 10240),
            "cli": f"tcp@127.0.0.1:{inst.ports['cli']}",
            "db_log": _db(o.mysql, o.db_log),
            "db_history": _db(o.mysql, o.db_history),
            "assets": self.assets,
            "markets": self.markets,
            "brokers": o.kafka,
            "slice_interval": 3600,
            "slice_keeptime": 259200,
            "history_thread": 10,
            "cache_timeout": 0.45,
            # extensions: where the Kafka publisher keeps its mark
            "bus_mark_file": str(inst.dir / "data" / "bus.mark"),
        }
        if o.topic_prefix:
            data["kafka_topic_prefix"] = o.topic_prefix
        leader = o.leader
        if leader is None and len(self.deployment.of(Service.MATCHENGINE)) > 1:
            leader = LeaderConfig()
        if leader is not None:
            # extension: one of an active/standby group (docs/operations.md 15)
            data["leader"] = {"lease": leader.lease, "renew": leader.renew,
                              "instance": inst.name}
        return data

    def readhistory(self, inst: Instance) -> dict[str, Any]:
        return {
            "svr": self._rpc_svr(inst, 1_000_000),
            "db_history": _db(self.options.mysql, self.options.db_history),
            "worker_num": 10,
        }

    def accesshttp(self, inst: Instance) -> dict[str, Any]:
        data = {
            "svr": {"bind": [f"tcp@{inst.bind}:{inst.port}"], "max_pkg_size": HTTP_MAX_PKG},
            "monitor": self._monitor(inst),
            "worker_num": 1,
            "timeout": 1.0,
            "matchengine": self._client(Service.MATCHENGINE),
            "marketprice": self._client(Service.MARKETPRICE),
            "readhistory": self._client(Service.READHISTORY, inst.index - 1),
            # extension: the listener nginx's public server reaches (public methods only)
            "public": {"bind": [f"tcp@{inst.bind}:{inst.ports['public']}"]},
        }
        if self.ws_url is not None:
            data["ws_url"] = self.ws_url  # the market page's WebSocket, through nginx
        return data

    def marketprice(self, inst: Instance) -> dict[str, Any]:
        http = self._one(Service.ACCESSHTTP)
        return {
            "svr": self._rpc_svr(inst, 10240),
            "deals": self._kafka("deals"),
            "redis": self.redis,
            "accesshttp": f"http://{http.address}:{http.port}/",
            "sec_max": 604800,
            "min_max": 525600,
            "hour_max": 87600,
            "cache_timeout": 0.45,
        }

    def accessws(self, inst: Instance) -> dict[str, Any]:
        from exchange_server.accessws.config import DEFAULT_DEPTH_LIMIT, DEFAULT_DEPTH_MERGE

        return {
            "svr": {"bind": [f"tcp@{inst.bind}:{inst.port}"], "max_pkg_size": HTTP_MAX_PKG,
                    "protocol": "chat", "keep_alive": WS_KEEP_ALIVE},
            "monitor": self._monitor(inst),
            "worker_num": 1,
            "matchengine": self._client(Service.MATCHENGINE),
            "marketprice": self._client(Service.MARKETPRICE),
            "readhistory": self._client(Service.READHISTORY, inst.index - 1),
            "deals": self._kafka("deals"),
            "orders": self._kafka("orders"),
            "balances": self._kafka("balances"),
            "stops": self._kafka("stops"),
            "auth_url": self.options.auth_url,
            "sign_url": self.options.sign_url,
            "backend_timeout": 1.0,
            "cache_timeout": 10.0,
            "deals_interval": 0.5,
            "price_interval": 0.5,
            "state_interval": 0.5,
            "today_interval": 0.5,
            "kline_interval": 0.5,
            "depth_interval": 0.5,
            "depth_limit": list(DEFAULT_DEPTH_LIMIT),
            "depth_merge": list(DEFAULT_DEPTH_MERGE),
        }

    def alertcenter(self, inst: Instance) -> dict[str, Any]:
        return {
            "svr": {"bind": [f"udp@{inst.bind}:{inst.port}", f"tcp@{inst.bind}:{inst.port}"],
                    "max_pkg_size": 10240},
            "redis": self.redis,
        }


# -- the services table --------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceRow:
    """One service of the kit: everything :func:`generate` needs to know about it."""

    name: str
    #: role -> the original's sample port (config.md 1): "svr" (the main port), then the
    #: extra listeners; the metrics port (svr + METRICS_OFFSET) is added by :attr:`ports`
    sample_ports: Mapping[str, int]
    #: its ``conf/config.json`` beyond the common blocks (process, log, metrics, alert)
    config: Callable[[_ConfigBuilder, Instance], dict[str, Any]]
    #: may run as several instances on one host (the others are single, config.md 1);
    #: several matchengines are one active/standby group
    multi: bool = False
    #: systemd ``After=``: other units, or service names (then every instance of it)
    after: tuple[str, ...] = ()
    #: seconds a graceful stop may take (stop.sh, TimeoutStopSec=)
    stop_timeout: int = DEFAULT_STOP_TIMEOUT
    #: what a graceful stop does, for stop.sh's comment
    stop_note: str = "requests in flight are answered"
    #: directories of its own beside log/ (created empty)
    dirs: tuple[str, ...] = ()
    #: instance N listens on the base port + (N - 1) * port_step
    port_step: int = PORT_STEP
    #: systemd ``CPUWeight=`` (its default is 100): the share of a busy host's CPU the unit
    #: gets against the others.  Why the matchengine gets more: every order waits on it, and a
    #: restart after a crash (slice load + tail replay, about 1 s of CPU for 100,000 open
    #: orders) took 2-5x its CPU time in wall time on a 2-core machine shared with other busy
    #: processes at equal weights (bench/README.md, "Restart after SIGKILL beside two hogs").
    cpu_weight: int = 100

    @property
    def ports(self) -> dict[str, int]:
        """Role -> default port, the metrics port included."""
        return {**self.sample_ports, "metrics": self.sample_ports["svr"] + METRICS_OFFSET}

    def port_key(self, role: str) -> str:
        """The key of :data:`DEFAULT_PORTS` (and of ``--port``) for one of its roles."""
        return self.name if role == "svr" else f"{self.name}_{role}"


#: The services in start order (stop order is the reverse): marketprice asks accesshttp for
#: market.list at start-up, which asks the matchengine.
SERVICE_TABLE: dict[str, ServiceRow] = {row.name: row for row in (
    ServiceRow(Service.ALERTCENTER, {"svr": 4444}, _ConfigBuilder.alertcenter,
               after=("redis-server.service", "redis-sentinel.service")),
    ServiceRow(Service.MATCHENGINE, {"svr": 7316, "cli": 7317}, _ConfigBuilder.matchengine,
               after=("mariadb.service", "kafka.service", "alertcenter"),
               # it flushes the operation log, history and Kafka and writes its final slice
               # (the process runner allows 120 s for the service's stop)
               stop_timeout=180,
               stop_note="the matchengine flushes its operation log, history and Kafka "
                         "messages and writes a final slice",
               dirs=("data",),
               # several are an active/standby group; + 100 would be marketprice's 7416
               multi=True, port_step=MATCHENGINE_PORT_STEP, cpu_weight=400),
    ServiceRow(Service.READHISTORY, {"svr": 7424}, _ConfigBuilder.readhistory, multi=True,
               after=("mariadb.service", "alertcenter")),
    ServiceRow(Service.ACCESSHTTP, {"svr": 8080, "monitor": 8081,
                              # the public listener (public market-data methods only), what
                              # nginx's public server reaches
                              "public": 8082},
               _ConfigBuilder.accesshttp, multi=True, after=("matchengine", "readhistory")),
    ServiceRow(Service.MARKETPRICE, {"svr": 7416}, _ConfigBuilder.marketprice,
               after=("redis-sentinel.service", "kafka.service", "accesshttp")),
    ServiceRow(Service.ACCESSWS, {"svr": 8090, "monitor": 8091}, _ConfigBuilder.accessws, multi=True,
               after=("kafka.service", "marketprice", "readhistory")),
)}
SERVICES = tuple(SERVICE_TABLE)
#: Every port key (``--port KEY=PORT``) and its default: a service's name is its main port, the
#: others its extra listeners (``accesshttp_public``, ``matchengine_metrics``...).
DEFAULT_PORTS: dict[str, int] = {row.port_key(role): port for row in SERVICE_TABLE.values()
                                 for role, port in row.ports.items()}


# -- helpers -------------------------------------------------------------------------------------


def templates_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """``deploy/templates`` of the source tree (or the override / $EXCHANGE_DEPLOY_TEMPLATES)."""
    candidates = [Path(override)] if override is not None else []
    if os.environ.get(_TEMPLATES_ENV):
        candidates.append(Path(os.environ[_TEMPLATES_ENV]))
    candidates.append(Path(__file__).resolve().parents[1] / "deploy" / "templates")
    for path in candidates:
        if (path / "bin.sh").is_file():
            return path
    raise DeployError(f"deploy templates not found (looked in {', '.join(map(str, candidates))}); "
                      f"set ${_TEMPLATES_ENV} to the deploy/templates folder of the sources")


def default_command() -> tuple[list[str], dict[str, str]]:
    """The command that runs this installation (the console script beside the interpreter,
    else ``python -m exchange_server``) and the environment it needs (PYTHONPATH when the
    package is not installed in the interpreter's site-packages)."""
    script = Path(sys.executable).parent / "exchange-server"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)], {}
    package_root = Path(__file__).resolve().parents[1]
    sites = {Path(p).resolve() for p in site.getsitepackages() + [site.getusersitepackages()]}
    env = {} if package_root in sites else {"PYTHONPATH": str(package_root)}
    return [sys.executable, "-m", "exchange_server"], env


def default_file_limit() -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return FILE_LIMIT if hard == resource.RLIM_INFINITY else min(FILE_LIMIT, hard)


def _sh(value: object) -> str:
    return shlex.quote(str(value))


def _systemd_arg(value: str) -> str:
    value = value.replace("%", "%%").replace("$", "$$")
    if re.fullmatch(r"[\w@%+=:,./$-]+", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _nginx_arg(value: str) -> str:
    if re.fullmatch(r"[\w@+=:,./-]+", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _nginx_size(size: int) -> str:
    return f"{size // 1024}k" if size % 1024 == 0 else str(size)


def _instance_counts(instances: Mapping[str, int]) -> dict[str, int]:
    counts = dict.fromkeys(SERVICE_TABLE, 1)
    for service, count in instances.items():
        row = SERVICE_TABLE.get(service)
        if row is None:
            raise DeployError(f"instances: unknown service {service!r}")
        if not row.multi and count != 1:
            raise DeployError(f"instances: {service} runs as exactly one instance")
        if count < 1:
            raise DeployError(f"instances: {service} needs at least one instance")
        counts[service] = count
    return counts


def _instance_ports(row: ServiceRow, count: int, ports: Mapping[str, int | Sequence[int]],
                    metrics: bool) -> list[dict[str, int]]:
    """Role -> port of each of the ``count`` instances of ``row``'s service."""
    result: list[dict[str, int]] = [{} for _ in range(count)]
    for role, default in row.ports.items():
        if role == "metrics" and not metrics:
            continue
        key = row.port_key(role)
        value = ports.get(key, default)
        if isinstance(value, int):
            values = [value + row.port_step * i for i in range(count)]
        else:
            values = [int(v) for v in value]
            if len(values) < count:
                raise DeployError(f"ports[{key!r}]: {count} instances need {count} ports, "
                                  f"got {len(values)}")
        for i in range(count):
            if not 0 < values[i] < 65536:
                raise DeployError(f"ports[{key!r}]: {values[i]} is not a port")
            result[i][role] = values[i]
    return result


def _instances(root: Path, options: DeployOptions) -> list[Instance]:
    """Every instance, in start order, with its address, ports and lock directory."""
    counts = _instance_counts(options.instances)
    for key in options.ports:
        if key not in DEFAULT_PORTS:
            raise DeployError(f"ports: unknown key {key!r} (one of {', '.join(DEFAULT_PORTS)})")
    result: list[Instance] = []
    for row in SERVICE_TABLE.values():
        count = counts[row.name]
        per_instance = _instance_ports(row, count, options.ports, options.metrics)
        for i, inst_ports in enumerate(per_instance, start=1):
            name = row.name if i == 1 else f"{row.name}-{i}"
            address = options.hosts.get(name, options.hosts.get(row.name, options.host))
            directory = root / name
            result.append(Instance(
                service=row.name, name=name, index=i, dir=directory, address=address,
                bind=options.bind if options.bind is not None else address, ports=inst_ports,
                lock_dir=(directory / "run") if count > 1 else
                (Path(options.lock_dir).resolve() if options.lock_dir is not None else None)))
    _check_port_clashes(result)
    check_binds(options, result)
    return result


def _check_port_clashes(instances: Sequence[Instance]) -> None:
    seen: dict[tuple[str, int], str] = {}
    for inst in instances:
        for role, port in inst.ports.items():
            where = "127.0.0.1" if role == "cli" else inst.local_address
            other = seen.get((where, port))
            if other is not None:
                raise DeployError(f"port {port} on {where}: both {other} and {inst.name} "
                                  f"({role})")
            seen[(where, port)] = f"{inst.name} ({role})"


def _command(options: DeployOptions) -> tuple[list[str], dict[str, str]]:
    """What runs ``exchange-server`` and the environment it needs."""
    if options.command is None:
        argv, env = default_command()
    elif isinstance(options.command, str):
        argv, env = shlex.split(options.command), {}
    else:
        argv, env = list(options.command), {}
    env.update(options.environment)
    return argv, env


def _shell_environment(env: Mapping[str, str]) -> str:
    """Shell lines exporting ``env`` (PYTHONPATH is prepended to the caller's)."""
    text = "".join(f"{key}={_sh(value)}; export {key}\n" for key, value in sorted(env.items())
                   if key != "PYTHONPATH")
    if "PYTHONPATH" in env:
        text += (f"PYTHONPATH={_sh(env['PYTHONPATH'])}${{PYTHONPATH:+:$PYTHONPATH}}; "
                 "export PYTHONPATH\n")
    return text.rstrip("\n")


# -- the generator -------------------------------------------------------------------------------


def generate(target_dir: str | os.PathLike[str],
             options: DeployOptions | None = None) -> Deployment:
    """Write the deployment tree under ``target_dir`` (see the module's docstring and
    :class:`DeployOptions`).  Existing files are only overwritten with ``options.force``."""
    options = options or DeployOptions()
    check_internal_listen(options.http_listen)
    root = Path(target_dir).resolve()
    deployment = Deployment(root, _instances(root, options))
    check_public_upstreams(options.public_upstreams or (), deployment.instances)
    argv, env = _command(options)
    kit = _Kit(deployment, options, templates_dir(options.templates), argv, env)
    file_limit = options.file_limit
    if file_limit is None:
        file_limit = default_file_limit()
    samples = default_matchengine_data()
    builder = _ConfigBuilder(
        deployment, options, file_limit=file_limit,
        assets=options.assets if options.assets is not None else samples["assets"],
        markets=options.markets if options.markets is not None else samples["markets"],
        ws_url=public_ws_url(options.server_name, options.https_listen))
    for inst in deployment.instances:
        deployment.configs[inst.name] = builder.build(inst)
    check_matchengine_configs(deployment)
    for inst in deployment.instances:
        kit.write_instance(inst, file_limit)
    kit.write_tree()
    kit.write_nginx()
    kit.write_readme()
    if options.metrics:
        kit.write_monitoring()
    deployment.files = kit.written
    return deployment


def check_matchengine_configs(deployment: Deployment) -> None:
    """Each matchengine config passes the matchengine's own start-up validation (the leader
    block's bounds and ``renew <= lease / 2`` among them) before anything is written."""
    from exchange_server.matchprocess.standalone import validate

    for inst in deployment.of(Service.MATCHENGINE):
        try:
            validate(deployment.configs[inst.name])
        except ConfigError as e:
            raise DeployError(f"{inst.name}: {e}") from None


#: The per-instance scripts: template -> where it goes in the instance's directory.
INSTANCE_SCRIPTS = {
    "bin.sh": "bin/{service}",
    "stop.sh": "shell/stop.sh",
    "restart.sh": "shell/restart.sh",
    "check_alive.sh": "shell/check_alive.sh",
}


@dataclass
class _Kit:
    """Writes the files of one deployment from the templates."""

    deployment: Deployment
    options: DeployOptions
    templates: Path
    #: the command that runs exchange-server, and its environment
    argv: list[str]
    env: dict[str, str]
    written: list[Path] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.deployment.root

    @property
    def command_text(self) -> str:
        return " ".join(_sh(a) for a in self.argv)

    def write(self, path: Path, text: str, mode: int = 0o644) -> None:
        if path.exists() and not self.options.force:
            raise DeployError(f"{path} exists (use --force to overwrite the generated files)")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        path.chmod(mode)
        self.written.append(path)

    def template(self, name: str) -> str:
        return (self.templates / name).read_text(encoding="utf-8")

    def write_template(self, name: str, path: Path, values: Mapping[str, object],
                       mode: int = 0o644) -> None:
        self.write(path, render(self.template(name), values, name), mode)

    def write_instance(self, inst: Instance, file_limit: int) -> None:
        """The instance's directory (config, bin/, shell/, log/...) and its systemd unit."""
        row = SERVICE_TABLE[inst.service]
        for sub in ("log", *row.dirs):
            (inst.dir / sub).mkdir(parents=True, exist_ok=True)
        if inst.lock_dir is not None:
            inst.lock_dir.mkdir(parents=True, exist_ok=True)
        self.write(inst.config_path,
                   json.dumps(self.deployment.configs[inst.name], indent=4) + "\n")
        values: dict[str, object] = {
            "instance": inst.name, "service": inst.service, "dir": _sh(inst.dir),
            "lock_file": _sh(inst.lock_file),
            "lock_args": f"--lock-dir {_sh(inst.lock_dir)}" if inst.lock_dir is not None else "",
            "command": self.command_text, "environment": _shell_environment(self.env),
            "stop_timeout": row.stop_timeout, "stop_note": row.stop_note,
        }
        for name, where in INSTANCE_SCRIPTS.items():
            self.write_template(name, inst.dir / where.format(service=inst.service), values,
                                0o755)
        self.write_template("systemd.service", self.root / "systemd" / inst.unit,
                            self.unit_values(inst, file_limit))

    def unit_values(self, inst: Instance, file_limit: int) -> dict[str, object]:
        row = SERVICE_TABLE[inst.service]
        args = [*self.argv, inst.service, "-c", str(inst.config_path), "--log-stderr"]
        if inst.lock_dir is not None:
            args += ["--lock-dir", str(inst.lock_dir)]
        after = [unit for item in row.after for unit in (
            [i.unit for i in self.deployment.of(item)] if item in SERVICE_TABLE else [item])]
        user = self.options.systemd_user
        return {
            "instance": inst.name, "service": inst.service, "unit": inst.unit, "dir": inst.dir,
            "after": "".join(f" {unit}" for unit in after),
            "user": f"User={user}\n" if user else "",
            "environment": "".join(f"Environment={_systemd_arg(f'{k}={v}')}\n"
                                   for k, v in sorted(self.env.items())),
            "exec_start": " ".join(_systemd_arg(a) for a in args),
            "timeout_stop": row.stop_timeout, "cpu_weight": row.cpu_weight,
            # systemd sets both limits (the service then has nothing left to raise)
            "limit_nofile": f"LimitNOFILE={file_limit}\n" if file_limit else "",
        }

    def write_tree(self) -> None:
        """exchange.target, start_all.sh and stop_all.sh: the whole tree in dependency order."""
        instances = self.deployment.instances
        self.write_template("systemd.target", self.root / "systemd" / "exchange.target",
                            {"units": " ".join(i.unit for i in instances)})
        steps = "\n".join(start_steps(instances))
        self.write_template("start_all.sh", self.root / "start_all.sh",
                            {"root": _sh(self.root), "steps": steps}, 0o755)
        self.write_template("stop_all.sh", self.root / "stop_all.sh",
                            {"root": _sh(self.root),
                             "names": " ".join(i.name for i in reversed(instances))}, 0o755)

    def write_readme(self) -> None:
        """The tree's README.md: its instances, their ports and lock files."""
        table = "\n".join(
            f"| {i.name} | {i.service} | "
            + ", ".join(f"{role} {i.local_address if role != 'cli' else '127.0.0.1'}:{port}"
                        for role, port in i.ports.items())
            + f" | {i.lock_file} |" for i in self.deployment.instances)
        self.write_template("README.md", self.root / "README.md",
                            {"root": self.root, "table": table})

    def _upstreams(self) -> tuple[list[str], list[str], list[str]]:
        """nginx's accesshttp, accesshttp public and accessws servers."""
        o, of = self.options, self.deployment.of
        http = list(o.http_upstreams) if o.http_upstreams is not None else [
            f"{i.local_address}:{i.port}" for i in of(Service.ACCESSHTTP)]
        public = list(o.public_upstreams) if o.public_upstreams is not None else [
            f"{i.local_address}:{i.ports['public']}" for i in of(Service.ACCESSHTTP)]
        ws = list(o.ws_upstreams) if o.ws_upstreams is not None else [
            f"{i.local_address}:{i.port}" for i in of(Service.ACCESSWS)]
        if not http or not public or not ws:
            raise DeployError("nginx: the upstreams need at least one server each")
        return http, public, ws

    def write_nginx(self) -> None:
        o, ndir = self.options, self.deployment.nginx_dir
        for sub in ("logs", "run", "tmp"):
            (ndir / sub).mkdir(parents=True, exist_ok=True)
        http, public, ws = self._upstreams()
        self.write_template("nginx-exchange.conf", ndir / "exchange.conf", {
            "accesshttp_servers": _upstream(http),
            "accesshttp_public_servers": _upstream(public),
            "accessws_servers": _upstream(ws),
            "http_listen": o.http_listen, "https_listen": o.https_listen,
            "server_name": o.server_name,
            "access_log": _nginx_arg(str(ndir / "logs" / "access.log")),
            "locations": _nginx_arg(str(ndir / "exchange-locations.conf")),
            "public_locations": _nginx_arg(str(ndir / "exchange-public-locations.conf")),
            "ssl_certificate": _nginx_arg(o.ssl_certificate),
            "ssl_certificate_key": _nginx_arg(o.ssl_certificate_key),
        })
        self.write_template("nginx-locations.conf", ndir / "exchange-locations.conf", {
            "max_body": _nginx_size(HTTP_MAX_PKG), "ws_timeout": WS_KEEP_ALIVE + 60,
        })
        self.write_template("nginx-public-locations.conf",
                            ndir / "exchange-public-locations.conf", {
                                "public_locations": public_locations(),
                                "ws_timeout": WS_KEEP_ALIVE + 60,
                            })
        self.write_template("nginx-main.conf", ndir / "nginx.conf", {
            "nginx_dir": _nginx_arg(str(ndir)), "worker_processes": o.nginx_workers,
            "user": f"user {o.nginx_user};\n" if o.nginx_user else "",
        })

    def write_monitoring(self) -> None:
        """check_health.sh (``exchange-server status -c ROOT``) and monitoring/: the thresholds
        it judges by, a Prometheus scrape config and alert rules, a Grafana dashboard.  The
        rules and the dashboard are copied verbatim (their ``{{ $labels... }}`` are
        Prometheus' and Grafana's own templates)."""
        from exchange_server.status.collect import Thresholds

        mon = self.root / "monitoring"
        self.write_template("check_health.sh", self.root / "check_health.sh", {
            "root": _sh(self.root), "command": self.command_text,
            "environment": _shell_environment(self.env),
        }, 0o755)
        self.write(mon / "thresholds.json", json.dumps(asdict(Thresholds()), indent=4) + "\n")
        for name in ("prometheus-rules.yml", "grafana-dashboard.json"):
            self.write(mon / name, self.template(name))
        self.write(mon / "prometheus.yml",
                   prometheus_config(self.deployment, mon / "prometheus-rules.yml"))


#: start_all.sh's wait for an active/standby group (only written when there is one).
_WAIT_ACTIVE = """# wait_active NAME HOST:PORT...: until one of the group's RPC ports accepts connections (the
# active's; a standby keeps its RPC port closed).
wait_active() {
    local name=$1 tenths=0 addr
    shift
    while :; do
        for addr in "$@"; do
            if (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; then
                echo "$name: $addr is active"
                return 0
            fi
        done
        if ((tenths >= WAIT_TIMEOUT * 10)); then
            echo "$name: no active matchengine on $* after ${WAIT_TIMEOUT}s (see their logs)" >&2
            exit 1
        fi
        sleep 0.1
        tenths=$((tenths + 1))
    done
}
"""


def start_steps(instances: Sequence[Instance]) -> list[str]:
    """start_all.sh's lines: start each instance and wait for its port.  The matchengines of an
    active/standby group are waited for on their console port (a standby serves it), then
    until one of them is active, before the gateways start."""
    engines = [i for i in instances if i.service == Service.MATCHENGINE]
    group = len(engines) > 1
    steps = [_WAIT_ACTIVE] if group else []
    for inst in instances:
        if group and inst.service == Service.MATCHENGINE:
            steps.append(f"start {inst.name} 127.0.0.1 {inst.ports['cli']}")
            if inst is engines[-1]:
                addrs = " ".join(_sh(f"{e.local_address}:{e.port}") for e in engines)
                steps.append(f"wait_active {Service.MATCHENGINE} {addrs}")
        else:
            steps.append(f"start {inst.name} {_sh(inst.local_address)} {inst.port}")
    return steps


def _upstream(addresses: Sequence[str]) -> str:
    return "\n".join(f"    server {a} max_fails=1 fail_timeout=10s;" for a in addresses)


def prometheus_config(deployment: Deployment, rules: Path) -> str:
    """A Prometheus config scraping every instance's metrics port (job ``exchange``, label
    ``exchange_instance``) with the alert rules loaded."""
    lines = ["# Prometheus config for this deployment (generated by `exchange-server deploy`).",
             "# Check: promtool check config prometheus.yml",
             "global:", "  scrape_interval: 15s", "  evaluation_interval: 15s",
             f"rule_files: [{json.dumps(str(rules))}]", "scrape_configs:",
             "  - job_name: exchange", "    static_configs:"]
    for inst in deployment.instances:
        if "metrics" in inst.ports:
            target = json.dumps(f"{inst.local_address}:{inst.ports['metrics']}")
            lines += [f"      - targets: [{target}]",
                      f"        labels: {{exchange_instance: {json.dumps(inst.name)}}}"]
    return "\n".join(lines) + "\n"


def _is_internal(host: str) -> bool:
    """``host`` is ``localhost`` or a loopback or private IP address (not 0.0.0.0 / ``::``)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return not address.is_unspecified and (address.is_loopback or address.is_private)


def check_internal_listen(listen: str) -> None:
    """nginx's internal server carries the full back-office API: refuse a ``listen`` that is
    not a loopback or private address (a bare port listens on every address); a ``unix:``
    socket is local."""
    host = listen.rpartition(":")[0] if ":" in listen else ""
    if listen.startswith("unix:") or _is_internal(host):
        return
    raise DeployError(f"http_listen {listen!r}: the internal nginx server serves the full "
                      "back-office API; give a loopback or private address "
                      "(127.0.0.1:8000, 10.0.0.5:8000)")


def check_binds(options: DeployOptions, instances: Sequence[Instance]) -> None:
    """Every service but nginx's public server carries unauthenticated money APIs (the
    matchengine's binary RPC, accesshttp's full API, monitors, metrics): refuse a ``bind``
    that is not a loopback or private address.  ``--bind`` must be one; an address from
    ``--host`` / ``--service-host`` is checked when it is an IP address (a host name is
    resolved by the services)."""
    if options.bind is not None and not _is_internal(options.bind):
        raise DeployError(f"bind {options.bind!r}: the services serve the full, unauthenticated "
                          "API (matchengine RPC, accesshttp, monitors); give a loopback or "
                          "private address (127.0.0.1, 10.0.0.5) and publish through nginx")
    for inst in instances:
        if not _is_internal(inst.bind) and _is_ip(inst.bind):
            raise DeployError(f"{inst.name} would listen on {inst.bind!r}: the services serve "
                              "the full, unauthenticated API; give a loopback or private "
                              "address (--host, --service-host, --bind)")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def check_public_upstreams(public: Sequence[str], instances: Sequence[Instance]) -> None:
    """nginx's public server must reach only accesshttp's public listeners: refuse an upstream
    that is any other listener of the kit (accesshttp's full API, the matchengine...)."""
    local = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"}
    for upstream in public:
        host, _, port = upstream.rpartition(":")
        host = host.strip("[]")
        for inst in instances:
            hosts = {inst.address, inst.bind, inst.local_address} | (
                local if inst.local_address in local else set())
            for role, number in inst.ports.items():
                if (role != "public" or inst.service != Service.ACCESSHTTP) and \
                        port == str(number) and host in hosts:
                    raise DeployError(
                        f"public upstream {upstream!r} is {inst.name}'s {role} listener, which "
                        "serves more than the public market data; give accesshttp's public "
                        "listeners (public.bind, port accesshttp_public)")


def public_ws_url(server_name: str, https_listen: str) -> str | None:
    """The WebSocket API's address through nginx's public server (``wss://NAME[:PORT]/ws``),
    for the market page; None when nginx has no real server name (``_``)."""
    name = server_name.split()[0] if server_name.split() else "_"
    if name == "_" or "*" in name or name.startswith("~"):
        return None
    port = https_listen.rpartition(":")[2].split()[0]
    return f"wss://{name}/ws" if port == "443" else f"wss://{name}:{port}/ws"


def public_locations() -> str:
    """nginx locations for what accesshttp's public listener serves (routes.py)."""
    blocks = [f"location = {path} {{\n{_PUBLIC_PROXY}}}" for path in PUBLIC_PATHS]
    blocks += [f"location {prefix} {{\n{_PUBLIC_PROXY}}}" for prefix in PUBLIC_PATH_PREFIXES]
    return "\n".join(blocks)


#: The body of each public location: to the accesshttp public listeners.
_PUBLIC_PROXY = f"""    proxy_pass http://exchange_accesshttp_public;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $host;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_connect_timeout 2s;
    proxy_send_timeout 10s;
    proxy_read_timeout 10s;
    proxy_next_upstream error timeout;
    client_max_body_size {_nginx_size(HTTP_MAX_PKG)};
"""


# -- command line (``exchange-server deploy``) ---------------------------------------------------


def _key_values(items: Sequence[str] | None, what: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise DeployError(f"{what}: expected KEY=VALUE, got {item!r}")
        result[key.strip()] = value.strip()
    return result


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``deploy`` to the ``exchange-server`` sub-commands (``sub``: the subparsers)."""
    p: argparse.ArgumentParser = sub.add_parser(
        "deploy", help="write the per-service deployment layout (configs, bin/, shell/, "
        "systemd units, nginx) into a directory",
        description="Write DIR/<service>/{bin,conf,log,shell} for every service, systemd units "
        "and an nginx config, with consistent addresses and ports (docs/operations.md).")
    p.add_argument("dir", metavar="DIR", help="where to write (created if missing)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address at which the services reach each other (default 127.0.0.1)")
    p.add_argument("--bind", default=None,
                   help="address the services listen on: loopback or private (default: --host)")
    p.add_argument("--service-host", action="append", metavar="NAME=ADDR",
                   help="address of one service or instance (accesshttp-2=10.0.0.12); repeatable")
    p.add_argument("--instances", action="append", metavar="SERVICE=N",
                   help="instances of readhistory / accesshttp / accessws on this host, or "
                   "matchengines of one active/standby group; repeatable (accesshttp=2, "
                   "matchengine=2)")
    p.add_argument("--leader-lease", type=float, default=None, metavar="SECONDS",
                   help=f"the matchengines' leader.lease (default {LeaderConfig.lease} with "
                   "several matchengines; with one, writes a leader block)")
    p.add_argument("--leader-renew", type=float, default=None, metavar="SECONDS",
                   help=f"the matchengines' leader.renew, at most half the lease (default "
                   f"{LeaderConfig.renew})")
    p.add_argument("--port", action="append", metavar="KEY=PORT[,PORT...]",
                   help=f"base port, or one per instance; keys: {', '.join(DEFAULT_PORTS)}")
    p.add_argument("--mysql-host", default=DEFAULT_MYSQL.host)
    p.add_argument("--mysql-port", type=int, default=DEFAULT_MYSQL.port)
    p.add_argument("--mysql-user", default=DEFAULT_MYSQL.user)
    p.add_argument("--mysql-password", default=DEFAULT_MYSQL.password)
    p.add_argument("--db-log", default="trade_log", help="operation log database (trade_log)")
    p.add_argument("--db-history", default="trade_history",
                   help="history database (trade_history)")
    p.add_argument("--sentinel", action="append", metavar="HOST:PORT",
                   help="Redis Sentinel address; repeatable (default 127.0.0.1:26379)")
    p.add_argument("--sentinel-master", default="mymaster")
    p.add_argument("--redis-db", type=int, default=0)
    p.add_argument("--kafka", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    p.add_argument("--topic-prefix", default="", help="prefix of the Kafka topic names")
    p.add_argument("--matchengine-config", metavar="FILE",
                   help="take assets and markets from this matchengine config (default: the "
                   "original's sample assets and markets)")
    p.add_argument("--auth-url", default=DEFAULT_AUTH_URL, help="accessws auth_url")
    p.add_argument("--sign-url", default=DEFAULT_SIGN_URL, help="accessws sign_url")
    p.add_argument("--log-flag", default="fatal,error,warn,info")
    p.add_argument("--file-limit", type=int, default=None,
                   help="process.file_limit (default 1000000, capped at this machine's hard "
                   "limit)")
    p.add_argument("--lock-dir", default=None,
                   help="lock directory of single-instance services (default /tmp)")
    p.add_argument("--command", default=None,
                   help="command that runs exchange-server (default: this installation's)")
    p.add_argument("--server-name", default="_", help="nginx server_name")
    p.add_argument("--http-listen", default="127.0.0.1:8000",
                   help="nginx's internal plain-HTTP server, the full back-office API: a "
                   "loopback or private address (default 127.0.0.1:8000)")
    p.add_argument("--https-listen", default="443",
                   help="nginx's public TLS server: public market data and WebSocket only "
                   "(default 443)")
    p.add_argument("--ssl-certificate", default=DEFAULT_SSL_CERTIFICATE)
    p.add_argument("--ssl-certificate-key", default=DEFAULT_SSL_CERTIFICATE_KEY)
    p.add_argument("--http-upstream", action="append", metavar="HOST:PORT",
                   help="accesshttp instance for nginx; repeatable (default: the generated ones)")
    p.add_argument("--public-upstream", action="append", metavar="HOST:PORT",
                   help="accesshttp public listener for nginx's public server; repeatable "
                   "(default: the generated ones)")
    p.add_argument("--ws-upstream", action="append", metavar="HOST:PORT",
                   help="accessws instance for nginx; repeatable (default: the generated ones)")
    p.add_argument("--nginx-user", default=None, help="`user` of the stand-alone nginx.conf")
    p.add_argument("--systemd-user", default=None, help="User= of the systemd units")
    p.add_argument("--no-metrics", action="store_true",
                   help="no Prometheus metrics block (default: main port + 20000)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=cmd_deploy)
    return p


def cmd_deploy(args: argparse.Namespace) -> int:
    try:
        deployment = generate(args.dir, options_from_args(args))
    except (DeployError, ValueError) as e:
        print(f"exchange-server deploy: {e}", file=sys.stderr)
        return 2
    print(f"exchange-server: deployment written to {deployment.root}")
    for inst in deployment.instances:
        listens = ", ".join(f"{role} {port}" for role, port in inst.ports.items())
        print(f"  {inst.name:<14} {inst.address:<15} {listens}")
    print(f"next: exchange-server db init -c {deployment.instance(Service.MATCHENGINE).config_path}")
    print(f"      {deployment.root / 'start_all.sh'}   (or the units in "
          f"{deployment.root / 'systemd'}; see {deployment.root / 'README.md'})")
    return 0


def options_from_args(args: argparse.Namespace) -> DeployOptions:
    """The :class:`DeployOptions` of ``exchange-server deploy``'s command line."""
    counts = {k: int(v) for k, v in _key_values(args.instances, "--instances").items()}
    ports: dict[str, int | Sequence[int]] = {}
    for key, value in _key_values(args.port, "--port").items():
        values = [int(v) for v in value.split(",")]
        ports[key] = values[0] if len(values) == 1 else values
    leader = None
    if args.leader_lease is not None or args.leader_renew is not None:
        defaults = LeaderConfig()
        leader = LeaderConfig(
            lease=defaults.lease if args.leader_lease is None else args.leader_lease,
            renew=defaults.renew if args.leader_renew is None else args.leader_renew)
    assets = markets = None
    if args.matchengine_config:
        data = read_json(args.matchengine_config)
        assets, markets = data.get("assets"), data.get("markets")
    return DeployOptions(
        host=args.host, bind=args.bind, hosts=_key_values(args.service_host, "--service-host"),
        mysql=MysqlConfig(host=args.mysql_host, port=args.mysql_port, user=args.mysql_user,
                          password=args.mysql_password, name=""),
        db_log=args.db_log, db_history=args.db_history,
        sentinels=tuple(args.sentinel or DeployOptions.sentinels),
        sentinel_master=args.sentinel_master,
        redis_db=args.redis_db, kafka=args.kafka, topic_prefix=args.topic_prefix,
        ports=ports, instances=counts, leader=leader, lock_dir=args.lock_dir,
        command=args.command,
        assets=assets, markets=markets, auth_url=args.auth_url, sign_url=args.sign_url,
        log_flag=args.log_flag, file_limit=args.file_limit,
        metrics=not args.no_metrics, server_name=args.server_name,
        http_listen=args.http_listen, https_listen=args.https_listen,
        ssl_certificate=args.ssl_certificate, ssl_certificate_key=args.ssl_certificate_key,
        http_upstreams=args.http_upstream, public_upstreams=args.public_upstream,
        ws_upstreams=args.ws_upstream,
        nginx_user=args.nginx_user, systemd_user=args.systemd_user, force=args.force)


__all__ = ["DEFAULT_PORTS", "MATCHENGINE_PORT_STEP", "PORT_STEP", "SERVICES", "SERVICE_TABLE", "DeployError",
           "DeployOptions", "Deployment", "Instance", "KitTemplate", "ServiceRow", "add_parser",
           "cmd_deploy", "default_command", "generate", "options_from_args", "render",
           "templates_dir"]
