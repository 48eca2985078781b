#!/bin/bash
# The guest side of integration/tests/it/systemd_vm.rs: runs as root in the Debian guest with
# systemd as PID 1 (vmtest::systemd), from /vmjob (corral, systemd/ of the repo, this script).
# Reports what it saw as `@@SYSVM key value@@` markers, which the host asserts; every wait here
# is bounded (`timeout`, or a polling loop with a deadline), and the host bounds the whole VM.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mark() { echo "@@SYSVM $*@@"; }
say() { echo "job: $*"; }
now_ms() { date +%s%3N; }

C=/etc/corral/certs
# Shared with the tasks (user nobody, private /tmp): their cgroup paths and the end trigger.
R=/run/corral-sysvm
mkdir -p "$R" && chmod 1777 "$R"
export CORRAL_MASTER=127.0.0.1:5050 CORRAL_CA=$C/ca.pem

dump() {
    say "---- diagnostics ----"
    systemctl --no-pager status corral-master corral-agent 2>&1 | head -40
    say "---- journalctl -u corral-agent (tail) ----"
    journalctl --no-pager -u corral-agent -n 60 -o short-monotonic 2>&1
    say "---- journalctl -u corral-master (tail) ----"
    journalctl --no-pager -u corral-master -n 15 -o short-monotonic 2>&1
    say "---- cgroups of system.slice ----"
    systemd-cgls --no-pager /system.slice 2>&1 | head -40
}
fatal() { mark "fatal $*"; dump; exit 1; }

# step NAME LIMIT_SECS CMD...: runs CMD under `timeout`, prints its output and a marker
# `step_NAME rc=RC ms=MS`.
step() {
    local name=$1 limit=$2 t0 rc
    shift 2
    t0=$(now_ms)
    timeout "$limit" "$@" >"$R/step-$name.log" 2>&1
    rc=$?
    mark "step_$name rc=$rc ms=$(($(now_ms) - t0))"
    sed "s/^/  $name: /" "$R/step-$name.log" | tail -15
    return $rc
}

cat >"$R/state.py" <<'EOF'
import json, sys
s = json.load(sys.stdin)
agents = ",".join(a["status"] for a in s["agents"]) or "-"
tasks = sorted((t["name"], t["state"]) for t in s["tasks"] if t["name"].startswith("sysvm-"))
print("agents=%s tasks=%s" % (agents, ",".join("%s:%s" % t for t in tasks) or "-"))
EOF

# One line from `corral state --json` as the operator: agents=STATUS,... tasks=NAME:STATE,...
summary() {
    CORRAL_CERT=$C/operator.pem CORRAL_KEY=$C/operator-key.pem \
        timeout 15 corral state --json >"$R/state.json" 2>"$R/state.err" \
        && python3 "$R/state.py" <"$R/state.json"
}

# wait_state SECS GLOB: polls the summary until it matches GLOB; prints the last one.
wait_state() {
    local deadline=$(($(now_ms) + $1 * 1000)) s
    while :; do
        s=$(summary 2>/dev/null)
        # shellcheck disable=SC2254
        case "$s" in $2) echo "$s"; return 0 ;; esac
        if [ "$(now_ms)" -ge "$deadline" ]; then
            echo "${s:-no state: $(tail -n 1 "$R/state.err" 2>/dev/null)}"
            return 1
        fi
        sleep 0.3
    done
}

# wait_registered SECS OLD_PID: polls until the agent's main process, not OLD_PID, logged its
# registration.
wait_registered() {
    local deadline=$(($(now_ms) + $1 * 1000)) pid
    while :; do
        pid=$(systemctl show -p MainPID --value corral-agent)
        if [ "${pid:-0}" != 0 ] && [ "$pid" != "$2" ] \
            && journalctl --no-pager -o cat "_PID=$pid" 2>/dev/null | grep -q 'registered with master'; then
            echo "pid=$pid"
            return 0
        fi
        if [ "$(now_ms)" -ge "$deadline" ]; then
            echo "pid=${pid:-0} state=$(systemctl is-active corral-agent)"
            return 1
        fi
        sleep 0.3
    done
}

