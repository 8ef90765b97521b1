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

The instances are the six services (matchengine, marketprice, readhistory, accesshttp, accessws,
alertcenter) with the original's sample ports; readhistory, accesshttp and accessws may have
several instances on this host (``instances={"accesshttp": 2}``): the first is ``accesshttp``,
the next ``accesshttp-2``..., their ports are the base port + 100 per instance (or given one
by one), and each keeps its single-instance lock in its own ``<instance>/run/`` instead of
``/tmp`` (``--lock-dir``).  The gateways reach every readhistory instance (their rpc client fails
over across the list, each gateway starting with a different instance), and nginx spreads
clients over the accesshttp and accessws instances.

Trust model (README.md): the JSON-RPC API is a trusted back-office API.  Each accesshttp instance
also gets a public listener (``public.bind``, port ``accesshttp_public``) that answers only the
public market-data methods (accesshttp/routes.py); nginx's public TLS server reaches only those
listeners (and accessws), its internal plain-HTTP server (``http_listen``, loopback or private
addresses only) the full API.

The templates live in ``deploy/templates/`` of the source tree (``$EXCHANGE_DEPLOY_TEMPLATES``
or ``templates=`` elsewhere); ``{{name}}`` placeholders are filled in here.
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
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from exchange_server.accesshttp.routes import PUBLIC_PATH_PREFIXES, PUBLIC_PATHS
from exchange_server.common.config import MysqlConfig, default_matchengine_data, read_json

#: Start order (stop order is the reverse): marketprice asks accesshttp for market.list at
#: start-up, which asks the matchengine.
SERVICES = ("alertcenter", "matchengine", "readhistory", "accesshttp", "marketprice", "accessws")
#: Services that may run as several instances (the others are single, config.md 1).
MULTI_INSTANCE = ("readhistory", "accesshttp", "accessws")
#: The original's sample ports (config.md 1).  Keys other than a service name are the extra
#: listeners of that service.
DEFAULT_PORTS: dict[str, int] = {
    "alertcenter": 4444,
    "matchengine": 7316,
    "matchengine_cli": 7317,
    "marketprice": 7416,
    "readhistory": 7424,
    "accesshttp": 8080,
    "accesshttp_monitor": 8081,
    #: the public listener (public market-data methods only), what nginx's public server reaches
    "accesshttp_public": 8082,
    "accessws": 8090,
    "accessws_monitor": 8091,
}
#: Extension: each process's Prometheus ``GET /metrics`` port (the ``metrics`` block) is its
#: main port + METRICS_OFFSET (matchengine 27316, accesshttp 28080, ...).
METRICS_OFFSET = 20000
for _service in ("alertcenter", "matchengine", "marketprice", "readhistory", "accesshttp",
                 "accessws"):
    DEFAULT_PORTS[f"{_service}_metrics"] = DEFAULT_PORTS[_service] + METRICS_OFFSET
#: Instance N (1-based) of a service listens on the base port + (N - 1) * PORT_STEP.
PORT_STEP = 100
#: Seconds a graceful stop may take: the matchengine flushes the operation log, history and
#: Kafka and writes its final slice (the process runner allows 120 s for the service's stop).
STOP_TIMEOUT = {"matchengine": 180}
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

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_TEMPLATES_ENV = "EXCHANGE_DEPLOY_TEMPLATES"


class DeployError(RuntimeError):
    """The deployment cannot be generated (bad option, existing files, missing templates)."""


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


