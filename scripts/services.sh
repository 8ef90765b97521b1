#!/usr/bin/env bash
# Test infrastructure: install and run the real servers the exchange-server
# tests talk to (MariaDB, Redis + one Redis Sentinel, single-node Kafka in
# KRaft mode), all bound to 127.0.0.1, without systemd or docker.
#
#   scripts/services.sh up     [all|mariadb|redis|kafka ...]   install if missing, start, wait until ready
#   scripts/services.sh down   [all|mariadb|redis|kafka ...]   stop what this script started
#   scripts/services.sh status                                 one line per server; exit 1 if any is down
#   scripts/services.sh env                                    export lines: eval "$(scripts/services.sh env)"
#
# State (data, logs, pid files, Kafka jars) lives in
# ${EXCHANGE_SERVICES_DIR:-/var/tmp/exchange-server-services}, never in the repo.
# See scripts/README-services.md.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE_DIR=${EXCHANGE_SERVICES_DIR:-/var/tmp/exchange-server-services}

HOST=127.0.0.1
MYSQL_PORT=${EXCHANGE_MYSQL_PORT:-3306}
MYSQL_USER=exchange
MYSQL_PASSWORD=exchange
REDIS_PORT=${EXCHANGE_REDIS_PORT:-6379}
SENTINEL_PORT=${EXCHANGE_SENTINEL_PORT:-26379}
SENTINEL_MASTER=mymaster
KAFKA_PORT=${EXCHANGE_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${EXCHANGE_KAFKA_CONTROLLER_PORT:-9093}
KAFKA_TOPICS=(deals orders balances stops)

MARIADB_DIR=$STATE_DIR/mariadb
MARIADB_DATA=$MARIADB_DIR/data
MARIADB_SOCK=$MARIADB_DIR/mysqld.sock
MARIADB_PID=$MARIADB_DIR/mariadbd.pid
MARIADB_LOG=$MARIADB_DIR/mariadb.log

REDIS_DIR=$STATE_DIR/redis
REDIS_PID=$REDIS_DIR/redis.pid
REDIS_LOG=$REDIS_DIR/redis.log
SENTINEL_CONF=$REDIS_DIR/sentinel.conf
SENTINEL_PID=$REDIS_DIR/sentinel.pid
SENTINEL_LOG=$REDIS_DIR/sentinel.log

KAFKA_DIR=$STATE_DIR/kafka
KAFKA_LIBS=$KAFKA_DIR/libs
KAFKA_POM=$SCRIPT_DIR/kafka/pom.xml
KAFKA_DATA=$KAFKA_DIR/data
KAFKA_CONF=$KAFKA_DIR/server.properties
KAFKA_LOG4J=$KAFKA_DIR/log4j.properties
KAFKA_TOOLS_LOG4J=$KAFKA_DIR/tools-log4j.properties
KAFKA_CLUSTER_ID_FILE=$KAFKA_DIR/cluster.id
KAFKA_PID=$KAFKA_DIR/kafka.pid
KAFKA_LOGS=$KAFKA_DIR/logs
KAFKA_OUT=$KAFKA_LOGS/kafka.out
KAFKA_MVN_LOG=$KAFKA_DIR/mvn.log

APT_LOG=$STATE_DIR/apt.log

# Seconds to wait for each server to become ready.
READY_TIMEOUT=${EXCHANGE_SERVICES_TIMEOUT:-120}

# ---------------------------------------------------------------- helpers --

log() { printf '[services] %s\n' "$*" >&2; }

# die SERVICE MESSAGE [LOGFILE...]: report the failure, show the logs' tails, exit 1.
die() {
    local svc=$1 msg=$2 f
    shift 2
    printf '[services] ERROR: %s: %s\n' "$svc" "$msg" >&2
    for f in "$@"; do
        if [[ -s $f ]]; then
            printf '[services] ---- last 40 lines of %s ----\n' "$f" >&2
            tail -n 40 "$f" >&2 || true
            printf '[services] ---- end of %s ----\n' "$f" >&2
        fi
    done
    exit 1
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

# pid_of PIDFILE NAME: print the pid in PIDFILE if that process is alive and
# its command line contains NAME (guards against stale pid files / pid reuse).
pid_of() {
    local file=$1 name=$2 pid
    [[ -s $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$name" || return 1
    printf '%s\n' "$pid"
}

# stop_pid SERVICE PIDFILE NAME PORT TIMEOUT: SIGTERM, wait, SIGKILL as a
# last resort. Only processes started by this script (pid file) are touched.
stop_pid() {
    local svc=$1 file=$2 name=$3 port=$4 wait_s=$5 pid i
    if ! pid=$(pid_of "$file" "$name"); then
        rm -f "$file"
        if port_open "$port"; then
            log "$svc: something listens on $HOST:$port but was not started by this script; leaving it alone"
        else
            log "$svc: not running"
        fi
        return 0
    fi
    log "$svc: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < wait_s * 5; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$svc: pid $pid still alive after ${wait_s}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$file"
    log "$svc: stopped"
}

# Close every file descriptor above 2 in the current (sub)shell, so servers
# started from it hold no pipe of the caller (CI, $(...)) and not our lock.
close_extra_fds() {
    local f fd
    for f in /proc/self/fd/*; do
        fd=${f##*/}
        if [[ $fd =~ ^[0-9]+$ ]] && ((fd > 2)); then
            eval "exec $fd>&-" 2>/dev/null || true
        fi
    done
}

# run_detached OUTFILE CMD...: start CMD in the background in its own session,
# detached from our stdin/stdout/stderr and other fds. Sets DETACHED_PID.
DETACHED_PID=
run_detached() {
    local out=$1
    shift
    (
        close_extra_fds
        exec nohup setsid "$@" >>"$out" 2>&1 </dev/null
    ) &
    DETACHED_PID=$!
}

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

APT_UPDATED=0
OWN_POLICY_RC=0
# apt_install PKG...: install the packages that are missing (apt-get update once).
apt_install() {
    local missing=() p rc=0
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) -ne 0 ]]; then
        die apt "need root to install: ${missing[*]}"
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ((APT_UPDATED == 0)); then
        log "apt-get update"
        mkdir -p "$STATE_DIR"
        apt-get update -qq >>"$APT_LOG" 2>&1 || die apt "apt-get update failed" "$APT_LOG"
        APT_UPDATED=1
    fi
    # Keep the packages' maintainer scripts from starting their own servers
    # (mariadb on 3306, redis on 6379 via /etc/init.d): we run our own.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        OWN_POLICY_RC=1
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
    fi
    log "apt-get install ${missing[*]} (output in $APT_LOG)"
    apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" >>"$APT_LOG" 2>&1 || rc=$?
    if ((OWN_POLICY_RC)); then
        rm -f /usr/sbin/policy-rc.d
        OWN_POLICY_RC=0
    fi
    ((rc == 0)) || die apt "apt-get install ${missing[*]} failed (exit $rc)" "$APT_LOG"
}