limits_of() {
    local cg
    cg=$(cat "$R/task-$1.cgroup")
    local d=/sys/fs/cgroup$cg
    echo "memory.max=$(cat "$d/memory.max" 2>&1) cpu.max=$(tr ' ' _ <"$d/cpu.max" 2>&1) pids.max=$(cat "$d/pids.max" 2>&1)"
}

# alive N: whether every process recorded for task N still runs in the same cgroup.
alive() {
    local cg n=0 ok=0 p
    cg=$(cat "$R/task-$1.cgroup")
    for p in $(cat "$R/task-$1.pids"); do
        n=$((n + 1))
        if [ "$(cut -d: -f3- "/proc/$p/cgroup" 2>/dev/null)" = "$cg" ]; then ok=$((ok + 1)); fi
    done
    if [ "$n" -gt 0 ] && [ "$ok" = "$n" ]; then echo "yes $ok/$n"; else echo "no $ok/$n"; fi
}

# check PHASE: limits and liveness of both tasks, and their state in the master.
check() {
    local n
    for n in a b; do
        mark "limits_$1_$n $(limits_of $n)"
        mark "alive_$1_$n $(alive $n)"
    done
}

# --- 1. The guest is what the test claims -------------------------------------------------
mark "pid1 $(cat /proc/1/comm)"
mark "controllers $(cat /sys/fs/cgroup/cgroup.controllers)"
mark "v1_mounts $(awk '$3 == "cgroup"' /proc/mounts | wc -l)"
mark "systemd $(systemctl --version | head -n 1)"

# --- 2. Install, certificates, start -----------------------------------------------------------
step install 60 /vmjob/systemd/install.sh /vmjob/corral || fatal "systemd/install.sh failed"
sed -i 's/master.example.com:5050/127.0.0.1:5050/' /etc/corral/agent.toml
step certs 60 bash -c "corral certs init --dir $C \
    && corral certs issue --dir $C --role master --name master --san 127.0.0.1 \
    && corral certs issue --dir $C --role agent --name agent \
    && corral certs issue --dir $C --role operator --name operator \
    && corral certs issue --dir $C --role framework --name sysvm" || fatal "corral certs failed"
step start_units 60 systemctl start corral-master corral-agent || fatal "systemctl start failed"
s=$(wait_state 90 'agents=Active *') || fatal "the agent did not register: $s"
mark "registered $s"

# --- 3. Two tasks with limits that run until told to end (at most 15 min) ----------------------
# The loop forks only `sleep` (a counter, not `date`, bounds it), so the task's long-lived
# processes are easy to tell from short ones.
TASK='cut -d: -f3- /proc/self/cgroup >/run/corral-sysvm/$0.cgroup
i=0
while [ ! -e /run/corral-sysvm/end ]; do i=$((i + 1)); [ "$i" -lt 1800 ] || exit 3; sleep 0.5; done
echo "$0 done"'
t0=$(now_ms)
for n in a b; do
    CORRAL_CERT=$C/sysvm.pem CORRAL_KEY=$C/sysvm-key.pem \
        timeout 540 corral run --cpus 0.2 --mem 64MiB --pids 64 --name "sysvm-$n" \
        -- /bin/sh -c "$TASK" "task-$n" >"$R/run-$n.out" 2>"$R/run-$n.err" &
    echo $! >"$R/run-$n.pid"
done
s=$(wait_state 120 'agents=Active tasks=sysvm-a:Running,sysvm-b:Running') \
    || { cat "$R"/run-*.err; fatal "the tasks did not reach RUNNING: $s"; }