def render(text: str, values: Mapping[str, object], what: str = "template") -> str:
    """Fill the ``{{name}}`` placeholders of ``text``; every one must have a value."""

    def sub(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise DeployError(f"{what}: no value for {{{{{key}}}}}")
        return str(values[key])

    return _PLACEHOLDER.sub(sub, text)


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


def _port_roles(service: str) -> dict[str, str]:
    """Port key -> role in :attr:`Instance.ports`."""
    roles = {service: "svr"}
    for key in DEFAULT_PORTS:
        if key.startswith(service + "_"):
            roles[key] = key[len(service) + 1:]
    return roles


def _instance_ports(service: str, count: int, ports: Mapping[str, int | Sequence[int]],
                    metrics: bool = True) -> list[dict[str, int]]:
    result: list[dict[str, int]] = [{} for _ in range(count)]
    for key, role in _port_roles(service).items():
        if role == "metrics" and not metrics:
            continue
        value = ports.get(key, DEFAULT_PORTS[key])
        if isinstance(value, int):
            values = [value + PORT_STEP * i for i in range(count)]
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


def default_file_limit() -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return FILE_LIMIT if hard == resource.RLIM_INFINITY else min(FILE_LIMIT, hard)


def _db(mysql: MysqlConfig, name: str) -> dict[str, Any]:
    return {"host": mysql.host, "port": mysql.port, "user": mysql.user, "pass": mysql.password,
            "name": name}


# -- the generator -------------------------------------------------------------------------------


def generate(target_dir: str | os.PathLike[str], *,
             host: str = "127.0.0.1",
             bind: str | None = None,
             hosts: Mapping[str, str] | None = None,
             mysql: MysqlConfig | None = None,
             db_log: str = "trade_log",
             db_history: str = "trade_history",
             sentinels: Sequence[str] = ("127.0.0.1:26379",),
             sentinel_master: str = "mymaster",
             redis_db: int = 0,
             kafka: str = "127.0.0.1:9092",
             topic_prefix: str = "",
             ports: Mapping[str, int | Sequence[int]] | None = None,
             instances: Mapping[str, int] | None = None,
             lock_dir: str | os.PathLike[str] | None = None,
             command: str | Sequence[str] | None = None,
             environment: Mapping[str, str] | None = None,
             assets: list[dict[str, Any]] | None = None,
             markets: list[dict[str, Any]] | None = None,
             auth_url: str = DEFAULT_AUTH_URL,
             sign_url: str = DEFAULT_SIGN_URL,
             log_flag: str = "fatal,error,warn,info",
             file_limit: int | None = None,
             metrics: bool = True,
             server_name: str = "_",
             http_listen: str = "127.0.0.1:8000",
             https_listen: str = "443",
             ssl_certificate: str = DEFAULT_SSL_CERTIFICATE,
             ssl_certificate_key: str = DEFAULT_SSL_CERTIFICATE_KEY,
             http_upstreams: Sequence[str] | None = None,
             public_upstreams: Sequence[str] | None = None,
             ws_upstreams: Sequence[str] | None = None,
             nginx_user: str | None = None,
             nginx_workers: str = "auto",
             systemd_user: str | None = None,
             templates: str | os.PathLike[str] | None = None,
             force: bool = False) -> Deployment:
    """Write the deployment tree under ``target_dir`` (see the module's docstring).

    ``host``: where the services reach each other (one machine); ``hosts`` overrides it per
    service or instance name (``{"matchengine": "10.0.0.5"}``) for a spread-out topology.
    ``bind``: the address every service listens on (default: its own address).  ``mysql``
    gives the server and account (its ``name`` is ignored: ``db_log`` / ``db_history``).
    ``sentinels`` / ``sentinel_master`` / ``redis_db``: the Redis Sentinel block of
    marketprice and alertcenter.  ``kafka``: the brokers; ``topic_prefix`` prefixes the topic
    names (extension, several systems on one cluster).  ``ports``: base ports by key of
    :data:`DEFAULT_PORTS`, or one port per instance.  ``lock_dir``: the lock directory of
    single-instance services (default /tmp).  ``command``: what runs ``exchange-server``
    (default :func:`default_command`).  ``http_upstreams`` / ``ws_upstreams``: nginx's
    ``host:port`` list (default: the instances generated here); ``public_upstreams``: the
    accesshttp public listeners for nginx's public server.  ``http_listen``: nginx's internal
    server (the full API), a loopback or private address only.  Existing files are only
    overwritten with ``force``.
    """
    check_internal_listen(http_listen)
    root = Path(target_dir).resolve()
    counts = dict.fromkeys(SERVICES, 1)
    for service, count in (instances or {}).items():
        if service not in counts:
            raise DeployError(f"instances: unknown service {service!r}")
        if count < 1 or (count > 1 and service not in MULTI_INSTANCE):
            raise DeployError(f"instances: {service} runs as exactly one instance"
                              if service not in MULTI_INSTANCE else
                              f"instances: {service} needs at least one instance")
        counts[service] = count
    ports = dict(ports or {})
    for key in ports:
        if key not in DEFAULT_PORTS:
            raise DeployError(f"ports: unknown key {key!r} (one of {', '.join(DEFAULT_PORTS)})")
    hosts = dict(hosts or {})
    mysql = mysql or DEFAULT_MYSQL
    if command is None:
        argv, env = default_command()
    else:
        argv, env = (shlex.split(command) if isinstance(command, str) else list(command)), {}
    env.update(environment or {})
    tdir = templates_dir(templates)

    # -- instances
    all_instances: list[Instance] = []
    for service in SERVICES:
        count = counts[service]
        for i, inst_ports in enumerate(_instance_ports(service, count, ports, metrics),
                                       start=1):
            name = service if i == 1 else f"{service}-{i}"
            address = hosts.get(name, hosts.get(service, host))
            directory = root / name
            all_instances.append(Instance(
                service=service, name=name, index=i, dir=directory, address=address,
                bind=bind if bind is not None else address, ports=inst_ports,
                lock_dir=(directory / "run") if count > 1 else
                (Path(lock_dir).resolve() if lock_dir is not None else None)))
    seen: dict[tuple[str, int], str] = {}
    for inst in all_instances:
        for role, port in inst.ports.items():
            where = "127.0.0.1" if role == "cli" else inst.local_address
            other = seen.get((where, port))
            if other is not None:
                raise DeployError(f"port {port} on {where}: both {other} and {inst.name} "
                                  f"({role})")
            seen[(where, port)] = f"{inst.name} ({role})"
    deployment = Deployment(root, all_instances)

    # -- configs
    samples = default_matchengine_data()
    if file_limit is None:
        file_limit = default_file_limit()
    builder = _ConfigBuilder(
        deployment, file_limit=file_limit, mysql=mysql, db_log=db_log, db_history=db_history,
        redis={"name": sentinel_master, "addr": list(sentinels), "db": redis_db},
        kafka=kafka, topic_prefix=topic_prefix, log_flag=log_flag,
        assets=assets if assets is not None else samples["assets"],
        markets=markets if markets is not None else samples["markets"],
        auth_url=auth_url, sign_url=sign_url,
        ws_url=public_ws_url(server_name, https_listen))
    for inst in all_instances:
        deployment.configs[inst.name] = builder.build(inst)

    # -- files
    writer = _Writer(root, force)
    exec_env = "".join(f"{key}={_sh(value)}; export {key}\n" for key, value in sorted(env.items())
                       if key != "PYTHONPATH")
    if "PYTHONPATH" in env:
        exec_env += (f"PYTHONPATH={_sh(env['PYTHONPATH'])}${{PYTHONPATH:+:$PYTHONPATH}}; "
                     "export PYTHONPATH\n")
    command_text = " ".join(_sh(a) for a in argv)

    def template(name: str) -> str:
        return (tdir / name).read_text(encoding="utf-8")

    for inst in all_instances:
        lock_args = f"--lock-dir {_sh(inst.lock_dir)}" if inst.lock_dir is not None else ""
        stop_timeout = STOP_TIMEOUT.get(inst.service, DEFAULT_STOP_TIMEOUT)
        values: dict[str, object] = {
            "instance": inst.name, "service": inst.service, "dir": _sh(inst.dir),
            "lock_file": _sh(inst.lock_file), "lock_args": lock_args,
            "command": command_text, "environment": exec_env.rstrip("\n"),
            "stop_timeout": stop_timeout,
            "stop_note": "the matchengine flushes its operation log, history and Kafka messages "
                         "and writes a final slice" if inst.service == "matchengine" else
                         "requests in flight are answered",
        }
        writer.mkdir(inst.dir / "log")
        if inst.lock_dir is not None:
            writer.mkdir(inst.lock_dir)
        if inst.service == "matchengine":
            writer.mkdir(inst.dir / "data")
        writer.write(inst.config_path,
                     json.dumps(deployment.configs[inst.name], indent=4) + "\n")
        for tname, out, mode in (("bin.sh", inst.dir / "bin" / inst.service, 0o755),
                                 ("stop.sh", inst.dir / "shell" / "stop.sh", 0o755),
                                 ("restart.sh", inst.dir / "shell" / "restart.sh", 0o755),
                                 ("check_alive.sh", inst.dir / "shell" / "check_alive.sh", 0o755)):
            writer.write(out, render(template(tname), values, tname), mode)
        writer.write(root / "systemd" / inst.unit,
                     render(template("systemd.service"),
                            _unit_values(inst, deployment, argv, env, systemd_user,
                                         file_limit),
                            "systemd.service"))
    writer.write(root / "systemd" / "exchange.target",
                 render(template("systemd.target"),
                        {"units": " ".join(i.unit for i in all_instances)}, "systemd.target"))

    steps = "\n".join(f"start {inst.name} {_sh(inst.local_address)} {inst.port}"
                      for inst in all_instances)
    writer.write(root / "start_all.sh",
                 render(template("start_all.sh"), {"root": _sh(root), "steps": steps},
                        "start_all.sh"), 0o755)
    writer.write(root / "stop_all.sh",
                 render(template("stop_all.sh"),
                        {"root": _sh(root),
                         "names": " ".join(i.name for i in reversed(all_instances))},
                        "stop_all.sh"), 0o755)

    # -- nginx
    ndir = deployment.nginx_dir
    for sub in ("logs", "run", "tmp"):
        writer.mkdir(ndir / sub)

    def upstream(addresses: Sequence[str]) -> str:
        return "\n".join(f"    server {a} max_fails=1 fail_timeout=10s;" for a in addresses)

    http_servers = list(http_upstreams) if http_upstreams is not None else [
        f"{i.local_address}:{i.port}" for i in deployment.of("accesshttp")]
    public_servers = list(public_upstreams) if public_upstreams is not None else [
        f"{i.local_address}:{i.ports['public']}" for i in deployment.of("accesshttp")]
    ws_servers = list(ws_upstreams) if ws_upstreams is not None else [
        f"{i.local_address}:{i.port}" for i in deployment.of("accessws")]
    if not http_servers or not public_servers or not ws_servers:
        raise DeployError("nginx: the upstreams need at least one server each")
    writer.write(ndir / "exchange.conf", render(template("nginx-exchange.conf"), {
        "accesshttp_servers": upstream(http_servers),
        "accesshttp_public_servers": upstream(public_servers),
        "accessws_servers": upstream(ws_servers),
        "http_listen": http_listen, "https_listen": https_listen, "server_name": server_name,
        "access_log": _nginx_arg(str(ndir / "logs" / "access.log")),
        "locations": _nginx_arg(str(ndir / "exchange-locations.conf")),
        "public_locations": _nginx_arg(str(ndir / "exchange-public-locations.conf")),
        "ssl_certificate": _nginx_arg(ssl_certificate),
        "ssl_certificate_key": _nginx_arg(ssl_certificate_key),
    }, "nginx-exchange.conf"))
    writer.write(ndir / "exchange-locations.conf", render(template("nginx-locations.conf"), {
        "max_body": _nginx_size(HTTP_MAX_PKG), "ws_timeout": WS_KEEP_ALIVE + 60,
    }, "nginx-locations.conf"))
    writer.write(ndir / "exchange-public-locations.conf",
                 render(template("nginx-public-locations.conf"), {
                     "public_locations": public_locations(), "ws_timeout": WS_KEEP_ALIVE + 60,
                 }, "nginx-public-locations.conf"))
    writer.write(ndir / "nginx.conf", render(template("nginx-main.conf"), {
        "nginx_dir": _nginx_arg(str(ndir)), "worker_processes": nginx_workers,
        "user": f"user {nginx_user};\n" if nginx_user else "",
    }, "nginx-main.conf"))

    table = "\n".join(
        f"| {i.name} | {i.service} | "
        + ", ".join(f"{role} {i.local_address if role != 'cli' else '127.0.0.1'}:{port}"
                    for role, port in i.ports.items())
        + f" | {i.lock_file} |" for i in all_instances)
    writer.write(root / "README.md", render(template("README.md"),
                                            {"root": root, "table": table}, "README.md"))
    if metrics:
        _write_monitoring(writer, deployment, tdir, command_text, exec_env)
    deployment.files = writer.written
    return deployment


def _write_monitoring(writer: _Writer, deployment: Deployment, tdir: Path, command: str,
                      exec_env: str) -> None:
    """check_health.sh (``exchange-server status -c ROOT``) and monitoring/: the thresholds it
    judges by, a Prometheus scrape config and alert rules, a Grafana dashboard.  The rules and
    the dashboard are copied verbatim (their ``{{ $labels... }}`` are Prometheus' and
    Grafana's own templates)."""
    from exchange_server.status.collect import Thresholds

    root = deployment.root
    mon = root / "monitoring"
    writer.write(root / "check_health.sh", render(
        (tdir / "check_health.sh").read_text(encoding="utf-8"),
        {"root": _sh(root), "command": command, "environment": exec_env.rstrip("\n")},
        "check_health.sh"), 0o755)
    writer.write(mon / "thresholds.json", json.dumps(asdict(Thresholds()), indent=4) + "\n")
    for name in ("prometheus-rules.yml", "grafana-dashboard.json"):
        writer.write(mon / name, (tdir / name).read_text(encoding="utf-8"))
    writer.write(mon / "prometheus.yml", prometheus_config(deployment, mon / "prometheus-rules.yml"))


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


def check_internal_listen(listen: str) -> None:
    """nginx's internal server carries the full back-office API: refuse a ``listen`` that is
    not a loopback or private address (a bare port listens on every address); a ``unix:``
    socket is local."""
    host = listen.rpartition(":")[0].strip("[]") if ":" in listen else ""
    if host == "localhost" or listen.startswith("unix:"):
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or address.is_unspecified or not (address.is_loopback
                                                         or address.is_private):
        raise DeployError(f"http_listen {listen!r}: the internal nginx server serves the full "
                          "back-office API; give a loopback or private address "
                          "(127.0.0.1:8000, 10.0.0.5:8000)")


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


def _unit_values(inst: Instance, deployment: Deployment, argv: list[str], env: dict[str, str],
                 user: str | None, file_limit: int) -> dict[str, object]:
    args = [*argv, inst.service, "-c", str(inst.config_path), "--log-stderr"]
    if inst.lock_dir is not None:
        args += ["--lock-dir", str(inst.lock_dir)]
    after = {
        "alertcenter": ["redis-server.service", "redis-sentinel.service"],
        "matchengine": ["mariadb.service", "kafka.service", "exchange-alertcenter.service"],
        "readhistory": ["mariadb.service", "exchange-alertcenter.service"],
        "accesshttp": ["exchange-matchengine.service"]
        + [i.unit for i in deployment.of("readhistory")],
        "marketprice": ["redis-sentinel.service", "kafka.service"]
        + [i.unit for i in deployment.of("accesshttp")],
        "accessws": ["kafka.service", "exchange-marketprice.service"]
        + [i.unit for i in deployment.of("readhistory")],
    }[inst.service]
    environment = "".join(f"Environment={_systemd_arg(f'{k}={v}')}\n" for k, v in sorted(env.items()))
    return {
        "instance": inst.name, "service": inst.service, "unit": inst.unit, "dir": inst.dir,
        "after": "".join(f" {unit}" for unit in after),
        "user": f"User={user}\n" if user else "",
        "environment": environment,
        "exec_start": " ".join(_systemd_arg(a) for a in args),
        "timeout_stop": STOP_TIMEOUT.get(inst.service, DEFAULT_STOP_TIMEOUT),
        # systemd sets both limits (the service then has nothing left to raise)
        "limit_nofile": f"LimitNOFILE={file_limit}\n" if file_limit else "",
    }


class _Writer:
    def __init__(self, root: Path, force: bool) -> None:
        self.root = root
        self.force = force
        self.written: list[Path] = []

    def mkdir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)

    def write(self, path: Path, text: str, mode: int = 0o644) -> None:
        if path.exists() and not self.force:
            raise DeployError(f"{path} exists (use --force to overwrite the generated files)")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        path.chmod(mode)
        self.written.append(path)


