"""The deploy kit (``exchange-server deploy``): the generated layout, every sample config read by
its service's own loader, consistent addresses across services, the systemd units, and the
shell kit (bin/, shell/stop.sh, restart.sh, check_alive.sh) run for real on the alertcenter.

The nginx config and the scale-out topology behind it are in test_nginx.py.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shlex
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from exchange_server.accesshttp.routes import PUBLIC_PATH_PREFIXES, PUBLIC_PATHS
from exchange_server.accesshttp.standalone import load_accesshttp
from exchange_server.accessws.config import load_accessws
from exchange_server.alertcenter.config import load_alertcenter
from exchange_server.common.config import MysqlConfig, load_matchengine
from exchange_server.deploy import (
    DEFAULT_PORTS,
    PORT_STEP,
    SERVICE_TABLE,
    SERVICES,
    DeployError,
    Deployment,
    DeployOptions,
    add_parser,
    generate,
    options_from_args,
    render,
)
from exchange_server.marketprice.standalone import load_marketprice
from exchange_server.process.settings import read_process_settings
from exchange_server.readhistory.standalone import load_readhistory
from tests.support.server import free_port
from tests.support.waiting import wait_port

#: Redis database of the shell-kit test's alertcenter (flushed before and after).
REDIS_DB = 9


LOADERS: dict[str, Callable[[Any], object]] = {
    "matchengine": load_matchengine,
    "readhistory": load_readhistory,
    "accesshttp": load_accesshttp,
    "marketprice": load_marketprice,
    "accessws": load_accessws,
    "alertcenter": load_alertcenter,
}


def configs(dep: Deployment, service: str) -> list[dict[str, Any]]:
    return [json.loads(i.config_path.read_text()) for i in dep.of(service)]


def tcp_binds(data: dict[str, Any], key: str = "svr") -> list[str]:
    binds = data[key]["bind"]
    return [b for b in ([binds] if isinstance(binds, str) else binds) if b.startswith("tcp@")]


def test_layout_and_every_config_loads(tmp_path: Path) -> None:
    dep = generate(tmp_path / "d", DeployOptions(
        instances={"readhistory": 2, "accesshttp": 2, "accessws": 2}))
    names = [i.name for i in dep.instances]
    assert names == ["alertcenter", "matchengine", "readhistory", "readhistory-2", "accesshttp",
                     "accesshttp-2", "marketprice", "accessws", "accessws-2"]
    for inst in dep.instances:
        d = inst.dir
        for sub in ("bin", "conf", "log", "shell"):
            assert (d / sub).is_dir(), d / sub
        for script in (d / "bin" / inst.service, d / "shell" / "restart.sh",
                       d / "shell" / "stop.sh", d / "shell" / "check_alive.sh"):
            assert os.access(script, os.X_OK), script
            result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
            assert result.returncode == 0, (script, result.stderr)
        data = json.loads(inst.config_path.read_text())
        assert data == dep.configs[inst.name]
        # the service's own loader, and the process blocks every service process reads
        LOADERS[inst.service](data)
        settings = read_process_settings(data, alert_required=inst.service != "alertcenter")
        assert settings.log.path == str(d / "log" / inst.service)
        assert (dep.root / "systemd" / inst.unit).is_file()
    for name in ("start_all.sh", "stop_all.sh"):
        result = subprocess.run(["bash", "-n", str(dep.root / name)], capture_output=True,
                                text=True)
        assert result.returncode == 0, result.stderr
    for name in ("exchange.conf", "exchange-locations.conf", "exchange-public-locations.conf",
                 "nginx.conf"):
        assert (dep.nginx_dir / name).is_file()
    # several instances of one service on a host: each its own lock directory
    locks = [i.lock_file for i in dep.instances]
    assert len(set(locks)) == len(locks)
    assert dep.instance("accesshttp-2").lock_file == dep.root / "accesshttp-2/run/accesshttp.lock"
    assert dep.instance("matchengine").lock_file == Path("/tmp/matchengine.lock")


def test_default_ports_are_the_originals_and_consistent(tmp_path: Path) -> None:
    dep = generate(tmp_path / "d", DeployOptions(instances={"accesshttp": 2, "readhistory": 2}))
    me, = configs(dep, "matchengine")
    mp, = configs(dep, "marketprice")
    ws, = configs(dep, "accessws")
    ac, = configs(dep, "alertcenter")
    rh = configs(dep, "readhistory")
    http = configs(dep, "accesshttp")
    assert me["svr"]["bind"] == ["tcp@127.0.0.1:7316", "udp@127.0.0.1:7316"]
    assert me["cli"] == "tcp@127.0.0.1:7317"
    assert mp["svr"]["bind"] == ["tcp@127.0.0.1:7416", "udp@127.0.0.1:7416"]
    assert rh[0]["svr"]["bind"][0] == "tcp@127.0.0.1:7424"
    assert rh[1]["svr"]["bind"][0] == "tcp@127.0.0.1:7524"
    assert http[0]["svr"]["bind"] == ["tcp@127.0.0.1:8080"]
    assert http[0]["monitor"]["bind"] == ["tcp@127.0.0.1:8081"]
    assert http[1]["svr"]["bind"] == ["tcp@127.0.0.1:8180"]
    assert ws["svr"]["bind"] == ["tcp@127.0.0.1:8090"]
    assert ws["monitor"]["bind"] == ["tcp@127.0.0.1:8091"]
    assert ac["svr"]["bind"] == ["udp@127.0.0.1:4444", "tcp@127.0.0.1:4444"]
    # extension: Prometheus metrics on the main port + 20000
    assert me["metrics"] == {"bind": ["tcp@127.0.0.1:27316"]}
    assert http[1]["metrics"] == {"bind": ["tcp@127.0.0.1:28180"]}
    assert ac["metrics"] == {"bind": ["tcp@127.0.0.1:24444"]}
    assert "alert" not in ac
    # every client reaches the server's tcp bind; alerts go to the alertcenter's udp port
    for gateway in [*http, ws]:
        assert gateway["matchengine"]["addr"] == tcp_binds(me)
        assert gateway["marketprice"]["addr"] == tcp_binds(mp)
        assert sorted(gateway["readhistory"]["addr"]) == sorted(tcp_binds(r)[0] for r in rh)
    # each accesshttp starts with a different readhistory instance (failover to the others)
    assert [h["readhistory"]["addr"][0] for h in http] == [tcp_binds(r)[0] for r in rh]
    for data in [me, mp, ws, *rh, *http]:
        assert data["alert"]["addr"] == "127.0.0.1:4444"
        assert f"udp@{data['alert']['addr']}" in ac["svr"]["bind"]
    assert mp["accesshttp"] == "http://127.0.0.1:8080/"
    assert mp["redis"] == ac["redis"] == {"name": "mymaster", "addr": ["127.0.0.1:26379"], "db": 0}
    assert me["brokers"] == mp["deals"]["brokers"] == ws["orders"]["brokers"] == "127.0.0.1:9092"
    assert (mp["deals"]["topic"], ws["orders"]["topic"], ws["balances"]["topic"]) == \
        ("deals", "orders", "balances")
    assert me["db_log"]["name"] == "trade_log"
    assert me["db_history"] == rh[0]["db_history"] == rh[1]["db_history"]
    assert me["db_history"]["name"] == "trade_history"
    # the original's sample assets and markets
    assert [a["name"] for a in me["assets"]] == ["BCH", "BTC", "LTC", "ETH", "ETC", "ZEC", "XMR",
                                                 "DSH"]
    assert "BTCBCH" in [m["name"] for m in me["markets"]]
    nginx = (dep.nginx_dir / "exchange.conf").read_text()
    assert "server 127.0.0.1:8080 " in nginx and "server 127.0.0.1:8180 " in nginx
    assert "server 127.0.0.1:8090 " in nginx
    assert "listen 443 ssl;" in nginx and "listen 127.0.0.1:8000;" in nginx
    assert "ssl_certificate /etc/ssl/exchange/fullchain.pem;" in nginx
    locations = (dep.nginx_dir / "exchange-locations.conf").read_text()
    assert "proxy_set_header Upgrade $http_upgrade;" in locations
    assert "non_idempotent" not in locations.replace("do NOT add \"non_idempotent\"", "")
    assert set(DEFAULT_PORTS) >= {"matchengine", "accesshttp", "accessws"}


def test_nginx_publishes_only_the_public_surface(tmp_path: Path) -> None:
    """The trust model in the generated kit: each accesshttp instance has a public listener
    (public methods only); the TLS server reaches only those (and accessws), the internal
    server the full API; the internal server must not listen on a public address."""
    dep = generate(tmp_path / "d", DeployOptions(instances={"accesshttp": 2}))
    http = configs(dep, "accesshttp")
    assert [h["public"]["bind"] for h in http] == [["tcp@127.0.0.1:8082"],
                                                   ["tcp@127.0.0.1:8182"]]
    assert [load_accesshttp(h).public_bind for h in http] == [("tcp@127.0.0.1:8082",),
                                                              ("tcp@127.0.0.1:8182",)]
    assert "ws_url" not in http[0]  # server_name "_": the public address is not known
    nginx = (dep.nginx_dir / "exchange.conf").read_text()
    public_server = nginx[nginx.index("listen 443 ssl;"):]
    internal_server = nginx[nginx.index("listen 127.0.0.1:8000;"):nginx.index("listen 443 ssl;")]
    assert "exchange-public-locations.conf" in public_server
    assert "exchange-public-locations.conf" not in internal_server
    upstream = nginx[nginx.index("upstream exchange_accesshttp_public"):]
    upstream = upstream[:upstream.index("}")]
    assert "server 127.0.0.1:8082 " in upstream and "server 127.0.0.1:8182 " in upstream
    assert ":8080" not in upstream and ":8180" not in upstream
    public = (dep.nginx_dir / "exchange-public-locations.conf").read_text()
    lines = [line for line in public.splitlines() if line.startswith("location")]
    assert sorted(lines) == sorted(
        [f"location = {p} {{" for p in PUBLIC_PATHS]
        + [f"location {p} {{" for p in PUBLIC_PATH_PREFIXES]
        + ["location / {", "location /ws {"])
    passes = re.findall(r"proxy_pass (\S+);", public)
    assert set(passes) == {"http://exchange_accesshttp_public", "http://exchange_accessws"}
    catch_all = public[public.index("location / {"):]
    assert catch_all[:catch_all.index("}")].split("{")[1].strip() == "return 404;"
    for listen in ("8000", "0.0.0.0:8000", "8.8.8.8:8000", "[::]:8000", "example.com:8000"):
        with pytest.raises(DeployError, match="loopback or private address"):
            generate(tmp_path / "x", DeployOptions(http_listen=listen))
    for i, listen in enumerate(("10.0.0.5:8000", "192.168.1.2:8000", "[::1]:8000",
                                "localhost:8000", "unix:/run/exchange-internal.sock")):
        dep = generate(tmp_path / f"ok{i}", DeployOptions(http_listen=listen))
        assert f"listen {listen};" in (dep.nginx_dir / "exchange.conf").read_text()


def test_services_never_listen_on_a_public_or_every_address(tmp_path: Path) -> None:
    """--bind / --host reach the matchengine's binary RPC, accesshttp's full API, monitors and
    metrics: only loopback or private addresses."""
    for bind in ("0.0.0.0", "::", "[::]", "8.8.8.8", "2001:4860::1", "example.com"):
        with pytest.raises(DeployError, match="loopback or private address"):
            generate(tmp_path / "x", DeployOptions(bind=bind))
    with pytest.raises(DeployError, match="loopback or private address"):
        generate(tmp_path / "x", DeployOptions(host="8.8.8.8"))
    with pytest.raises(DeployError, match="loopback or private address"):
        generate(tmp_path / "x", DeployOptions(hosts={"matchengine": "0.0.0.0"}))
    assert not (tmp_path / "x").exists()
    for i, bind in enumerate(("127.0.0.1", "10.0.0.5", "192.168.1.2", "::1", "localhost")):
        dep = generate(tmp_path / f"ok{i}", DeployOptions(bind=bind))
        me, = configs(dep, "matchengine")
        assert me["svr"]["bind"][0] == f"tcp@{bind}:7316"


def test_public_upstream_is_never_a_full_api_listener(tmp_path: Path) -> None:
    for upstream in ("127.0.0.1:8080", "localhost:8080", "127.0.0.1:7316", "127.0.0.1:8081"):
        with pytest.raises(DeployError, match="public upstream"):
            generate(tmp_path / "x", DeployOptions(public_upstreams=[upstream]))
    with pytest.raises(DeployError, match="accesshttp-2's svr listener"):
        generate(tmp_path / "y", DeployOptions(
            host="10.0.0.5", instances={"accesshttp": 2},
            public_upstreams=["10.0.0.5:8082", "10.0.0.5:8180"]))
    dep = generate(tmp_path / "ok", DeployOptions(public_upstreams=["127.0.0.1:8082", "10.0.0.9:8080"]))
    assert "server 127.0.0.1:8082 " in (dep.nginx_dir / "exchange.conf").read_text()


def test_command_line_refuses_a_public_bind_or_upstream(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    for extra in (["--bind", "0.0.0.0"], ["--public-upstream", "127.0.0.1:8080"]):
        args = parser.parse_args(["deploy", str(tmp_path / "d"), *extra])
        assert args.func(args) == 2
        err = capsys.readouterr().err
        assert "loopback or private address" in err or "public upstream" in err


def test_options_reach_the_configs(tmp_path: Path) -> None:
    mysql = MysqlConfig(host="db.internal", port=3307, user="u", password="p", name="ignored")
    dep = generate(tmp_path / "d", DeployOptions(
        host="10.1.0.1",
        hosts={"matchengine": "10.1.0.5", "accesshttp-2": "10.1.0.12"},
        mysql=mysql, db_log="log_db", db_history="hist_db",
        sentinels=["10.1.0.7:26379", "10.1.0.8:26379"], sentinel_master="m",
        redis_db=2, kafka="k1:9092,k2:9092", topic_prefix="x_",
        instances={"accesshttp": 2}, ports={"accesshttp": [9001, 9002]},
        auth_url="http://auth/a", sign_url="http://auth/s",
        ssl_certificate="/certs/c.pem", ssl_certificate_key="/certs/k.pem",
        https_listen="8443", http_listen="127.0.0.1:8001", server_name="ex.example",
        systemd_user="exchange", command="/opt/exchange/bin/exchange-server"))
    me, = configs(dep, "matchengine")
    http = configs(dep, "accesshttp")
    mp, = configs(dep, "marketprice")
    ws, = configs(dep, "accessws")
    assert me["svr"]["bind"][0] == "tcp@10.1.0.5:7316"  # each listens where it is reached
    assert me["db_log"] == {"host": "db.internal", "port": 3307, "user": "u", "pass": "p",
                            "name": "log_db"}
    assert me["db_history"]["name"] == "hist_db"
    assert me["kafka_topic_prefix"] == "x_" and me["brokers"] == "k1:9092,k2:9092"
    assert http[0]["svr"]["bind"] == ["tcp@10.1.0.1:9001"]
    assert http[1]["svr"]["bind"] == ["tcp@10.1.0.12:9002"]
    assert http[0]["matchengine"]["addr"] == ["tcp@10.1.0.5:7316"]
    assert http[0]["alert"]["addr"] == "10.1.0.1:4444"
    assert mp["accesshttp"] == "http://10.1.0.1:9001/"
    assert mp["redis"] == {"name": "m", "addr": ["10.1.0.7:26379", "10.1.0.8:26379"], "db": 2}
    assert mp["deals"]["topic"] == "x_deals" and ws["balances"]["topic"] == "x_balances"
    assert (ws["auth_url"], ws["sign_url"]) == ("http://auth/a", "http://auth/s")
    # the market page finds the WebSocket API through nginx's public server
    assert [h["ws_url"] for h in http] == ["wss://ex.example:8443/ws"] * 2
    nginx = (dep.nginx_dir / "exchange.conf").read_text()
    assert "server 10.1.0.1:9001 " in nginx and "server 10.1.0.12:9002 " in nginx
    assert "listen 8443 ssl;" in nginx and "server_name ex.example;" in nginx
    assert "ssl_certificate_key /certs/k.pem;" in nginx
    unit = (dep.root / "systemd" / "exchange-accesshttp-2.service").read_text()
    assert "User=exchange\n" in unit
    assert "ExecStart=/opt/exchange/bin/exchange-server accesshttp -c " in unit
    bin_text = (dep.instance("matchengine").dir / "bin" / "matchengine").read_text()
    assert "exec /opt/exchange/bin/exchange-server matchengine -c " in bin_text
    for service in SERVICES:
        for data in configs(dep, service):
            LOADERS[service](data)


def test_systemd_units(tmp_path: Path) -> None:
    dep = generate(tmp_path / "d", DeployOptions(instances={"accessws": 2},
                                                 lock_dir=tmp_path / "locks"))
    target = (dep.root / "systemd" / "exchange.target").read_text()
    for inst in dep.instances:
        unit = (dep.root / "systemd" / inst.unit).read_text()
        fields = dict(line.split("=", 1) for line in unit.splitlines()
                      if "=" in line and not line.startswith("#"))
        assert fields["Type"] == "simple"
        assert fields["Restart"] == "always" and fields["RestartSec"] == "1"
        assert fields["KillSignal"] == "SIGTERM"
        assert fields["WorkingDirectory"] == str(inst.dir)
        assert fields["WantedBy"] == "exchange.target"
        argv = shlex.split(fields["ExecStart"])
        assert "--daemon" not in argv and "--log-stderr" in argv
        i = argv.index(inst.service)
        assert argv[i + 1:i + 3] == ["-c", str(inst.config_path)]
        assert argv[argv.index("--lock-dir") + 1] == str(inst.lock_dir)
        stop = int(fields["TimeoutStopSec"])
        # the matchengine's final slice: longer than the process runner's 120 s stop budget
        assert stop >= 150 if inst.service == "matchengine" else stop >= 10
        assert inst.unit in target
    assert "exchange-matchengine.service" in \
        (dep.root / "systemd" / "exchange-accesshttp.service").read_text().split("After=")[1]


def test_refuses_bad_options_and_existing_files(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="alertcenter runs as exactly one instance"):
        generate(tmp_path / "a", DeployOptions(instances={"alertcenter": 2}))
    with pytest.raises(DeployError, match="unknown service"):
        generate(tmp_path / "a", DeployOptions(instances={"nosuch": 1}))
    with pytest.raises(DeployError, match="unknown key"):
        generate(tmp_path / "a", DeployOptions(ports={"nosuch": 1}))
    with pytest.raises(DeployError, match="port 8090 on 127.0.0.1: both accessws"):
        generate(tmp_path / "a", DeployOptions(ports={"accessws_monitor": 8090}))
    with pytest.raises(DeployError, match="2 instances need 2 ports"):
        generate(tmp_path / "a", DeployOptions(instances={"accesshttp": 2},
                                               ports={"accesshttp": [9000]}))
    generate(tmp_path / "b")
    with pytest.raises(DeployError, match="exists"):
        generate(tmp_path / "b")
    generate(tmp_path / "b", DeployOptions(force=True, redis_db=3, metrics=False))
    assert configs(Deployment(tmp_path / "b", []), "x") == []
    data = json.loads((tmp_path / "b/alertcenter/conf/config.json").read_text())
    assert data["redis"]["db"] == 3 and "metrics" not in data
    with pytest.raises(DeployError, match="no value for"):
        render("{{nope}}", {}, "t")


def test_templates_keep_the_shell_and_nginx_dollars() -> None:
    """``{{name}}`` is the only placeholder: ``$VAR``, ``${VAR:-...}`` and nginx's ``$host``
    pass through; any other ``{{`` is refused rather than written into a script."""
    text = 'HERE={{dir}}; T=${STOP_TIMEOUT:-{{stop_timeout}}}; echo "$HERE" $$ $host {{dir}}'
    assert render(text, {"dir": "/x", "stop_timeout": 30}) == (
        'HERE=/x; T=${STOP_TIMEOUT:-30}; echo "$HERE" $$ $host /x')
    with pytest.raises(DeployError, match="t: Invalid placeholder"):
        render("{{ $labels.instance }}", {}, "t")


def test_every_row_of_the_services_table_reaches_the_kit(tmp_path: Path) -> None:
    """Each row's ports (by their --port keys), stop timeout, extra directories and systemd
    ordering end up in the generated instance; ``After=`` names every instance of a service
    listed there."""
    ports = {key: 20000 + n for n, key in enumerate(DEFAULT_PORTS)}
    dep = generate(tmp_path / "d", DeployOptions(ports=ports, instances={"readhistory": 2}))
    assert [i.service for i in dep.instances if i.index == 1] == list(SERVICE_TABLE)
    for inst in dep.instances:
        row = SERVICE_TABLE[inst.service]
        assert set(inst.ports) == set(row.ports)
        for role, port in inst.ports.items():
            assert port == ports[row.port_key(role)] + (inst.index - 1) * PORT_STEP
        for sub in row.dirs:
            assert (inst.dir / sub).is_dir()
        assert f"TIMEOUT=${{STOP_TIMEOUT:-{row.stop_timeout}}}" in (
            inst.dir / "shell" / "stop.sh").read_text()
        unit = (dep.root / "systemd" / inst.unit).read_text()
        assert f"TimeoutStopSec={row.stop_timeout}\n" in unit
        assert f"CPUWeight={row.cpu_weight}\n" in unit
        after = re.search(r"^After=network-online.target(.*)$", unit, re.M)
        assert after is not None
        expected = [u for item in row.after for u in (
            [i.unit for i in dep.of(item)] if item in SERVICE_TABLE else [item])]
        assert after.group(1).split() == expected
    # the matchengine outweighs the others on a busy host (its restart, every order)
    assert SERVICE_TABLE["matchengine"].cpu_weight > max(
        row.cpu_weight for name, row in SERVICE_TABLE.items() if name != "matchengine")
    assert "CPUWeight=400\n" in (dep.root / "systemd" / "exchange-matchengine.service").read_text()
    accesshttp = (dep.root / "systemd" / "exchange-accesshttp.service").read_text()
    assert "exchange-readhistory.service exchange-readhistory-2.service" in accesshttp


def test_command_line_defaults_are_the_options_defaults(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    assert options_from_args(parser.parse_args(["deploy", str(tmp_path)])) == DeployOptions()


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["deploy", str(tmp_path / "d"), "--instances", "accesshttp=2",
                              "--port", "accesshttp=9100,9200", "--port", "matchengine=9316",
                              "--mysql-user", "me", "--sentinel", "10.0.0.1:26379",
                              "--sentinel", "10.0.0.2:26379", "--topic-prefix", "t_"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "accesshttp-2" in out and "db init -c" in out
    http = json.loads((tmp_path / "d/accesshttp-2/conf/config.json").read_text())
    assert http["svr"]["bind"] == ["tcp@127.0.0.1:9200"]
    assert http["matchengine"]["addr"] == ["tcp@127.0.0.1:9316"]
    me = json.loads((tmp_path / "d/matchengine/conf/config.json").read_text())
    assert me["db_log"]["user"] == "me" and me["kafka_topic_prefix"] == "t_"
    ac = json.loads((tmp_path / "d/alertcenter/conf/config.json").read_text())
    assert ac["redis"]["addr"] == ["10.0.0.1:26379", "10.0.0.2:26379"]
    # again: refused without --force
    args = parser.parse_args(["deploy", str(tmp_path / "d")])
    assert args.func(args) == 2
    assert "exists" in capsys.readouterr().err


def test_exchange_server_deploy_command(tmp_path: Path) -> None:
    """``exchange-server deploy DIR`` (wired in exchange_server/cli.py)."""
    from exchange_server.cli import main

    assert main(["deploy", str(tmp_path / "d"), "--instances", "readhistory=2"]) == 0
    assert (tmp_path / "d/readhistory-2/conf/config.json").is_file()


# -- several matchengines: one active/standby group (the run is in test_deploy_standby.py) ---------


def test_matchengines_are_one_active_standby_group(tmp_path: Path) -> None:
    from exchange_server.matchprocess.standalone import validate
    from exchange_server.status.collect import targets_from_configs

    dep = generate(tmp_path / "d", DeployOptions(instances={"matchengine": 2, "accesshttp": 2}))
    a, b = dep.of("matchengine")
    assert [i.name for i in dep.instances][:4] == ["alertcenter", "matchengine",
                                                   "matchengine-2", "readhistory"]
    assert (a.ports, b.ports) == ({"svr": 7316, "cli": 7317, "metrics": 27316},
                                  {"svr": 7326, "cli": 7327, "metrics": 27326})
    me = configs(dep, "matchengine")
    for inst, data in zip((a, b), me, strict=True):
        assert data["leader"] == {"lease": 10.0, "renew": 2.0, "instance": inst.name}
        assert data["cli"] == f"tcp@127.0.0.1:{inst.ports['cli']}"
        assert data["metrics"] == {"bind": [f"tcp@127.0.0.1:{inst.ports['metrics']}"]}
        assert data["log"]["path"] == str(inst.dir / "log" / "matchengine")
        assert data["bus_mark_file"] == str(inst.dir / "data" / "bus.mark")
        assert (inst.dir / "data").is_dir()
        assert inst.lock_file == inst.dir / "run" / "matchengine.lock"
        assert f"--lock-dir {inst.dir / 'run'}" in (inst.dir / "bin" / "matchengine").read_text()
        validate(data)  # the matchengine's own start-up checks
    # everything but its own listeners, log and data is the same
    own = ("svr", "cli", "metrics", "log", "leader", "bus_mark_file", "alert")
    assert {k: v for k, v in me[0].items() if k not in own} == \
        {k: v for k, v in me[1].items() if k not in own}
    assert me[0]["db_log"]["name"] == "trade_log" and me[0]["brokers"] == "127.0.0.1:9092"
    # every gateway reaches every engine (a standby's port is closed: the client moves on)
    for gateway in [*configs(dep, "accesshttp"), *configs(dep, "accessws")]:
        assert gateway["matchengine"]["addr"] == [tcp_binds(d)[0] for d in me]
    # the status targets, Prometheus and systemd know both
    targets, _ = targets_from_configs(dep.root)
    urls = {t.name: t.url for t in targets}
    assert (urls["matchengine"], urls["matchengine-2"]) == ("http://127.0.0.1:27316/metrics",
                                                            "http://127.0.0.1:27326/metrics")
    prometheus = (dep.root / "monitoring" / "prometheus.yml").read_text()
    assert '"127.0.0.1:27316"' in prometheus and '"127.0.0.1:27326"' in prometheus
    unit = (dep.root / "systemd" / "exchange-accesshttp.service").read_text()
    assert "exchange-matchengine.service exchange-matchengine-2.service" in unit
    assert "exchange-matchengine-2.service" in (dep.root / "systemd" / "exchange.target").read_text()
    # start_all.sh waits for each console (a standby serves it), then for one active
    start_all = (dep.root / "start_all.sh").read_text()
    assert "start matchengine 127.0.0.1 7317\nstart matchengine-2 127.0.0.1 7327\n" \
        "wait_active matchengine 127.0.0.1:7316 127.0.0.1:7326\nstart readhistory " in start_all
    result = subprocess.run(["bash", "-n", str(dep.root / "start_all.sh")], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert "matchengine-2 matchengine alertcenter" in (dep.root / "stop_all.sh").read_text()


def test_leader_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from exchange_server.common.config import LeaderConfig

    # one matchengine: no leader block unless asked for
    me, = configs(generate(tmp_path / "one"), "matchengine")
    assert "leader" not in me
    dep = generate(tmp_path / "asked", DeployOptions(leader=LeaderConfig(lease=6, renew=1)))
    me, = configs(dep, "matchengine")
    assert me["leader"] == {"lease": 6, "renew": 1, "instance": "matchengine"}
    # nonsense is refused by the matchengine's own validation, before anything is written
    for leader, problem in ((LeaderConfig(lease=3, renew=2), "leader.renew: must be at most half"),
                            (LeaderConfig(lease=0.5, renew=0.1), "leader.lease: must be >= 1"),
                            (LeaderConfig(lease=10, renew=0), "leader.renew: must be >=")):
        with pytest.raises(DeployError, match=f"matchengine: {problem}"):
            generate(tmp_path / "bad", DeployOptions(instances={"matchengine": 2},
                                                     leader=leader))
        assert not (tmp_path / "bad").exists()
    with pytest.raises(DeployError, match="2 instances need 2 ports"):
        generate(tmp_path / "bad", DeployOptions(instances={"matchengine": 2},
                                                 ports={"matchengine_cli": [7317]}))
    # the command line
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["deploy", str(tmp_path / "cli"), "--instances", "matchengine=3",
                              "--leader-lease", "8"])
    assert options_from_args(args).leader == LeaderConfig(lease=8, renew=2)
    assert args.func(args) == 0
    assert "matchengine-3  127.0.0.1       svr 7336, cli 7337" in capsys.readouterr().out
    data = json.loads((tmp_path / "cli/matchengine-3/conf/config.json").read_text())
    assert data["leader"] == {"lease": 8, "renew": 2, "instance": "matchengine-3"}
    args = parser.parse_args(["deploy", str(tmp_path / "cli2"), "--instances", "matchengine=2",
                              "--leader-lease", "2", "--leader-renew", "1.5"])
    assert args.func(args) == 2
    assert "leader.renew: must be at most half of leader.lease" in capsys.readouterr().err


# -- the shell kit, for real ---------------------------------------------------------------------


def lock_held(path: Path) -> bool:
    try:
        with open(path) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return False


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a daemon's zombie waits for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"



def run(script: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(script)], capture_output=True, text=True, timeout=timeout)


def test_shell_kit_on_the_alertcenter(tmp_path: Path,
                                      sentinel_server: tuple[list[str], str]) -> None:
    sentinels, master = sentinel_server
    port = free_port()
    dep = generate(tmp_path / "d", DeployOptions(
        lock_dir=tmp_path / "locks", sentinels=sentinels, sentinel_master=master,
        redis_db=REDIS_DB, ports={"alertcenter": port}))
    inst = dep.instance("alertcenter")
    shell = inst.dir / "shell"
    start = inst.dir / "bin" / "alertcenter"
    client = redis.Redis(db=REDIS_DB)
    client.flushdb()
    try:
        result = run(start)
        assert result.returncode == 0, result.stdout + result.stderr
        wait_port(port)
        assert lock_held(inst.lock_file)
        pid = int(inst.lock_file.read_text())
        # one instance per lock file
        result = run(start)
        assert result.returncode == 1 and "process: alertcenter exist" in result.stdout
        # check_alive: running -> nothing to do
        result = run(shell / "check_alive.sh")
        assert result.returncode == 0 and result.stdout == ""
        assert int(inst.lock_file.read_text()) == pid
        # restart: graceful stop (SIGQUIT), then a new watchdog
        result = run(shell / "restart.sh")
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"alertcenter: stopped (pid {pid})" in result.stdout
        wait_port(port)
        new_pid = int(inst.lock_file.read_text())
        assert new_pid != pid
        assert alive(new_pid) and not alive(pid)
        # it works: an alert line over UDP lands in the Redis list
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"373d26968a5a2b698045deploy-test: [fatal]x.py:1(f): hello\n",
                     ("127.0.0.1", port))
        deadline = time.monotonic() + 60
        while not client.lrange("alert:message", 0, -1):
            assert time.monotonic() < deadline, "no alert in Redis"
            time.sleep(0.05)
        assert "hello" in repr(client.lrange("alert:message", 0, -1))
        # stop: gone, lock free; twice is fine
        result = run(shell / "stop.sh")
        assert result.returncode == 0 and "stopped" in result.stdout, result.stdout
        assert not lock_held(inst.lock_file)
        assert not alive(new_pid)
        result = run(shell / "stop.sh")
        assert result.returncode == 0 and "not running" in result.stdout
        # check_alive (cron): not running -> started
        result = run(shell / "check_alive.sh")
        assert result.returncode == 0 and "not running, starting it" in result.stdout
        wait_port(port)
        assert lock_held(inst.lock_file)
        log = (inst.dir / "log" / "alertcenter.log").read_text()
        assert "server start: alertcenter" in log
    finally:
        run(shell / "stop.sh")
        client.flushdb()
    assert not lock_held(inst.lock_file)