# wait_until SECONDS CMD...: retry CMD every 0.5s until it succeeds or time is up.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

# ---------------------------------------------------------------- mariadb --

mysql_tcp() {
    timeout 10 mariadb --no-defaults --protocol=TCP -h "$HOST" -P "$MYSQL_PORT" \
        -u "$MYSQL_USER" -p"$MYSQL_PASSWORD" --connect-timeout=3 -N -B "$@"
}

mysql_root_socket() {
    timeout 20 mariadb --no-defaults --socket="$MARIADB_SOCK" -u root --connect-timeout=3 -N -B "$@"
}

mariadb_ready() {
    command -v mariadb >/dev/null 2>&1 &&
        [[ $(mysql_tcp -e 'SELECT 1' 2>/dev/null) == 1 ]]
}

mariadb_up() {
    if mariadb_ready; then
        log "mariadb: already up on $HOST:$MYSQL_PORT"
        return 0
    fi
    apt_install mariadb-server mariadb-client
    if mariadb_ready; then
        log "mariadb: already up on $HOST:$MYSQL_PORT"
        return 0
    fi
    mkdir -p "$MARIADB_DATA" "$MARIADB_DIR/tmp"

    local pid
    if ! pid=$(pid_of "$MARIADB_PID" mariadbd); then
        if port_open "$MYSQL_PORT"; then
            die mariadb "port $HOST:$MYSQL_PORT is taken by another process that does not accept $MYSQL_USER/$MYSQL_PASSWORD (set EXCHANGE_MYSQL_PORT to use another port)"
        fi
        if [[ ! -d $MARIADB_DATA/mysql ]]; then
            log "mariadb: initialising $MARIADB_DATA"
            mariadb-install-db --no-defaults --user=root --datadir="$MARIADB_DATA" \
                --skip-test-db --auth-root-authentication-method=socket \
                >"$MARIADB_DIR/install-db.log" 2>&1 ||
                die mariadb "mariadb-install-db failed" "$MARIADB_DIR/install-db.log"
        fi
        log "mariadb: starting on $HOST:$MYSQL_PORT"
        rm -f "$MARIADB_PID"
        # --no-defaults: ignore /etc/mysql (socket/datadir of the packaged service).
        run_detached "$MARIADB_DIR/mariadbd.out" mariadbd --no-defaults --user=root \
            --datadir="$MARIADB_DATA" --tmpdir="$MARIADB_DIR/tmp" \
            --bind-address="$HOST" --port="$MYSQL_PORT" --socket="$MARIADB_SOCK" \
            --pid-file="$MARIADB_PID" --log-error="$MARIADB_LOG" \
            --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
            --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=1 \
            --max-connections=500 --skip-name-resolve
        pid=$DETACHED_PID
        echo "$pid" >"$MARIADB_PID"
    fi

    local deadline=$((SECONDS + READY_TIMEOUT))
    until mysql_root_socket -e 'SELECT 1' >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null ||
            die mariadb "mariadbd (pid $pid) exited during startup" "$MARIADB_LOG" "$MARIADB_DIR/mariadbd.out"
        ((SECONDS < deadline)) ||
            die mariadb "not answering on $MARIADB_SOCK after ${READY_TIMEOUT}s" "$MARIADB_LOG"
        sleep 0.5
    done
    mysql_root_socket >/dev/null <<SQL || die mariadb "could not create user $MYSQL_USER" "$MARIADB_LOG"
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'127.0.0.1' IDENTIFIED BY '$MYSQL_PASSWORD';
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'localhost' IDENTIFIED BY '$MYSQL_PASSWORD';
ALTER USER '$MYSQL_USER'@'127.0.0.1' IDENTIFIED BY '$MYSQL_PASSWORD';
ALTER USER '$MYSQL_USER'@'localhost' IDENTIFIED BY '$MYSQL_PASSWORD';
GRANT ALL ON *.* TO '$MYSQL_USER'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL ON *.* TO '$MYSQL_USER'@'localhost' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
    wait_until 30 mariadb_ready ||
        die mariadb "$MYSQL_USER@$HOST:$MYSQL_PORT does not answer SELECT 1" "$MARIADB_LOG"
    log "mariadb: ready on $HOST:$MYSQL_PORT ($(mysql_tcp -e 'SELECT VERSION()' 2>/dev/null))"
}