@dataclass
class _ConfigBuilder:
    deployment: Deployment
    file_limit: int
    mysql: MysqlConfig
    db_log: str
    db_history: str
    redis: dict[str, Any]
    kafka: str
    topic_prefix: str
    log_flag: str
    assets: list[dict[str, Any]]
    markets: list[dict[str, Any]]
    auth_url: str
    sign_url: str
    #: the public ``wss://`` address of the WebSocket API (None: not known, no server name)
    ws_url: str | None = None

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
        return {"brokers": self.kafka, "topic": self.topic_prefix + topic, "partition": 0}

    def _rpc_svr(self, inst: Instance, max_pkg_size: int) -> dict[str, Any]:
        return {"bind": [f"tcp@{inst.bind}:{inst.port}", f"udp@{inst.bind}:{inst.port}"],
                "max_pkg_size": max_pkg_size, "heartbeat_check": False}

    def build(self, inst: Instance) -> dict[str, Any]:
        data: dict[str, Any] = {
            "debug": False,
            # core_limit 0: a Python service has no use for core files
            "process": {"file_limit": self.file_limit, "core_limit": 0},
            "log": {"path": str(inst.dir / "log" / inst.service), "flag": self.log_flag,
                    "shift": "size", "max": 100_000_000, "num": 10},
        }
        if "metrics" in inst.ports:
            data["metrics"] = {"bind": [f"tcp@{inst.bind}:{inst.ports['metrics']}"]}
        if inst.service != "alertcenter":
            alert = self._one("alertcenter")
            data["alert"] = {"host": inst.name, "addr": f"{alert.address}:{alert.port}"}
        getattr(self, f"_{inst.service}")(inst, data)
        return data

    def _matchengine(self, inst: Instance, data: dict[str, Any]) -> None:
        data.update({
            "svr": self._rpc_svr(inst, 10240),
            "cli": f"tcp@127.0.0.1:{inst.ports['cli']}",
            "db_log": _db(self.mysql, self.db_log),
            "db_history": _db(self.mysql, self.db_history),
            "assets": self.assets,
            "markets": self.markets,
            "brokers": self.kafka,
            "slice_interval": 3600,
            "slice_keeptime": 259200,
            "history_thread": 10,
            "cache_timeout": 0.45,
            # extensions: where the Kafka publisher keeps its mark
            "bus_mark_file": str(inst.dir / "data" / "bus.mark"),
        })
        if self.topic_prefix:
            data["kafka_topic_prefix"] = self.topic_prefix

    def _readhistory(self, inst: Instance, data: dict[str, Any]) -> None:
        data.update({
            "svr": self._rpc_svr(inst, 1_000_000),
            "db_history": _db(self.mysql, self.db_history),
            "worker_num": 10,
        })

    def _accesshttp(self, inst: Instance, data: dict[str, Any]) -> None:
        data.update({
            "svr": {"bind": [f"tcp@{inst.bind}:{inst.port}"], "max_pkg_size": HTTP_MAX_PKG},
            "monitor": {"bind": [f"tcp@{inst.bind}:{inst.ports['monitor']}"],
                        "max_pkg_size": 1000},
            "worker_num": 1,
            "timeout": 1.0,
            "matchengine": self._client("matchengine"),
            "marketprice": self._client("marketprice"),
            "readhistory": self._client("readhistory", inst.index - 1),
            # extension: the listener nginx's public server reaches (public methods only)
            "public": {"bind": [f"tcp@{inst.bind}:{inst.ports['public']}"]},
        })
        if self.ws_url is not None:
            data["ws_url"] = self.ws_url  # the market page's WebSocket, through nginx

    def _marketprice(self, inst: Instance, data: dict[str, Any]) -> None:
        http = self._one("accesshttp")
        data.update({
            "svr": self._rpc_svr(inst, 10240),
            "deals": self._kafka("deals"),
            "redis": dict(self.redis),
            "accesshttp": f"http://{http.address}:{http.port}/",
            "sec_max": 604800,
            "min_max": 525600,
            "hour_max": 87600,
            "cache_timeout": 0.45,
        })

    def _accessws(self, inst: Instance, data: dict[str, Any]) -> None:
        from exchange_server.accessws.config import DEFAULT_DEPTH_LIMIT, DEFAULT_DEPTH_MERGE

        data.update({
            "svr": {"bind": [f"tcp@{inst.bind}:{inst.port}"], "max_pkg_size": HTTP_MAX_PKG,
                    "protocol": "chat", "keep_alive": WS_KEEP_ALIVE},
            "monitor": {"bind": [f"tcp@{inst.bind}:{inst.ports['monitor']}"],
                        "max_pkg_size": 1000},
            "worker_num": 1,
            "matchengine": self._client("matchengine"),
            "marketprice": self._client("marketprice"),
            "readhistory": self._client("readhistory", inst.index - 1),
            "deals": self._kafka("deals"),
            "orders": self._kafka("orders"),
            "balances": self._kafka("balances"),
            "stops": self._kafka("stops"),
            "auth_url": self.auth_url,
            "sign_url": self.sign_url,
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
        })

    def _alertcenter(self, inst: Instance, data: dict[str, Any]) -> None:
        data.update({
            "svr": {"bind": [f"udp@{inst.bind}:{inst.port}", f"tcp@{inst.bind}:{inst.port}"],
                    "max_pkg_size": 10240},
            "redis": dict(self.redis),
        })


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
                   help="address the services listen on (default: --host; 0.0.0.0 for all)")
    p.add_argument("--service-host", action="append", metavar="NAME=ADDR",
                   help="address of one service or instance (accesshttp-2=10.0.0.12); repeatable")
    p.add_argument("--instances", action="append", metavar="SERVICE=N",
                   help="instances of readhistory / accesshttp / accessws on this host; "
                   "repeatable (accesshttp=2)")
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
        counts = {k: int(v) for k, v in _key_values(args.instances, "--instances").items()}
        ports: dict[str, int | list[int]] = {}
        for key, value in _key_values(args.port, "--port").items():
            values = [int(v) for v in value.split(",")]
            ports[key] = values[0] if len(values) == 1 else values
        assets = markets = None
        if args.matchengine_config:
            data = read_json(args.matchengine_config)
            assets, markets = data.get("assets"), data.get("markets")
        deployment = generate(
            args.dir, host=args.host, bind=args.bind,
            hosts=_key_values(args.service_host, "--service-host"),
            mysql=MysqlConfig(host=args.mysql_host, port=args.mysql_port, user=args.mysql_user,
                              password=args.mysql_password, name=""),
            db_log=args.db_log, db_history=args.db_history,
            sentinels=args.sentinel or ["127.0.0.1:26379"], sentinel_master=args.sentinel_master,
            redis_db=args.redis_db, kafka=args.kafka, topic_prefix=args.topic_prefix,
            ports=ports, instances=counts, lock_dir=args.lock_dir, command=args.command,
            assets=assets, markets=markets, auth_url=args.auth_url, sign_url=args.sign_url,
            log_flag=args.log_flag, file_limit=args.file_limit,
            metrics=not args.no_metrics, server_name=args.server_name,
            http_listen=args.http_listen, https_listen=args.https_listen,
            ssl_certificate=args.ssl_certificate, ssl_certificate_key=args.ssl_certificate_key,
            http_upstreams=args.http_upstream, public_upstreams=args.public_upstream,
            ws_upstreams=args.ws_upstream,
            nginx_user=args.nginx_user, systemd_user=args.systemd_user, force=args.force)
    except (DeployError, ValueError) as e:
        print(f"exchange-server deploy: {e}", file=sys.stderr)
        return 2
    print(f"exchange-server: deployment written to {deployment.root}")
    for inst in deployment.instances:
        listens = ", ".join(f"{role} {port}" for role, port in inst.ports.items())
        print(f"  {inst.name:<14} {inst.address:<15} {listens}")
    print(f"next: exchange-server db init -c {deployment.instance('matchengine').config_path}")
    print(f"      {deployment.root / 'start_all.sh'}   (or the units in "
          f"{deployment.root / 'systemd'}; see {deployment.root / 'README.md'})")
    return 0


__all__ = ["DEFAULT_PORTS", "PORT_STEP", "SERVICES", "DeployError", "Deployment", "Instance",
           "add_parser", "cmd_deploy", "default_command", "generate", "render", "templates_dir"]