mark "step_tasks_running rc=0 ms=$(($(now_ms) - t0))"
for n in a b; do
    deadline=$(($(now_ms) + 30000))
    while ! [ -s "$R/task-$n.cgroup" ]; do
        [ "$(now_ms)" -lt "$deadline" ] || fatal "task $n never wrote its cgroup"
        sleep 0.2
    done
    mark "cgroup_$n $(cat "$R/task-$n.cgroup")"
    # Its long-lived processes (the init and the shell, not the sleeps): those in every one of
    # five snapshots of cgroup.procs taken over a second and a half.
    procs="/sys/fs/cgroup$(cat "$R/task-$n.cgroup")/cgroup.procs"
    sort "$procs" >"$R/task-$n.pids"
    for _ in 1 2 3 4; do
        sleep 0.3
        sort "$procs" | comm -12 "$R/task-$n.pids" - >"$R/task-$n.pids.next"
        mv "$R/task-$n.pids.next" "$R/task-$n.pids"
    done
    mark "pids_$n $(tr '\n' ' ' <"$R/task-$n.pids")"
done
check start

# --- 4. daemon-reload changes no limit ---------------------------------------------------------
step daemon_reload 60 systemctl daemon-reload
check reload

# came_back PHASE OLD_PID: the agent's new process registered within 10 s of systemctl
# returning, the master shows it active with both tasks running, and the tasks kept their
# limits and processes.
came_back() {
    local t0 r s rc
    t0=$(now_ms)
    r=$(wait_registered 10 "$2")
    rc=$?
    mark "reregistered_$1 rc=$rc ms=$(($(now_ms) - t0)) old_pid=$2 $r"
    s=$(wait_state 10 'agents=Active tasks=sysvm-a:Running,sysvm-b:Running')
    rc=$?
    mark "state_$1 rc=$rc $s"
    mark "unit_$1 $(systemctl is-active corral-agent) nrestarts=$(systemctl show -p NRestarts --value corral-agent)"
    check "$1"
}

# --- 5. systemctl restart corral-agent while the tasks run ----------------------------------------
old=$(systemctl show -p MainPID --value corral-agent)
step restart 100 systemctl restart corral-agent
came_back restart "$old"

# --- 6. systemctl stop; systemctl start ------------------------------------------------------------
old=$(systemctl show -p MainPID --value corral-agent)
step stop 100 systemctl stop corral-agent
check stopped
step start 100 systemctl start corral-agent
came_back stopstart "$old"

# --- 7. The journal -------------------------------------------------------------------------------
mark "journal lines=$(journalctl --no-pager -u corral-agent -o cat | grep -c .) registered=$(journalctl --no-pager -u corral-agent -o cat | grep -c 'registered with master') cgroup_219=$(journalctl --no-pager -u corral-agent | grep -c 'status=219') scope_layout=$(journalctl --no-pager -u corral-agent -o cat | grep -cE 'layout="?systemd-scope')"

# --- 8. The tasks end: each `corral run` exits 0 having seen TASK_FINISHED once ------------------
touch "$R/end"
t0=$(now_ms)
for n in a b; do
    pid=$(cat "$R/run-$n.pid")
    deadline=$(($(now_ms) + 120000))
    while kill -0 "$pid" 2>/dev/null && [ "$(now_ms)" -lt "$deadline" ]; do sleep 0.3; done
    if kill -0 "$pid" 2>/dev/null; then
        rc=running
    else
        wait "$pid"
        rc=$?
    fi
    mark "run_$n rc=$rc finished_lines=$(grep -c 'TASK_FINISHED' "$R/run-$n.err") done_line=$(grep -c "task-$n done" "$R/run-$n.out")"
    sed "s/^/  run-$n: /" "$R/run-$n.err" | tail -20
done
mark "step_tasks_end rc=0 ms=$(($(now_ms) - t0))"
s=$(wait_state 20 'agents=Active tasks=sysvm-a:Finished,sysvm-b:Finished')
mark "final rc=$? $s"
dump
exit 0