mariadb_down() { stop_pid mariadb "$MARIADB_PID" mariadbd "$MYSQL_PORT" 120; }

mariadb_status() {
    if mariadb_ready; then
        echo "mariadb   up    $HOST:$MYSQL_PORT$(pid_of "$MARIADB_PID" mariadbd | sed 's/^/ pid /')"
    else
        echo "mariadb   down  $HOST:$MYSQL_PORT"
        return 1
    fi
}

# ------------------------------------------------------- redis + sentinel --

redis_ready() {
    command -v redis-cli >/dev/null 2>&1 &&
        [[ $(timeout 5 redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

# Prints "HOST PORT" of the master the sentinel knows.
sentinel_master() {
    timeout 5 redis-cli -h "$HOST" -p "$SENTINEL_PORT" \
        SENTINEL get-master-addr-by-name "$SENTINEL_MASTER" 2>/dev/null | paste -sd ' '
}

sentinel_ready() {
    command -v redis-cli >/dev/null 2>&1 &&
        [[ $(sentinel_master) == "$HOST $REDIS_PORT" ]]
}

redis_up() {
    if redis_ready && sentinel_ready; then
        log "redis: already up on $HOST:$REDIS_PORT, sentinel on $HOST:$SENTINEL_PORT"
        return 0
    fi
    apt_install redis-server redis-tools
    mkdir -p "$REDIS_DIR"

    if redis_ready; then
        log "redis: already up on $HOST:$REDIS_PORT"
    else
        if port_open "$REDIS_PORT"; then
            die redis "port $HOST:$REDIS_PORT is taken by something that does not answer PING (set EXCHANGE_REDIS_PORT to use another port)"
        fi
        log "redis: starting on $HOST:$REDIS_PORT"
        rm -f "$REDIS_PID"
        (
            close_extra_fds
            exec redis-server --daemonize yes --save '' --appendonly no \
                --bind "$HOST" --port "$REDIS_PORT" \
                --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" --dir "$REDIS_DIR" </dev/null
        ) ||
            die redis "redis-server failed to start" "$REDIS_LOG"
        wait_until "$READY_TIMEOUT" redis_ready ||
            die redis "no PONG from $HOST:$REDIS_PORT after ${READY_TIMEOUT}s" "$REDIS_LOG"
        log "redis: ready on $HOST:$REDIS_PORT"
    fi

    if sentinel_ready; then
        log "sentinel: already up on $HOST:$SENTINEL_PORT"
        return 0
    fi
    if port_open "$SENTINEL_PORT"; then
        die sentinel "port $HOST:$SENTINEL_PORT is taken by something that does not report master '$SENTINEL_MASTER' = $HOST:$REDIS_PORT (got '$(sentinel_master)')"
    fi
    log "sentinel: starting on $HOST:$SENTINEL_PORT (master '$SENTINEL_MASTER' = $HOST:$REDIS_PORT)"
    # Sentinel rewrites its config file; write a fresh one on every start.
    cat >"$SENTINEL_CONF" <<EOF
bind $HOST
port $SENTINEL_PORT
daemonize yes
pidfile $SENTINEL_PID
logfile $SENTINEL_LOG
dir $REDIS_DIR
sentinel monitor $SENTINEL_MASTER $HOST $REDIS_PORT 1
sentinel down-after-milliseconds $SENTINEL_MASTER 5000
sentinel failover-timeout $SENTINEL_MASTER 10000
sentinel parallel-syncs $SENTINEL_MASTER 1
EOF
    rm -f "$SENTINEL_PID"
    (
        close_extra_fds
        exec redis-server "$SENTINEL_CONF" --sentinel </dev/null
    ) ||
        die sentinel "redis-server --sentinel failed to start" "$SENTINEL_LOG"
    wait_until "$READY_TIMEOUT" sentinel_ready ||
        die sentinel "SENTINEL get-master-addr-by-name $SENTINEL_MASTER on $HOST:$SENTINEL_PORT did not return $HOST $REDIS_PORT" "$SENTINEL_LOG"
    log "sentinel: ready on $HOST:$SENTINEL_PORT"
}

redis_down() {
    stop_pid sentinel "$SENTINEL_PID" redis-server "$SENTINEL_PORT" 30
    stop_pid redis "$REDIS_PID" redis-server "$REDIS_PORT" 30
}

redis_status() {
    local rc=0
    if redis_ready; then
        echo "redis     up    $HOST:$REDIS_PORT$(pid_of "$REDIS_PID" redis-server | sed 's/^/ pid /')"
    else
        echo "redis     down  $HOST:$REDIS_PORT"
        rc=1
    fi
    if sentinel_ready; then
        echo "sentinel  up    $HOST:$SENTINEL_PORT master $SENTINEL_MASTER=$HOST:$REDIS_PORT$(pid_of "$SENTINEL_PID" redis-server | sed 's/^/ pid /')"
    else
        echo "sentinel  down  $HOST:$SENTINEL_PORT"
        rc=1
    fi
    return $rc
}

# ------------------------------------------------------------------ kafka --

kafka_pom_hash() { sha256sum "$KAFKA_POM" | cut -c1-16; }

kafka_libs_ok() {
    [[ -f $KAFKA_LIBS/.complete-$(kafka_pom_hash) ]]
}

# Download the jars with Maven into $KAFKA_LIBS (skipped when already there).
kafka_fetch_libs() {
    kafka_libs_ok && return 0
    command -v mvn >/dev/null 2>&1 || die kafka "mvn not found (apt-get install maven)"
    log "kafka: fetching jars from Maven Central ($KAFKA_POM)"
    mkdir -p "$KAFKA_DIR"
    rm -rf "$KAFKA_LIBS.tmp"
    if ! mvn -B -q -f "$KAFKA_POM" dependency:copy-dependencies \
        -DoutputDirectory="$KAFKA_LIBS.tmp" -DincludeScope=runtime \
        >"$KAFKA_MVN_LOG" 2>&1; then
        die kafka "mvn dependency:copy-dependencies failed" "$KAFKA_MVN_LOG"
    fi
    rm -rf "$KAFKA_LIBS"
    mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
    touch "$KAFKA_LIBS/.complete-$(kafka_pom_hash)"
    log "kafka: $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars in $KAFKA_LIBS"
}

# Short-lived JVM for the Kafka CLI classes: fast start-up, warnings only.
kafka_java_tool() {
    timeout 120 java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto \
        -Dlog4j.configuration="file:$KAFKA_TOOLS_LOG4J" \
        -cp "$KAFKA_LIBS/*" "$@"
}

kafka_topics() {
    kafka_java_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$HOST:$KAFKA_PORT" "$@"
}

# Lists the topics (also the readiness probe: a real metadata round trip).
kafka_list_topics() {
    kafka_libs_ok || return 1
    kafka_topics --list 2>>"$KAFKA_LOGS/tools.log"
}

kafka_write_configs() {
    mkdir -p "$KAFKA_DATA" "$KAFKA_LOGS"
    cat >"$KAFKA_CONF" <<EOF
# Generated by scripts/services.sh on every start; edits are lost.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DATA
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
auto.create.topics.enable=true
delete.topic.enable=true
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=168
log.segment.bytes=134217728
EOF
    cat >"$KAFKA_LOG4J" <<EOF
log4j.rootLogger=INFO, kafkaAppender
log4j.appender.kafkaAppender=org.apache.log4j.RollingFileAppender
log4j.appender.kafkaAppender.File=$KAFKA_LOGS/server.log
log4j.appender.kafkaAppender.MaxFileSize=50MB
log4j.appender.kafkaAppender.MaxBackupIndex=3
log4j.appender.kafkaAppender.layout=org.apache.log4j.PatternLayout
log4j.appender.kafkaAppender.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.network.RequestChannel\$=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.authorizer.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
EOF
    cat >"$KAFKA_TOOLS_LOG4J" <<'EOF'
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
}

kafka_ensure_topics() {
    local existing t
    existing=$(kafka_list_topics) || die kafka "listing topics failed" "$KAFKA_LOGS/tools.log"
    for t in "${KAFKA_TOPICS[@]}"; do
        grep -qx -- "$t" <<<"$existing" && continue
        log "kafka: creating topic $t"
        kafka_topics --create --if-not-exists --topic "$t" \
            --partitions 1 --replication-factor 1 >/dev/null 2>>"$KAFKA_LOGS/tools.log" ||
            die kafka "creating topic $t failed" "$KAFKA_LOGS/tools.log" "$KAFKA_LOGS/server.log"
    done
}

kafka_up() {
    mkdir -p "$KAFKA_LOGS"
    if port_open "$KAFKA_PORT" && kafka_list_topics >/dev/null; then
        kafka_ensure_topics
        log "kafka: already up on $HOST:$KAFKA_PORT"
        return 0
    fi
    command -v java >/dev/null 2>&1 || apt_install openjdk-17-jre-headless
    command -v mvn >/dev/null 2>&1 || kafka_libs_ok || apt_install maven
    kafka_wait_fetch
    kafka_fetch_libs

    local pid
    if ! pid=$(pid_of "$KAFKA_PID" kafka.Kafka); then
        local p
        for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
            port_open "$p" &&
                die kafka "port $HOST:$p is taken by another process (set EXCHANGE_KAFKA_PORT / EXCHANGE_KAFKA_CONTROLLER_PORT)"
        done
        kafka_write_configs
        if [[ ! -s $KAFKA_CLUSTER_ID_FILE ]]; then
            if ! kafka_java_tool kafka.tools.StorageTool random-uuid 2>>"$KAFKA_LOGS/tools.log" \
                | tail -n 1 >"$KAFKA_CLUSTER_ID_FILE.tmp" || [[ ! -s $KAFKA_CLUSTER_ID_FILE.tmp ]]; then
                die kafka "StorageTool random-uuid failed" "$KAFKA_LOGS/tools.log"
            fi
            mv "$KAFKA_CLUSTER_ID_FILE.tmp" "$KAFKA_CLUSTER_ID_FILE"
        fi
        if [[ ! -f $KAFKA_DATA/meta.properties ]]; then
            log "kafka: formatting $KAFKA_DATA (cluster id $(cat "$KAFKA_CLUSTER_ID_FILE"))"
            kafka_java_tool kafka.tools.StorageTool format --ignore-formatted \
                -t "$(cat "$KAFKA_CLUSTER_ID_FILE")" -c "$KAFKA_CONF" \
                >>"$KAFKA_LOGS/tools.log" 2>&1 ||
                die kafka "StorageTool format failed" "$KAFKA_LOGS/tools.log"
        fi
        log "kafka: starting on $HOST:$KAFKA_PORT (controller $HOST:$KAFKA_CONTROLLER_PORT)"
        run_detached "$KAFKA_OUT" java -Xmx512m -Xms256m -server -XX:+UseG1GC \
            -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
            -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
            -Dlog4j.configuration="file:$KAFKA_LOG4J" -Dkafka.logs.dir="$KAFKA_LOGS" \
            -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_CONF"
        pid=$DETACHED_PID
        echo "$pid" >"$KAFKA_PID"
    fi

    local deadline=$((SECONDS + READY_TIMEOUT))
    until port_open "$KAFKA_PORT" && kafka_list_topics >/dev/null; do
        kill -0 "$pid" 2>/dev/null ||
            die kafka "broker (pid $pid) exited during startup" "$KAFKA_LOGS/server.log" "$KAFKA_OUT"
        ((SECONDS < deadline)) ||
            die kafka "no metadata from $HOST:$KAFKA_PORT after ${READY_TIMEOUT}s" "$KAFKA_LOGS/server.log" "$KAFKA_OUT" "$KAFKA_LOGS/tools.log"
        sleep 1
    done
    kafka_ensure_topics
    log "kafka: ready on $HOST:$KAFKA_PORT (topics: ${KAFKA_TOPICS[*]})"
}

kafka_down() { stop_pid kafka "$KAFKA_PID" kafka.Kafka "$KAFKA_PORT" 90; }

kafka_status() {
    if port_open "$KAFKA_PORT" && kafka_list_topics >/dev/null; then
        echo "kafka     up    $HOST:$KAFKA_PORT$(pid_of "$KAFKA_PID" kafka.Kafka | sed 's/^/ pid /')"
    else
        echo "kafka     down  $HOST:$KAFKA_PORT"
        return 1
    fi
}

# The Maven download of the Kafka jars runs in the background while apt-get
# installs MariaDB/Redis, when both are needed (first-time setup).
KAFKA_FETCH_BG_PID=
kafka_start_bg_fetch() {
    kafka_libs_ok && return 0
    command -v mvn >/dev/null 2>&1 || return 0
    command -v java >/dev/null 2>&1 || return 0
    port_open "$KAFKA_PORT" && return 0
    mkdir -p "$KAFKA_DIR"
    (
        exec 9>&-
        kafka_fetch_libs
    ) &
    KAFKA_FETCH_BG_PID=$!
}
kafka_wait_fetch() {
    [[ -n $KAFKA_FETCH_BG_PID ]] || return 0
    local pid=$KAFKA_FETCH_BG_PID
    KAFKA_FETCH_BG_PID=
    wait "$pid" || exit 1 # the subshell already printed the error
}

# ------------------------------------------------------------------- main --

cleanup() {
    if [[ -n $KAFKA_FETCH_BG_PID ]]; then
        kill "$KAFKA_FETCH_BG_PID" 2>/dev/null || true
    fi
    if ((OWN_POLICY_RC)); then rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

# Serialise concurrent up/down runs on the same state dir.
lock_state_dir() {
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/.lock"
    if ! flock -w 600 9; then
        die services "another services.sh run holds $STATE_DIR/.lock"
    fi
}

usage() {
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

# Expand service arguments ("all" or none = every service) into SVCS, in
# start order.
SVCS=()
services_from_args() {
    local s w names
    SVCS=()
    (($#)) || set -- all
    for s in "$@"; do
        case $s in
        all) names=(mariadb redis kafka) ;;
        mariadb | mysql) names=(mariadb) ;;
        redis | sentinel) names=(redis) ;;
        kafka) names=(kafka) ;;
        *) log "unknown service '$s' (expected all, mariadb, redis or kafka)"; exit 2 ;;
        esac
        for w in "${names[@]}"; do
            [[ " ${SVCS[*]} " == *" $w "* ]] || SVCS+=("$w")
        done
    done
}

cmd_up() {
    local s
    services_from_args "$@"
    mkdir -p "$STATE_DIR"
    local start=$SECONDS pkgs=()
    if [[ " ${SVCS[*]} " == *" kafka "* ]]; then
        kafka_start_bg_fetch
    fi
    # First-time setup: one apt-get run for every package still missing.
    if [[ " ${SVCS[*]} " == *" mariadb "* ]] && ! mariadb_ready; then
        pkgs+=(mariadb-server mariadb-client)
    fi
    if [[ " ${SVCS[*]} " == *" redis "* ]] && ! { redis_ready && sentinel_ready; }; then
        pkgs+=(redis-server redis-tools)
    fi
    ((${#pkgs[@]} == 0)) || apt_install "${pkgs[@]}"
    for s in "${SVCS[@]}"; do
        "${s}_up"
    done
    kafka_wait_fetch
    log "up: ${SVCS[*]} ready in $((SECONDS - start))s"
}

cmd_down() {
    local i
    services_from_args "$@"
    for ((i = ${#SVCS[@]} - 1; i >= 0; i--)); do
        "${SVCS[i]}_down"
    done
}

cmd_status() {
    local rc=0
    mariadb_status || rc=1
    redis_status || rc=1
    kafka_status || rc=1
    return $rc
}

cmd_env() {
    cat <<EOF
export EXCHANGE_MYSQL_HOST=$HOST
export EXCHANGE_MYSQL_PORT=$MYSQL_PORT
export EXCHANGE_MYSQL_USER=$MYSQL_USER
export EXCHANGE_MYSQL_PASSWORD=$MYSQL_PASSWORD
export EXCHANGE_REDIS_HOST=$HOST
export EXCHANGE_REDIS_PORT=$REDIS_PORT
export EXCHANGE_SENTINEL_ADDR=$HOST:$SENTINEL_PORT
export EXCHANGE_SENTINEL_MASTER=$SENTINEL_MASTER
export EXCHANGE_KAFKA_BROKERS=$HOST:$KAFKA_PORT
EOF
}

main() {
    (($#)) || usage
    local cmd=$1
    shift
    case $cmd in
    up) lock_state_dir; cmd_up "$@" ;;
    down | stop) lock_state_dir; cmd_down "$@" ;;
    status) cmd_status ;;
    env) cmd_env ;;
    -h | --help | help) usage 0 ;;
    *) log "unknown command '$cmd'"; usage ;;
    esac
}

main "$@"
