#!/usr/bin/env bash
# Exporter footprint on this machine, the anchors' way: CPU share of one core and RSS of
# `edgewatt-exporter serve` at a 10 s interval with N extra live processes, over D seconds.
#   exporter/benches/footprint.sh [processes=2000] [seconds=300] [extra exporter flags...]
# Needs a release build: cargo build --release -p edgewatt-exporter
# BIN_B=<other binary>: also run that one, side by side over the same processes and the same
# window, and report both (an A/B on a shared, busy machine, where runs minutes apart differ).
set -euo pipefail
N=${1:-2000}; D=${2:-300}; shift 2 || true
BIN=${BIN:-target/release/edgewatt-exporter}
BIN_B=${BIN_B:-}
PORT=${PORT:-19102}
pids=()
exps=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; kill "${exps[@]}" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq "$N"); do sleep $((D + 60)) & pids+=($!); done
bins=("$BIN")
[ -n "$BIN_B" ] && bins+=("$BIN_B")
i=0
for b in "${bins[@]}"; do
  "$b" --interval 10s --kubernetes off "$@" serve --listen 127.0.0.1:$((PORT + i)) 2>/dev/null & exps+=($!)
  i=$((i + 1))
done
sleep 12  # first two intervals
ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
t0=(); for e in "${exps[@]}"; do t0+=("$(ticks "$e")"); done
s0=$(date +%s.%N)
sleep "$D"
s1=$(date +%s.%N)
hz=$(getconf CLK_TCK)
procs=$(ls -d /proc/[0-9]* | wc -l)
i=0
for e in "${exps[@]}"; do
  t1=$(ticks "$e")
  rss=$(awk '/VmRSS/ {print $2}' /proc/$e/status); hwm=$(awk '/VmHWM/ {print $2}' /proc/$e/status)
  series=$(curl -s localhost:$((PORT + i))/metrics | grep -vc '^#')
  awk -v bin="${bins[$i]}" -v t0="${t0[$i]}" -v t1="$t1" -v s0="$s0" -v s1="$s1" -v hz="$hz" -v rss="$rss" -v hwm="$hwm" -v procs="$procs" -v series="$series" 'BEGIN {
    printf "%s\n", bin
    printf "processes on the machine: %d, duration %.0f s, interval 10 s\n", procs, s1 - s0
    printf "CPU: %.3f %% of one core\n", (t1 - t0) / hz / (s1 - s0) * 100
    printf "RSS: %.1f MB now, %.1f MB peak\n", rss / 1024, hwm / 1024
    printf "series exported: %d\n", series
  }'
  i=$((i + 1))
done
