#!/usr/bin/env bash
# Exporter footprint on this machine, the anchors' way: CPU share of one core and RSS of
# `edgewatt-exporter serve` at a 10 s interval with N extra live processes, over D seconds.
#   exporter/benches/footprint.sh [processes=2000] [seconds=300] [extra exporter flags...]
# Needs a release build: cargo build --release -p edgewatt-exporter
set -euo pipefail
N=${1:-2000}; D=${2:-300}; shift 2 || true
BIN=${BIN:-target/release/edgewatt-exporter}
PORT=${PORT:-19102}
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; kill "$exp" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq "$N"); do sleep $((D + 60)) & pids+=($!); done
"$BIN" --interval 10s --kubernetes off "$@" serve --listen 127.0.0.1:$PORT 2>/dev/null & exp=$!
sleep 12  # first two intervals
ticks() { awk '{print $14 + $15}' /proc/$exp/stat; }
t0=$(ticks); s0=$(date +%s.%N)
sleep "$D"
t1=$(ticks); s1=$(date +%s.%N)
hz=$(getconf CLK_TCK)
rss=$(awk '/VmRSS/ {print $2}' /proc/$exp/status); hwm=$(awk '/VmHWM/ {print $2}' /proc/$exp/status)
procs=$(ls -d /proc/[0-9]* | wc -l)
series=$(curl -s localhost:$PORT/metrics | grep -vc '^#')
awk -v t0="$t0" -v t1="$t1" -v s0="$s0" -v s1="$s1" -v hz="$hz" -v rss="$rss" -v hwm="$hwm" -v procs="$procs" -v series="$series" 'BEGIN {
  printf "processes on the machine: %d, duration %.0f s, interval 10 s\n", procs, s1 - s0
  printf "CPU: %.3f %% of one core\n", (t1 - t0) / hz / (s1 - s0) * 100
  printf "RSS: %.1f MB now, %.1f MB peak\n", rss / 1024, hwm / 1024
  printf "series exported: %d\n", series
}'
