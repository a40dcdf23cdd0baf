# Background servers that the test scripts start and stop (the broker, Prometheus): sourced, not run.
#
# A script sets NAME (for messages), PID_FILE and LOG_FILE, defines `log`, then uses:
#   running_pid                      print the server's pid and succeed when it runs
#   daemon_wait READY_FN TIMEOUT_S   after starting it in the background and writing its pid: wait until
#                                    READY_FN succeeds; fail with the log's tail if it exits or times out
#   daemon_stop SIGNAL GRACE_S       send SIGNAL, wait up to GRACE_S, then SIGKILL; forget the pid

running_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$PID_FILE")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

daemon_wait() {
    local ready_fn="$1" timeout_s="$2" waited=0
    until "$ready_fn"; do
        if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
            log "$NAME exited during startup; last log lines:"
            tail -n 20 "$LOG_FILE" >&2
            rm -f "$PID_FILE"
            return 1
        fi
        if ((waited >= timeout_s * 10)); then
            log "$NAME was not ready within ${timeout_s}s (log: $LOG_FILE)"
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
}

daemon_stop() {
    local signal="$1" grace_s="$2" pid
    if ! pid="$(running_pid)"; then
        rm -f "$PID_FILE"
        log "not running"
        return 0
    fi
    kill "-$signal" "$pid"
    for _ in $(seq 1 $((grace_s * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$NAME (pid $pid) did not stop within ${grace_s}s of SIG$signal; sending SIGKILL"
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$PID_FILE"
    log "stopped"
}
