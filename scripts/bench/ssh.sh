#!/usr/bin/env bash
# devbatch against parallel-ssh, Ansible (raw module) and `xargs -P N ssh` on loopback SSH
# targets: `true` and `uname -a` on 10, 50 and 200 hosts (distinct 127.0.0.X addresses, served
# by private sshd instances on one port), wall time and client CPU, medians of alternating runs.
# Then devbatch's second batch on warm connections inside one process.
#
# Usage: scripts/bench/ssh.sh            (as root, or with sudo for apt-get)
# Settings: TARGETS="10 50 200" RUNS=5
set -euo pipefail
source "$(dirname "$0")/common.sh"
TARGETS="${TARGETS:-10 50 200}"
RUNS="${RUNS:-5}"
MAX=$(echo "$TARGETS" | tr ' ' '\n' | sort -n | tail -1)

ensure_packages openssh-server:/usr/sbin/sshd openssh-client:ssh pssh:parallel-ssh python3-venv:/usr/lib/python3/dist-packages/venv
mkdir -p /run/sshd "$BENCH_CACHE"
if [ ! -x "$BENCH_CACHE/ansible/bin/ansible" ]; then
    echo "bench: installing ansible-core in $BENCH_CACHE/ansible" >&2
    python3 -m venv "$BENCH_CACHE/ansible"
    "$BENCH_CACHE/ansible/bin/pip" install -q ansible-core
fi
ANSIBLE="$BENCH_CACHE/ansible/bin/ansible"
build_devbatch
(cd "$BENCH_ROOT" && cargo build --release --quiet --example repeated_batches)
REUSE="$BENCH_ROOT/target/release/examples/repeated_batches"

WORK=$(mktemp -d /tmp/devbatch-bench-ssh.XXXXXX)
PIDS=()
BENCH_USER=""
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -n "$BENCH_USER" ] && userdel "$BENCH_USER" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# The targets' account. As root: a throw-away user whose shell (/bin/sh) reads no start-up
# files, so that the figures measure the client tools and not this machine's own login account
# (root's ~/.bashrc here runs `pyenv init`, 0.3-0.6 s for every command, which bash sources
# when sshd starts it). Otherwise the current user.
chmod 755 "$WORK"
if [ "$(id -u)" -eq 0 ]; then
    BENCH_USER=devbatch-bench
    userdel "$BENCH_USER" 2>/dev/null || true
    useradd --system --no-create-home --home-dir "$WORK/home" --shell /bin/sh --password "*" "$BENCH_USER"
    mkdir "$WORK/home" && chown "$BENCH_USER" "$WORK/home"
    ME=$BENCH_USER
else
    ME=$(id -un)
fi
ssh-keygen -q -t ed25519 -N '' -f "$WORK/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/id_ed25519"
cp "$WORK/id_ed25519.pub" "$WORK/authorized_keys"
chmod 644 "$WORK/authorized_keys"
PORT=$(free_port)
HOSTKEY=$(cut -d' ' -f1-2 "$WORK/host_key.pub")

# sshd listens on at most 16 addresses; one instance per 16 targets. MaxStartups and
# MaxSessions are raised so that the server's admission limits are not what is measured.
: > "$WORK/known_hosts"
for ((first = 1; first <= MAX; first += 16)); do
    cfg="$WORK/sshd_$first.conf"
    {
        echo "Port $PORT"
        for ((x = first; x < first + 16 && x <= MAX; x++)); do echo "ListenAddress 127.0.0.$((x + 1))"; done
        echo "HostKey $WORK/host_key"
        echo "AuthorizedKeysFile $WORK/authorized_keys"
        echo "PidFile $WORK/sshd_$first.pid"
        echo "StrictModes no"
        echo "UsePAM no"
        echo "PermitRootLogin prohibit-password"
        echo "MaxStartups 1000"
        echo "MaxSessions 50"
        echo "LogLevel ERROR"
    } > "$cfg"
    /usr/sbin/sshd -f "$cfg" -E "$WORK/sshd_$first.log"
    sleep 0.1
    PIDS+=("$(cat "$WORK/sshd_$first.pid")")
done
for ((x = 1; x <= MAX; x++)); do echo "[127.0.0.$((x + 1))]:$PORT $HOSTKEY" >> "$WORK/known_hosts"; done

SSH_OPTS="-i $WORK/id_ed25519 -o UserKnownHostsFile=$WORK/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes -o ControlMaster=no -p $PORT"
for n in $TARGETS; do
    : > "$WORK/hosts_$n"; : > "$WORK/addrs_$n"; : > "$WORK/pool_$n.toml"
    printf '[all]\n' > "$WORK/inventory_$n"
    for ((x = 1; x <= n; x++)); do
        addr="127.0.0.$((x + 1))"
        echo "$addr:$PORT" >> "$WORK/hosts_$n"
        echo "$addr" >> "$WORK/addrs_$n"
        echo "$addr ansible_port=$PORT" >> "$WORK/inventory_$n"
        cat >> "$WORK/pool_$n.toml" <<POOL
[[devices]]
backend = "ssh"
id = "host-$x"
host = "$addr"
port = $PORT
user = "$ME"
identity_files = ["$WORK/id_ed25519"]
known_hosts = ["$WORK/known_hosts"]
POOL
    done
    cat >> "$WORK/inventory_$n" <<INV
[all:vars]
ansible_user=$ME
ansible_ssh_private_key_file=$WORK/id_ed25519
ansible_ssh_common_args=-o UserKnownHostsFile=$WORK/known_hosts -o StrictHostKeyChecking=yes
INV
done
export ANSIBLE_HOST_KEY_CHECKING=True ANSIBLE_SSH_ARGS="-o ControlMaster=no" ANSIBLE_NOCOLOR=1

echo "# SSH: devbatch vs parallel-ssh vs Ansible vs xargs ssh ($(nproc) cores, runs=$RUNS)"
for n in $TARGETS; do
    for cmd in "true" "uname -a"; do
        compare --runs "$RUNS" --title "\`$cmd\` on $n targets, $n at once" \
            "devbatch=$DEVBATCH --pool $WORK/pool_$n.toml run shell --param-str 'cmd=$cmd' -j $n -q -o json" \
            "parallel-ssh=parallel-ssh -p $n -h $WORK/hosts_$n -l $ME -x '$SSH_OPTS' -t 60 '$cmd'" \
            "ansible raw=$ANSIBLE all -i $WORK/inventory_$n -m raw -a '$cmd' -f $n" \
            "xargs ssh=xargs -P $n -I{} ssh $SSH_OPTS $ME@{} '$cmd' < $WORK/addrs_$n"
    done
done

echo
echo "### Connection reuse: three batches of \`true\` on $MAX targets in one process"
"$REUSE" "$WORK/pool_$MAX.toml" true 3
