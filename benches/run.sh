#!/usr/bin/env bash
# Runs every benchmark and writes BENCHMARKS.md (and benches/durable.png).
# Peers run in the same script on the same machine; read the ratios, not the
# absolute figures: these machines are noisy and have 2 cores.
#   benches/run.sh            full run (about 21 minutes after the build)
#   QUICK=1 benches/run.sh    shorter runs, for trying the script
#   ONLY=postgres benches/run.sh   only the PostgreSQL section (QUICK=1 too):
#                             its markdown on stdout; BENCHMARKS.md and the
#                             plots are left as they are
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null || ! command -v gnuplot >/dev/null \
    || ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    apt-get update -qq && apt-get install -y -qq wrk gnuplot-nox redis-server redis-tools >/dev/null
fi
# PostgreSQL's server binaries (initdb, pg_ctl, pgbench, psql), as
# scripts/test finds them (Debian's package postgresql, which it installs).
pg_bin=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -1)
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/pgbench" ]; then
    echo "benches/run.sh: PostgreSQL is not installed (Debian's package postgresql; scripts/test installs it)" >&2
    exit 1
fi
case ${ONLY:-} in
    '' | postgres) ;;
    *) echo "benches/run.sh: ONLY=postgres is the only choice" >&2; exit 1 ;;
esac
cargo build --release --locked -p subscriber-bench -p subscriberd 2>&1 | tail -1 >&2

bin=target/release
work=$(mktemp -d "${TMPDIR:-/tmp}/subscriberd-bench.XXXXXX")
export BENCH_DIR="$work"
pids=()
# The PostgreSQL section's cluster (a directory of its own, the postgres
# user's when root: initdb refuses root), stopped and removed by cleanup.
pg_dir=
as_postgres=()
if [ "$(id -u)" -eq 0 ]; then as_postgres=(runuser -u postgres --); fi
pg_stop() {
    (cd "$pg_dir" && "${as_postgres[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1) || true
    rm -rf "$pg_dir"
    pg_dir=
}
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -n "$pg_dir" ]; then pg_stop; fi
    rm -rf "$work"
}
trap cleanup EXIT

if [ -n "${QUICK:-}" ]; then secs=1; reps=1; wrk_secs=3; n=20000; else secs=2; reps=3; wrk_secs=10; n=100000; fi
key=bench-key-0123456789abcdef

# HTTP: start a server in the background (in this shell, so its pid is
# kept), wait for "listening on http://ADDR" in its log.
start() {
    local log=$1; shift
    "$@" >"$log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 200); do
        grep -q "listening on http://" "$log" && return
        sleep 0.1
    done
    echo "server did not start: $(cat "$log")" >&2
    exit 1
}
addr_of() { grep -o "listening on http://[0-9.:]*" "$1" | head -1 | sed 's/.*http:\/\///'; }

# One wrk run: prints "requests/s p50_ms p99_ms non2xx". load ADDR MODE
# [SECONDS [CONNECTIONS [SUBSCRIBERS [SCRIPT]]]], by default wrk_secs, 64,
# n and benches/wrk.lua.
load() {
    local addr=$1 mode=$2 secs=${3:-$wrk_secs} conns=${4:-64} subs=${5:-$n} script=${6:-benches/wrk.lua} out
    out=$(KEY=$key SUBSCRIBERS=$subs MODE=$mode wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$script" "http://$addr")
    echo "$out" | awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /Requests\/sec/ { rps = $2 }
        /^ +50%/ { p50 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        /Non-2xx/ { bad = $NF }
        END { printf "%.0f %.2f %.2f %d\n", rps, p50, p99, bad + 0 }'
}
# The median of each column of runs ("requests/s p50 p99 non2xx" lines).
runs_median() {
    local col out=()
    for col in 1 2 3 4; do
        out+=("$(printf '%s' "$1" | awk -v c=$col 'NF { print $c }' | sort -g \
            | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')")
    done
    echo "${out[*]}"
}

# ONLY=postgres: skip to the PostgreSQL section (not indented below).
if [ "${ONLY:-}" != postgres ]; then

embedded=$("$bin/embedded" "$n" "$secs" "$reps")
durable=$("$bin/durable" "$n" "$((secs + 1))" --csv "$work/durable.csv")
scale=$("$bin/scale" "$((secs + 1))")

declare -A result
start "$work/fixed.log" "$bin/fixed_server" 127.0.0.1:0
fixed_addr=$(addr_of "$work/fixed.log")
for mode in patch keyed replay get; do result[fixed,$mode]=$(load "$fixed_addr" "$mode"); done
# The facade alone: our HTTP server over a backend that does nothing.
start "$work/null.log" "$bin/null_server" 127.0.0.1:0
null_addr=$(addr_of "$work/null.log")
for mode in patch keyed replay get; do result[null,$mode]=$(load "$null_addr" "$mode"); done
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
for durability in relaxed durable; do
    "$bin/populate" "$work/data-$durability" "$n" "$key"
    start "$work/$durability.log" "$bin/subscriberd" serve --listen 127.0.0.1:0 \
        --data "$work/data-$durability" --durability "$durability"
    addr=$(addr_of "$work/$durability.log")
    for mode in patch keyed replay get; do result[$durability,$mode]=$(load "$addr" "$mode"); done
    kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
done

http_table() {
    echo "| workload | server | requests/s | p50 (ms) | p99 (ms) | non-2xx | ÷ fixed-response server |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    for mode in patch keyed replay get; do
        read -r f_rps f_p50 f_p99 f_bad <<<"${result[fixed,$mode]}"
        echo "| $mode | fixed response | $f_rps | $f_p50 | $f_p99 | $f_bad | 100% |"
        read -r rps p50 p99 bad <<<"${result[null,$mode]}"
        echo "| $mode | our HTTP facade, null backend | $rps | $p50 | $p99 | $bad | $(awk "BEGIN { printf \"%.0f%%\", 100 * $rps / $f_rps }") |"
        for durability in relaxed durable; do
            read -r rps p50 p99 bad <<<"${result[$durability,$mode]}"
            echo "| $mode | subscriberd $durability | $rps | $p50 | $p99 | $bad | $(awk "BEGIN { printf \"%.0f%%\", 100 * $rps / $f_rps }") |"
        done
    done
}
http=$(http_table)

# Against Redis, as a user would compare: one client thread and 64
# connections each (redis-benchmark is single-threaded), 2,000 subscribers
# (HSET on a random one of 2,000 keys), Redis with every write fsynced
# (appendfsync always) and with no persistence.
rn=2000
redis_rps() {
    local dir=$work/redis-$1 port=6390 out
    mkdir -p "$dir"
    if [ "$1" = always ]; then
        redis-server --port $port --bind 127.0.0.1 --dir "$dir" --save "" --appendonly yes --appendfsync always --daemonize yes --logfile "$dir/log"
    else
        redis-server --port $port --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no --daemonize yes --logfile "$dir/log"
    fi
    for _ in $(seq 1 50); do redis-cli -p $port ping >/dev/null 2>&1 && break; sleep 0.1; done
    out=$(redis-benchmark -p $port -c 64 -r $rn -n $((wrk_secs * 15000)) -t hset -q 2>/dev/null | tr '\r' '\n' | grep 'requests per second' | tail -1)
    redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true
    echo "$out" | awk '{ for (i = 1; i <= NF; i++) if ($(i+1) == "requests") { print int($i); exit } }'
}
declare -A vs
vs[always]=$(redis_rps always)
vs[none]=$(redis_rps none)
one_client() {
    local addr=$1 mode=$2
    KEY=$key SUBSCRIBERS=$rn MODE=$mode wrk -t1 -c64 -d"${wrk_secs}s" -s benches/wrk.lua "http://$addr" \
        | awk '/Requests\/sec/ { printf "%.0f\n", $2 }'
}
for durability in durable relaxed; do
    "$bin/populate" "$work/redis-data-$durability" "$rn" "$key"
    start "$work/redis-$durability.log" "$bin/subscriberd" serve --listen 127.0.0.1:0 \
        --data "$work/redis-data-$durability" --durability "$durability"
    addr=$(addr_of "$work/redis-$durability.log")
    for mode in keyed patch; do vs[$durability,$mode]=$(one_client "$addr" "$mode"); done
    kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
done
redis_table() {
    local base=${vs[always]}
    echo "| workload | requests/s | vs Redis HSET, appendfsync always |"
    echo "|---|---:|---:|"
    row() { echo "| $1 | $2 | $(awk "BEGIN { printf \"%.2f\", $2 / $base }") |"; }
    row "Redis HSET, appendonly yes, appendfsync always" "$base"
    row "Redis HSET, no persistence" "${vs[none]}"
    row "PATCH, fresh idempotency key each, durable" "${vs[durable,keyed]}"
    row "PATCH, fresh idempotency key each, relaxed" "${vs[relaxed,keyed]}"
    row "PATCH, no key, durable" "${vs[durable,patch]}"
    row "PATCH, no key, relaxed" "${vs[relaxed,patch]}"
}
redis=$(redis_table)
{
    echo "workload requests"
    echo "\"Redis fsync always\" ${vs[always]}"
    echo "\"Redis no persistence\" ${vs[none]}"
    echo "\"keyed durable\" ${vs[durable,keyed]}"
    echo "\"keyed relaxed\" ${vs[relaxed,keyed]}"
    echo "\"plain durable\" ${vs[durable,patch]}"
    echo "\"plain relaxed\" ${vs[relaxed,patch]}"
} > "$work/redis.dat"

# Presence leases (issue 12). The heartbeat (online with a lease) against
# the plain presence write, keyed and durable: embedded (64 writers) and
# over HTTP (keyed and heartbeat runs alternating against one durable
# server, medians); then N leases falling due at once under a heartbeat
# load (the figures and the target verdicts come from the binary).
if [ -n "${QUICK:-}" ]; then lease_n=100000; lease_reps=1; lease_wrk=3; else lease_n=1000000; lease_reps=5; lease_wrk=3; fi
leases_embedded=$("$bin/leases" heartbeat "$n" "$secs" "$reps")
leases_expiry=$("$bin/leases" expiry --leases "$lease_n" --seconds "$((secs + 1))")
"$bin/populate" "$work/data-leases" "$n" "$key"
start "$work/leases.log" "$bin/subscriberd" serve --listen 127.0.0.1:0 \
    --data "$work/data-leases" --durability durable
addr=$(addr_of "$work/leases.log")
declare -A lease_runs
for _ in $(seq 1 "$lease_reps"); do
    for mode in keyed heartbeat; do lease_runs[$mode]+="$(load "$addr" "$mode" "$lease_wrk")"$'\n'; done
done
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
# The median of each column of a mode's runs: "requests/s p50 p99 non2xx".
lease_median() {
    local col out=()
    for col in 1 2 3 4; do
        out+=("$(printf '%s' "${lease_runs[$1]}" | awk -v c=$col 'NF { print $c }' | sort -g \
            | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')")
    done
    echo "${out[*]}"
}
leases_http_table() {
    local k_rps k_p50 k_p99 k_bad h_rps h_p50 h_p99 h_bad ratio
    read -r k_rps k_p50 k_p99 k_bad <<<"$(lease_median keyed)"
    read -r h_rps h_p50 h_p99 h_bad <<<"$(lease_median heartbeat)"
    ratio=$(awk "BEGIN { printf \"%.2f\", $h_rps / $k_rps }")
    echo "| PATCH online-status, fresh idempotency key, durable | requests/s | p50 (ms) | p99 (ms) | non-2xx | ÷ keyed |"
    echo "|---|---:|---:|---:|---:|---:|"
    echo "| keyed: random isOnline | $k_rps | $k_p50 | $k_p99 | $k_bad | 1.00x |"
    echo "| heartbeat: isOnline true, ttlSeconds 60 | $h_rps | $h_p50 | $h_p99 | $h_bad | ${ratio}x |"
    echo
    local exact
    exact=$(awk "BEGIN { printf \"%.3f\", $h_rps / $k_rps }")
    if awk "BEGIN { exit !($h_rps >= 0.8 * $k_rps) }"; then
        echo "Target heartbeat >= 0.80x keyed over HTTP: ${exact}x, met."
    else
        echo "Target heartbeat >= 0.80x keyed over HTTP: ${exact}x, **missed**."
    fi
}
leases_http=$(leases_http_table)

# Presence events and queries (issue 13). (a) What keeping the feed costs a
# presence write: keyed durable PATCH over HTTP against two durable servers
# with the same data, one with --presence-feed on, one off (both up, runs
# alternating and the order swapped every rep, medians); (b) the presence
# queries' cost at two sizes (the figures and the verdict come from the
# binary); (c) the feed's fan-out: many live SSE readers while presence
# flips are written at a fixed rate.
if [ -n "${QUICK:-}" ]; then
    feed_reps=1; query_large=100000; fan_readers=200; fan_secs=3
else
    feed_reps=5; query_large=1000000; fan_readers=1000; fan_secs=10
fi
feed_wrk=3; fan_rate=200; fan_subscribers=1000
declare -A feed_addr feed_pid feed_runs
for feed in on off; do
    "$bin/populate" "$work/data-feed-$feed" "$n" "$key"
    start "$work/feed-$feed.log" "$bin/subscriberd" serve --listen 127.0.0.1:0 \
        --data "$work/data-feed-$feed" --durability durable --presence-feed "$feed"
    feed_addr[$feed]=$(addr_of "$work/feed-$feed.log")
    feed_pid[$feed]=${pids[-1]}
done
for rep in $(seq 1 "$feed_reps"); do
    if [ $((rep % 2)) -eq 1 ]; then order="on off"; else order="off on"; fi
    for feed in $order; do
        feed_runs[$feed]+="$(load "${feed_addr[$feed]}" keyed "$feed_wrk")"$'\n'
    done
done
for feed in on off; do kill "${feed_pid[$feed]}"; wait "${feed_pid[$feed]}" 2>/dev/null || true; done
feed_http_table() {
    local on_rps on_p50 on_p99 on_bad off_rps off_p50 off_p99 off_bad ratio
    read -r on_rps on_p50 on_p99 on_bad <<<"$(runs_median "${feed_runs[on]}")"
    read -r off_rps off_p50 off_p99 off_bad <<<"$(runs_median "${feed_runs[off]}")"
    ratio=$(awk "BEGIN { printf \"%.2f\", $on_rps / $off_rps }")
    echo "| PATCH online-status, fresh idempotency key, durable | requests/s | p50 (ms) | p99 (ms) | non-2xx | ÷ feed off |"
    echo "|---|---:|---:|---:|---:|---:|"
    echo "| --presence-feed off | $off_rps | $off_p50 | $off_p99 | $off_bad | 1.00x |"
    echo "| --presence-feed on | $on_rps | $on_p50 | $on_p99 | $on_bad | ${ratio}x |"
    echo
    if awk "BEGIN { exit !($on_rps >= 0.8 * $off_rps) }"; then
        echo "Target keyed durable PATCH with the feed on >= 0.80x without it, over HTTP: ${ratio}x, met."
    else
        echo "Target keyed durable PATCH with the feed on >= 0.80x without it, over HTTP: ${ratio}x, **missed**."
    fi
}
feed_http=$(feed_http_table)
presence_query=$("$bin/presence" query --small 10000 --large "$query_large" --online 100 --seconds "$secs")
presence_open=$("$bin/presence" open --subscribers "$query_large" 2>/dev/null)
# The fan-out needs a descriptor per reader in both processes (the server
# raises its own limit; --max-connections above readers + writers).
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
"$bin/populate" "$work/data-fanout" "$fan_subscribers" "$key"
start "$work/fanout.log" "$bin/subscriberd" serve --listen 127.0.0.1:0 \
    --data "$work/data-fanout" --durability durable --presence-feed on --max-connections 4096
fanout=$("$bin/sse_fanout" --url "http://$(addr_of "$work/fanout.log")" --key "$key" \
    --readers "$fan_readers" --seconds "$fan_secs" --rate "$fan_rate" --subscribers "$fan_subscribers")
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

# Operating (issue 15). What the metrics cost a write: keyed durable PATCH
# over HTTP against two durable servers with the same data, --metrics on and
# off (both up, alternating, order swapped every rep, medians); then, from
# the metrics-on server after that load, the levels an operator's alerts are
# measured against (histogram quantiles as bucket upper bounds).
# Ten pairs: one 3 s run swings by +-8% on this VM (fsync time and the
# scheduler), so the verdict is the ratio of the pairs' summed rates and the
# spread of the pairs' own ratios is shown beside it.
if [ -n "${QUICK:-}" ]; then metrics_reps=2; else metrics_reps=10; fi
metrics_wrk=3
declare -A metrics_addr metrics_pid metrics_runs
for m in on off; do
    "$bin/populate" "$work/data-metrics-$m" "$n" "$key"
    start "$work/metrics-$m.log" "$bin/subscriberd" serve --listen 127.0.0.1:0 \
        --data "$work/data-metrics-$m" --durability durable --metrics "$m"
    metrics_addr[$m]=$(addr_of "$work/metrics-$m.log")
    metrics_pid[$m]=${pids[-1]}
done
for rep in $(seq 1 "$metrics_reps"); do
    if [ $((rep % 2)) -eq 1 ]; then order="on off"; else order="off on"; fi
    for m in $order; do
        metrics_runs[$m]+="$(load "${metrics_addr[$m]}" keyed "$metrics_wrk")"$'\n'
    done
done
curl -s "http://${metrics_addr[on]}/metrics" > "$work/metrics.txt"
for m in on off; do kill "${metrics_pid[$m]}"; wait "${metrics_pid[$m]}" 2>/dev/null || true; done
# The q-quantile of a histogram in the scrape (the upper bound of the bucket
# it falls in), optionally only the series carrying label text $3.
hist_quantile() {
    awk -v name="$1_bucket" -v q="$2" -v want="${3:-}" '
        index($0, name) == 1 && (want == "" || index($0, want) > 0) {
            match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5)
            n++; les[n] = le; counts[n] = $NF
        }
        END {
            total = counts[n]; if (total == 0) { print "n/a"; exit }
            for (i = 1; i <= n; i++) if (counts[i] >= q * total) { print les[i]; exit }
        }' "$work/metrics.txt"
}
metrics_table() {
    local on_rps on_p50 on_p99 on_bad off_rps off_p50 off_p99 off_bad ratio
    read -r on_rps on_p50 on_p99 on_bad <<<"$(runs_median "${metrics_runs[on]}")"
    read -r off_rps off_p50 off_p99 off_bad <<<"$(runs_median "${metrics_runs[off]}")"
    local ratio pairs
    # Each rep ran on and off back to back: the pair's own ratio.
    pairs=$(paste <(printf '%s' "${metrics_runs[on]}" | awk 'NF { print $1 }') \
                  <(printf '%s' "${metrics_runs[off]}" | awk 'NF { print $1 }') \
        | awk '{ printf "%.3f\n", $1 / $2 }' | sort -g)
    ratio=$(paste <(printf '%s' "${metrics_runs[on]}" | awk 'NF { s += $1 } END { print s }') \
                  <(printf '%s' "${metrics_runs[off]}" | awk 'NF { s += $1 } END { print s }') \
        | awk '{ printf "%.3f", $1 / $2 }')
    echo "| PATCH online-status, fresh idempotency key, durable | requests/s (median) | p50 (ms) | p99 (ms) | non-2xx |"
    echo "|---|---:|---:|---:|---:|"
    echo "| --metrics off | $off_rps | $off_p50 | $off_p99 | $off_bad |"
    echo "| --metrics on | $on_rps | $on_p50 | $on_p99 | $on_bad |"
    echo
    echo "On ÷ off, all requests of the $metrics_reps pairs: **${ratio}x**. Each pair's own ratio, sorted: $(echo $pairs | sed 's/ /, /g')."
    echo
    if awk "BEGIN { exit !($ratio >= 0.97) }"; then
        echo "Target metrics cost <= 3% of keyed durable PATCH over HTTP (on >= 0.97x off): ${ratio}x, met."
    else
        echo "Target metrics cost <= 3% of keyed durable PATCH over HTTP (on >= 0.97x off): ${ratio}x, **missed**."
    fi
    echo
    echo "Levels after that load, from the metrics-on server's \`/metrics\` (bucket upper bounds):"
    echo
    echo "| level | value |"
    echo "|---|---:|"
    echo "| PATCH online-status latency p99 (s) | $(hist_quantile subscriberd_http_request_duration_seconds 0.99 'online-status') |"
    echo "| flush round duration p50 (s) | $(hist_quantile subscriberd_flush_duration_seconds 0.5) |"
    echo "| flush round duration p99 (s) | $(hist_quantile subscriberd_flush_duration_seconds 0.99) |"
    echo "| writes per flush round p50 | $(hist_quantile subscriberd_flush_writes 0.5) |"
    echo "| storage errors | $(awk '/^subscriberd_storage_errors_total /{print $2}' "$work/metrics.txt") |"
    echo "| connections refused | $(awk '/^subscriberd_connections_refused_total /{print $2}' "$work/metrics.txt") |"
}
metrics_http=$(metrics_table)

gnuplot <<PLOT
set terminal pngcairo size 800,500 noenhanced
set output 'benches/durable.png'
set title 'Durable (power-loss safe) presence writes'
set xlabel 'concurrent writers'
set ylabel 'acknowledged writes per second'
set logscale x 2
set logscale y 10
set key top left
set grid
plot for [col=2:5] '$work/durable.csv' using 1:col with linespoints lw 2 title columnhead(col)
PLOT
gnuplot <<PLOT
set terminal pngcairo size 800,500 noenhanced
set output 'benches/redis.png'
set title 'Presence writes over the network, 64 connections, 2,000 subscribers'
set ylabel 'requests per second'
set style data histograms
set style fill solid 0.8
set boxwidth 0.7
set xtics rotate by -25
set grid ytics
set key off
plot '$work/redis.dat' using 2:xtic(1)
PLOT

# --- subscriberd bench against wrk ----------------------------------------
# The load tool the binary ships with (`subscriberd bench`) must not be the
# bottleneck: on the same server, workload, connections, threads and
# duration as wrk, its throughput should be within 10% of wrk's. The server
# runs in relaxed mode, the fastest, where a slow client would show. Each
# workload runs wrk, bench, bench, wrk, so that drift cancels out in the
# sums, and each run gets a freshly populated server: wrk.lua's keyed keys
# repeat from one wrk run to the next (its random seeds are fixed), so a
# second keyed run on the same server would measure replays. The bench
# first makes sure its subscribers exist (each answers 409, nothing is
# written), outside its timing.
bench_field() { grep -o "\"$1\":[0-9.]*" | head -1 | cut -d: -f2; }
# Prints "requests/s p50_ms p99_ms errors", as `load` does for wrk.
bench_load() {
    local addr=$1 workload=$2 out
    out=$("$bin/subscriberd" bench --url "http://$addr" --api-key "$key" --subscribers "$n" \
        --id-prefix subscriber- --workload "$workload" --connections 64 --threads 2 \
        --duration "${wrk_secs}s" --json)
    awk -v rps="$(bench_field requests_per_second <<<"$out")" -v p50="$(bench_field p50 <<<"$out")" \
        -v p99="$(bench_field p99 <<<"$out")" -v errors="$(bench_field errors <<<"$out")" \
        'BEGIN { printf "%.0f %.2f %.2f %d\n", rps, p50 / 1000, p99 / 1000, errors }'
}
# versus_run wrk|bench MODE WORKLOAD: one run on a fresh relaxed server.
versus_run() {
    local tool=$1 mode=$2 workload=$3 addr
    rm -rf "$work/data-versus" "$work/versus.log"
    "$bin/populate" "$work/data-versus" "$n" "$key"
    start "$work/versus.log" "$bin/subscriberd" serve --listen 127.0.0.1:0 \
        --data "$work/data-versus" --durability relaxed
    addr=$(addr_of "$work/versus.log")
    if [ "$tool" = wrk ]; then load "$addr" "$mode"; else bench_load "$addr" "$workload"; fi
    kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
}
declare -A versus
versus_pairs="patch:presence keyed:presence-keyed get:read"
for pair in $versus_pairs; do
    mode=${pair%%:*} workload=${pair#*:}
    versus[$mode,wrk1]=$(versus_run wrk "$mode" "$workload")
    versus[$mode,bench1]=$(versus_run bench "$mode" "$workload")
    versus[$mode,bench2]=$(versus_run bench "$mode" "$workload")
    versus[$mode,wrk2]=$(versus_run wrk "$mode" "$workload")
done
versus_table() {
    echo "| workload (wrk.lua / bench) | wrk requests/s (runs 1, 4) | bench requests/s (runs 2, 3) | bench ÷ wrk | wrk p50 / p99 (ms) | bench p50 / p99 (ms) | non-2xx wrk / bench |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for pair in $versus_pairs; do
        local mode=${pair%%:*} workload=${pair#*:} w1 w2 b1 b2
        read -r w1 wp50 wp99 wbad <<<"${versus[$mode,wrk1]}"
        read -r w2 _ _ wbad2 <<<"${versus[$mode,wrk2]}"
        read -r b1 bp50 bp99 bbad <<<"${versus[$mode,bench1]}"
        read -r b2 _ _ bbad2 <<<"${versus[$mode,bench2]}"
        echo "| $mode / $workload | $w1, $w2 | $b1, $b2 | $(awk "BEGIN { printf \"%.0f%%\", 100 * ($b1 + $b2) / ($w1 + $w2) }") | $wp50 / $wp99 | $bp50 / $bp99 | $((wbad + wbad2)) / $((bbad + bbad2)) |"
    done
}
versus=$(versus_table)
# --- end: subscriberd bench against wrk -----------------------------------

fi
# --- end of what ONLY=postgres skips ---------------------------------------

# --- PostgreSQL backend (issue 14) -----------------------------------------
# One cluster of its own (initdb in a temporary directory, a free loopback
# port; fsync and synchronous_commit left at their defaults, on;
# pg_stat_statements loaded), two databases: anchor for pgbench, presence
# for subscriberd. Each rep runs, the order swapped every rep: (a) pgbench
# -c 64 -j 2 of benches/pg-tx.sql, the keyed presence write as one would
# write it by hand, over 2,000 documents; (b) one fresh subscriberd
# (--pool-size 32) under wrk -c64 keyed over 2,000 subscribers; (c) two
# fresh subscriberd on the same database, wrk -c32 against each at once.
# Around (a) and (b), the database's own counters, read once the run's
# connections are gone (an exiting backend flushes its statistics): its
# commits and rollbacks (pg_stat_database), WAL bytes and syncs
# (pg_stat_wal), the CPU of its backends (the postmaster's reaped
# children); around (b) also the statements (pg_stat_statements, reset
# before each) and the server's CPU (/proc, before it stops). Medians.
if [ -n "${QUICK:-}" ]; then pg_reps=1; else pg_reps=3; fi
pg_secs=$wrk_secs pg_n=2000 pg_pool=32
pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/subscriberd-bench-pg.XXXXXX")
chmod 755 "$pg_dir"
if [ "$(id -u)" -eq 0 ]; then chown postgres "$pg_dir"; fi
(cd "$pg_dir" && "${as_postgres[@]}" "$pg_bin/initdb" -D "$pg_dir/data" --auth=trust -U postgres --no-sync -E UTF8 --locale=C >/dev/null)
(cd "$pg_dir" && "${as_postgres[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w start \
    -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_preload_libraries=pg_stat_statements" >/dev/null)
pg_sql() { "$pg_bin/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres "$@"; }
pg_sql -d postgres -c "CREATE DATABASE anchor" -c "CREATE DATABASE presence" -c "CREATE EXTENSION pg_stat_statements"
pg_sql -d anchor <<SQL
CREATE TABLE bench_records (key text PRIMARY KEY, record text NOT NULL, expires_at bigint NOT NULL);
CREATE TABLE bench_docs (id int PRIMARY KEY, version bigint NOT NULL, doc text NOT NULL);
INSERT INTO bench_docs SELECT i, 0, repeat('d', 300) FROM generate_series(1, $pg_n) i;
VACUUM ANALYZE bench_docs;
SQL
pg_url="postgres://postgres@127.0.0.1:$pg_port/presence"
pg_tck=$(getconf CLK_TCK)
# "commits rollbacks wal_bytes wal_syncs cpu_ticks": database $1's, the
# cluster's WAL, and the CPU of the postmaster's reaped children (the
# backends and autovacuum workers that have exited).
pg_counters() {
    echo "$(pg_sql -d postgres -F ' ' -c "SELECT d.xact_commit, d.xact_rollback, w.wal_bytes, w.wal_sync
        FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = '$1'")" \
        "$(awk '{ print $16 + $17 }' "/proc/$(head -1 "$pg_dir/data/postmaster.pid")/stat")"
}
# Waits until no client is connected to database $1 (their backends have
# flushed their statistics and exited).
pg_quiet() {
    for _ in $(seq 1 100); do
        [ "$(pg_sql -d postgres -c "SELECT count(*) FROM pg_stat_activity
            WHERE backend_type = 'client backend' AND datname = '$1'")" = 0 ] && break
        sleep 0.1
    done
    sleep 0.2
}
# The differences of two pg_counters lines.
pg_delta() { awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x); split(b, y); for (i = 1; i <= n; i++) printf "%s%.0f", (i > 1 ? " " : ""), y[i] - x[i]; print "" }'; }
# A fresh subscriberd on the presence database (log $work/pg-$1.log).
pg_serve() {
    rm -f "$work/pg-$1.log"
    start "$work/pg-$1.log" "$bin/subscriberd" serve --listen 127.0.0.1:0 --backend postgres \
        --database-url "$pg_url" --pool-size "$pg_pool" --api-key "$key"
}
pg_halt() { kill "$1"; wait "$1" 2>/dev/null || true; }
# A counter of a server's /metrics (0 if absent).
pg_metric() { curl -s "http://$1/metrics" | awk -v m="$2" '$1 == m { v = $2 } END { printf "%d\n", v }'; }
# The subscribers, created once through a server (an existing one is left).
pg_serve setup
"$bin/subscriberd" bench --url "http://$(addr_of "$work/pg-setup.log")" --api-key "$key" --workload read \
    --subscribers "$pg_n" --id-prefix subscriber- --requests 1 >/dev/null
pg_halt "${pids[-1]}"
# The second wrk of a two-server run: wrk.lua's thread seeds come from the
# main state's unseeded generator, the same in every wrk process, so two
# started in the same second would send the same idempotency keys (the
# second server would answer replays); seeded first, its keys differ.
printf 'math.randomseed(14)\ndofile("benches/wrk.lua")\n' >"$work/wrk-second.lua"

declare -A pg_runs
pg_anchor_cost= pg_one_cost= pg_replays=0
: >"$work/pg-statements.tsv"
pg_anchor_run() {
    local before out
    pg_quiet anchor
    before=$(pg_counters anchor)
    out=$("$pg_bin/pgbench" -h 127.0.0.1 -p "$pg_port" -U postgres -n -c 64 -j 2 -T "$pg_secs" \
        -D rows="$pg_n" -f benches/pg-tx.sql anchor 2>&1)
    pg_quiet anchor
    # "tps latency_avg_ms failed processed"
    pg_runs[anchor]+="$(awk '/^tps = / { tps = $3 } /^latency average/ { lat = $4 }
        /^number of failed/ { bad = $5 } /actually processed/ { n = $NF }
        END { printf "%.0f %.2f %d %d\n", tps, lat, bad, n }' <<<"$out")"$'\n'
    pg_anchor_cost+="$(awk '/actually processed/ { print $NF }' <<<"$out") $(pg_delta "$before" "$(pg_counters anchor)")"$'\n'
}
pg_one_run() {
    local before pid addr out acked server
    pg_sql -d postgres -c "SELECT pg_stat_statements_reset()" >/dev/null
    before=$(pg_counters presence)
    pg_serve one
    pid=${pids[-1]}
    addr=$(addr_of "$work/pg-one.log")
    out=$(load "$addr" keyed "$pg_secs" 64 "$pg_n")
    acked=$(pg_metric "$addr" 'subscriberd_writes_total{kind="keyed"}')
    server=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    pg_halt "$pid"
    pg_quiet presence
    pg_runs[one]+="$out"$'\n'
    pg_one_cost+="$acked $(pg_delta "$before" "$(pg_counters presence)") $server"$'\n'
    pg_sql -d postgres -F $'\t' -c "SELECT s.calls, regexp_replace(s.query, '\s+', ' ', 'g')
        FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
        WHERE d.datname = 'presence'" >>"$work/pg-statements.tsv"
}
pg_two_run() {
    local pa pb a b wa wb
    pg_serve two-a
    pa=${pids[-1]}
    a=$(addr_of "$work/pg-two-a.log")
    pg_serve two-b
    pb=${pids[-1]}
    b=$(addr_of "$work/pg-two-b.log")
    load "$a" keyed "$pg_secs" 32 "$pg_n" >"$work/pg-two-a.out" &
    wa=$!
    load "$b" keyed "$pg_secs" 32 "$pg_n" "$work/wrk-second.lua" >"$work/pg-two-b.out" &
    wb=$!
    wait "$wa" "$wb"
    pg_replays=$((pg_replays + $(pg_metric "$a" 'subscriberd_writes_total{kind="replay"}') \
        + $(pg_metric "$b" 'subscriberd_writes_total{kind="replay"}')))
    pg_halt "$pa"
    pg_halt "$pb"
    pg_quiet presence
    # The sum of the rates and errors, the worse of the two latencies.
    pg_runs[two]+="$(cat "$work/pg-two-a.out" "$work/pg-two-b.out" | awk '
        { rps += $1; if ($2 > p50) p50 = $2; if ($3 > p99) p99 = $3; bad += $4 }
        END { printf "%.0f %.2f %.2f %d\n", rps, p50, p99, bad }')"$'\n'
}
for rep in $(seq 1 "$pg_reps"); do
    if [ $((rep % 2)) -eq 1 ]; then order="anchor one two"; else order="two one anchor"; fi
    for run in $order; do "pg_${run}_run"; done
done
pg_version=$(pg_sql -d postgres -c "SHOW server_version" | awk '{ print $1 }')
pg_sizes=$(pg_sql -d presence -c "SELECT format('%s bytes and its records %s',
    (SELECT round(avg(length(document))) FROM subscribers),
    (SELECT round(avg(length(record))) FROM idempotency_records WHERE record IS NOT NULL))")
pg_settings=$(pg_sql -d postgres -c "SELECT format('fsync %s, synchronous_commit %s, full_page_writes %s, wal_level %s, shared_buffers %s, max_wal_size %s',
    current_setting('fsync'), current_setting('synchronous_commit'), current_setting('full_page_writes'),
    current_setting('wal_level'), current_setting('shared_buffers'), current_setting('max_wal_size'))")
pg_stop

# The first column of each run, in run order.
pg_list() { printf '%s' "$1" | awk 'NF { printf "%s%s", sep, $1; sep = ", " }'; }
# Column sums of cost lines.
pg_sums() { printf '%s' "$1" | awk 'NF { for (i = 1; i <= NF; i++) s[i] += $i; n = NF }
    END { for (i = 1; i <= n; i++) printf "%s%.0f", (i > 1 ? " " : ""), s[i]; print "" }'; }
read -r pa_tps pa_lat pa_bad _ <<<"$(runs_median "${pg_runs[anchor]}")"
read -r p1_rps p1_p50 p1_p99 p1_bad <<<"$(runs_median "${pg_runs[one]}")"
read -r p2_rps p2_p50 p2_p99 p2_bad <<<"$(runs_median "${pg_runs[two]}")"
read -r ca_n ca_commits ca_rollbacks ca_wal ca_syncs ca_ticks <<<"$(pg_sums "$pg_anchor_cost")"
read -r c1_n c1_commits c1_rollbacks c1_wal c1_syncs c1_ticks c1_server <<<"$(pg_sums "$pg_one_cost")"
pg_calc() { awk "BEGIN { printf \"$1\", $2 }"; }
pg_one_ratio=$(pg_calc %.2f "$p1_rps / $pa_tps")
pg_two_ratio=$(pg_calc %.2f "$p2_rps / $p1_rps")
pg_tpr=$(pg_calc %.3f "$c1_commits / $c1_n")
pg_spr=$(awk -F '\t' -v n="$c1_n" '{ s += $1 } END { printf "%.2f", s / n }' "$work/pg-statements.tsv")
pg_db_ms=$(pg_calc %.3f "1000 * $c1_ticks / $pg_tck / $c1_n")
pg_srv_ms=$(pg_calc %.3f "1000 * $c1_server / $pg_tck / $c1_n")
pa_db_ms=$(pg_calc %.3f "1000 * $ca_ticks / $pg_tck / $ca_n")
pg_table() {
    echo "| $pg_n rows, 64 connections in all | per second (median) | runs | latency (ms) | non-2xx / failed | ÷ pgbench |"
    echo "|---|---:|---:|---:|---:|---:|"
    echo "| pgbench -c 64 -j 2, benches/pg-tx.sql (tps) | $pa_tps | $(pg_list "${pg_runs[anchor]}") | average $pa_lat | $pa_bad | 1.00x |"
    echo "| subscriberd, 1 server, --pool-size $pg_pool, wrk -c64 keyed (requests/s) | $p1_rps | $(pg_list "${pg_runs[one]}") | p50 $p1_p50, p99 $p1_p99 | $p1_bad | ${pg_one_ratio}x |"
    echo "| subscriberd, 2 servers, --pool-size $pg_pool each, wrk -c32 against each (sum, requests/s) | $p2_rps | $(pg_list "${pg_runs[two]}") | p50 $p2_p50, p99 $p2_p99 (the worse server) | $p2_bad | $(pg_calc %.2f "$p2_rps / $pa_tps")x |"
    echo
    if awk "BEGIN { exit !($p1_rps >= 0.5 * $pa_tps) }"; then
        echo "Target one server >= 0.50x pgbench of the hand-written transaction: ${pg_one_ratio}x, met."
    else
        echo "Target one server >= 0.50x pgbench of the hand-written transaction: ${pg_one_ratio}x, **missed**."
    fi
    echo
    if awk "BEGIN { exit !($p2_rps >= 0.9 * $p1_rps) }"; then
        echo "Target two servers on the database >= 0.90x one server: ${pg_two_ratio}x, met."
    else
        echo "Target two servers on the database >= 0.90x one server: ${pg_two_ratio}x, **missed**."
    fi
}
pg_cost_table() {
    echo "| per unit of work | subscriberd, 1 server: per acknowledged keyed PATCH | pgbench: per transaction |"
    echo "|---|---:|---:|"
    echo "| round trips, by design | 4: BEGIN; [key lock, SELECT record, subscriber lock, SELECT document]; [UPSERT document, UPSERT record, INSERT outbox]; COMMIT (brackets: pipelined) | 4: BEGIN, INSERT, UPDATE, END, each awaited |"
    echo "| commits (pg_stat_database.xact_commit) | $pg_tpr | $(pg_calc %.3f "$ca_commits / $ca_n") |"
    echo "| statements (pg_stat_statements calls) | $pg_spr | 4 |"
    echo "| WAL bytes (pg_stat_wal) | $(pg_calc %.0f "$c1_wal / $c1_n") | $(pg_calc %.0f "$ca_wal / $ca_n") |"
    echo "| WAL syncs per commit (pg_stat_wal) | $(pg_calc %.3f "$c1_syncs / $c1_commits") | $(pg_calc %.3f "$ca_syncs / $ca_commits") |"
    echo "| PostgreSQL backends' CPU (ms) | $pg_db_ms | $pa_db_ms |"
    echo "| server CPU (ms) | $pg_srv_ms | |"
    echo "| units counted (rollbacks) | $c1_n ($c1_rollbacks) | $ca_n ($ca_rollbacks) |"
}
# Calls per acknowledged request by statement, the busiest first; those
# under 0.01 each together.
pg_statements_table() {
    echo "| statement (one-server runs) | calls per request |"
    echo "|---|---:|"
    awk -F '\t' '{ calls[$2] += $1 } END { for (q in calls) printf "%d\t%s\n", calls[q], q }' "$work/pg-statements.tsv" \
        | sort -t $'\t' -k1,1nr | awk -F '\t' -v n="$c1_n" '
            $1 / n >= 0.01 {
                q = $2; gsub(/\|/, "\\|", q); if (length(q) > 90) q = substr(q, 1, 87) "..."
                printf "| `%s` | %.3f |\n", q, $1 / n; next
            }
            { rest += $1; others++ }
            END { if (others) printf "| %d others (sequencer rounds, housekeeping, gauges, key lookups, start) | %.3f |\n", others, rest / n }'
}
# Bullets, one a line, wrapped at 76 columns.
pg_wrap() {
    awk '{ n = split($0, w, " "); line = ""
           for (i = 1; i <= n; i++) {
               if (line != "" && length(line) + 1 + length(w[i]) > 76) { print line; line = "  " w[i] }
               else line = (line == "" ? w[i] : line " " w[i])
           }
           print line }'
}
pg_derived() {
    local cores db_share srv_share per_db_core
    cores=$(nproc)
    db_share=$(pg_calc %.0f "100 * $c1_ticks / $pg_tck / ($pg_reps * $pg_secs * $cores)")
    srv_share=$(pg_calc %.0f "100 * $c1_server / $pg_tck / ($pg_reps * $pg_secs * $cores)")
    per_db_core=$(pg_calc %.0f "1000 / $pg_db_ms")
    {
        echo "- One server here: $p1_rps requests/s x $pg_tpr commits = $(pg_calc %.0f "$p1_rps * $pg_tpr")" \
            "commits/s and $(pg_calc %.0f "$p1_rps * $pg_spr") statements/s at the database. N servers at" \
            "R requests/s each need from it N x R x $pg_tpr commits/s, N x R x $pg_spr statements/s," \
            "N x R x $(pg_calc %.0f "$c1_wal / $c1_n") bytes/s of WAL and N x $pg_pool connections (max_connections)."
        echo "- CPU per request: PostgreSQL's backends $pg_db_ms ms (the hand-written transaction:" \
            "$pa_db_ms ms), the server $pg_srv_ms ms. During the one-server runs the backends took" \
            "${db_share}% of this $cores-core machine's CPU time and the server ${srv_share}%; wrk, the kernel" \
            "and PostgreSQL's background processes the rest. On machines of their own, one server" \
            "core carries about $(pg_calc %.0f "1000 / $pg_srv_ms") requests/s and one database core about" \
            "$per_db_core: N servers reach N x one server's rate until the database's cores run out," \
            "at about $per_db_core requests/s per database core; past that, its WAL flushes" \
            "(here $(pg_calc %.3f "$c1_syncs / $c1_commits") syncs per commit with $pg_pool connections, group commit)."
        echo "- Two servers on this machine share the same $cores cores, so their sum (${pg_two_ratio}x one" \
            "server) measures what running two on one database costs here (their per-subscriber" \
            "advisory locks, two sequencers taking the feed row in turn, a second server process and" \
            "wrk on the same cores), not scaling."
    } | pg_wrap
}
postgres_table=$(pg_table)
postgres_cost=$(pg_cost_table)
postgres_statements=$(pg_statements_table)
postgres_derived=$(pg_derived)
postgres=$(cat <<MD
## PostgreSQL backend

\`subscriberd serve --backend postgres\` (issue 14): every write one
transaction on a database any number of servers share. Targets: keyed
PATCH over HTTP, one server, >= 0.5x pgbench of the transaction one would
write by hand for it; two servers on the same database >= 0.9x one.

One PostgreSQL $pg_version cluster of the script's own on this machine
(initdb's defaults but max_connections 400 and pg_stat_statements loaded:
$pg_settings; every commit is flushed to disk before it returns), two
databases. The anchor: \`pgbench -c 64 -j 2 -T $pg_secs -n -f benches/pg-tx.sql\`:
BEGIN; INSERT of a fresh key and a 300-byte record; UPDATE of one of $pg_n
300-byte documents (version + 1); END. Ours: one subscriberd
(\`--backend postgres --pool-size $pg_pool\`, a fresh process each run) with $pg_n
subscribers, \`MODE=keyed\` of benches/wrk.lua (\`wrk -t2 -c64 -d${pg_secs}s\`): a
fresh idempotency key per request; its documents average $pg_sizes.
Two servers: two such processes on the same database, \`wrk -t2 -c32\`
against each at once. Runs: $pg_reps of each, in the order
pgbench, one, two, then reversed; medians. Idempotency replays in the
two-server runs (there should be none): $pg_replays.

$postgres_table

Database work per request, from the database's own counters over the
one-server runs (and the pgbench runs): deltas of \`pg_stat_database\` (the
presence database's commits: the writes' and the background tasks': the
sequencer moving outbox events to the feed in batches, lease expiry,
purges, gauges) and \`pg_stat_wal\`, read once the run's connections have
closed; the CPU of PostgreSQL's backends (the postmaster's exited children:
backends and autovacuum workers; not the WAL writer or checkpointer). The
rollbacks: the writes in flight when wrk closes its connections (the
request is dropped, its transaction rolled back) and the housekeeping's
event purge when it finds nothing to purge.

$postgres_cost

$postgres_statements

$postgres_derived
MD
)
# --- end: PostgreSQL backend -----------------------------------------------
if [ "${ONLY:-}" = postgres ]; then
    printf '%s\n' "$postgres"
    exit 0
fi

machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), Linux $(uname -r), disk $(df --output=source "$work" | tail -1)"
cat > BENCHMARKS.md <<MD
# Benchmarks

Written by \`benches/run.sh\` on $(date -u +%Y-%m-%d). Machine: $machine.
Versions: $(rustc --version), sled 0.34.7, SQLite $("$bin/durable" --sqlite-version 2>/dev/null || echo "bundled with rusqlite 0.37"), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2).
Every comparison ran in the same script on the same machine, each measurement
in its own process; the load generator shares the 2 cores with the server.
Read ratios, not absolute figures.

## Embedded presence writes, relaxed mode

\`target/release/embedded $n $secs $reps\`: $n subscribers, a random one per
write, medians of $reps runs of ${secs} s. Raw sled on the same documents:
(a) get, decode, modify, encode, insert; (b) the same with
\`compare_and_swap\`. Targets (issue 26): no key >= 80% of raw CAS, with
key >= 50%, at 1 and at 64 writers. The second table is the steady state
of a server up for longer than its record TTL: records expiring after 1 s,
so (after the first second) as fast as they are written, each keyed write
purging up to 4 (target: >= 0.80x records kept).

$embedded

## Durable presence writes (power-loss safe)

\`target/release/durable $n $((secs + 1))\`: ours (group commit of sled
\`flush()\` + fdatasync); raw sled with \`flush()\` + fdatasync per write;
SQLite WAL \`synchronous=FULL\`, one transaction per write; the raw rate of
a 4 KiB write + fdatasync. Disk flushes per acknowledged write are read from
/proc/diskstats. Targets at 64 writers: >= 3x sled per-write flush, >= 5x
SQLite FULL, <= 0.1 flushes per acknowledged write.

$durable

![durable throughput against writers](benches/durable.png)

## Scale

\`target/release/scale $((secs + 1))\`: the relaxed single-writer presence
write at each size, with bytes on disk per subscriber and peak RSS.

$scale

## Over HTTP

\`wrk -t2 -c64 -d${wrk_secs}s --latency -s benches/wrk.lua\` on 127.0.0.1
against subscriberd (relaxed and durable, $n subscribers) and a minimal hyper
server answering every request with a fixed body of the same size. "Our
HTTP facade, null backend" (\`crates/bench/src/bin/null_server.rs\`) is
subscriber-http's own server (routing, auth, extractors, body, wire JSON;
metrics and request logs off) over a backend that answers every call with a
fixed document at once: fixed -> null is hyper vs our facade, null ->
subscriberd is the store (and the request log). patch: random subscriber,
random presence; keyed: the same with a fresh idempotency key per request;
replay: one idempotency key, the same request each time; get: random
subscriber. Targets (issue 26): PATCH without a key relaxed >= 50% of the
fixed-response server, durable >= 40%.

$http

## Against Redis

Both with one client thread and 64 connections: \`redis-benchmark -c 64 -r $rn -t hset\`
(Redis $(redis-server --version | awk '{print $3}' | sed 's/v=//')) and \`wrk -t1 -c64 -d${wrk_secs}s -s benches/wrk.lua\`,
$rn subscribers (a random one per request). keyed: a fresh idempotency key
per request, what \`@novu/api\` and \`novu-py\` send. Targets: keyed durable
>= 1.0x Redis with appendfsync always.

$redis

![presence writes against Redis](benches/redis.png)

## Presence leases

A heartbeat is the presence write going online with a lease
(\`ttlSeconds\`): the subscriber goes offline by itself when the lease
runs out, unless another heartbeat comes first. Targets (issue 12): the
heartbeat >= 0.80x the plain presence write, keyed and durable, embedded
and over HTTP, in the same run; while 1,000,000 leases fall due at once, a
concurrent heartbeat load keeps >= 0.5x of its rate without expiry.

\`target/release/leases heartbeat $n $secs $reps\`: keyed durable writes (a
fresh idempotency key each), 64 writer threads, a random one of $n
subscribers; each measurement in its own process, the variants alternating,
medians of $reps runs of ${secs} s.

$leases_embedded

Over HTTP: \`MODE=keyed\` and \`MODE=heartbeat\` of benches/wrk.lua
(\`wrk -t2 -c64 -d${lease_wrk}s --latency\`) alternating, $lease_reps runs
each, against one durable subscriberd with $n subscribers; medians.

$leases_http

\`target/release/leases expiry --leases $lease_n --seconds $((secs + 1))\`: $lease_n
subscribers heartbeat (ttl 60 s) at the same instant T, filled in relaxed
mode on a stopped \`ManualClock\`, flushed, reopened durable with the
store's expiry thread on (batches of 1024 entries, one flush round each)
and a clock running from T + 1 s. A load of 32 threads sends keyed durable
heartbeats (ttl 3600 s) to 10,000 other subscribers throughout: $((secs + 1)) s
without expiry, then the clock jumps past T + 60 s, making every lease due
at once, until \`Store::next_lease_deadline\` shows none due, then $((secs + 1)) s
without expiry again. Then, the load stopped, a second group of a tenth as
many leases falls due with nothing else writing: there every flush round
is the expiry's.

$leases_expiry

## Presence events and queries

Every presence change appends an event to the environment's feed
(\`/v1/presence/events\`, SPEC section 11), and the online index and counts
are kept with it. Target (issue 13): keyed durable PATCH with the feed on
>= 0.80x the same with \`--presence-feed off\`, over HTTP; the online query
flat in the number of subscribers.

What the feed costs a write: \`MODE=keyed\` of benches/wrk.lua (\`wrk -t2
-c64 -d${feed_wrk}s --latency\`) against two durable subscriberd with $n
subscribers each, one \`--presence-feed on\`, one \`off\`, both running,
alternating (the order swapped every run), runs: $feed_reps each; medians.
No one reads the feed here: this is what appending the events and keeping
the online index and counts costs a write, not what serving readers costs.

$feed_http

\`target/release/presence query --small 10000 --large $query_large --online 100
--seconds $secs\`: embedded, in-process store calls (no HTTP), with 100
subscribers online and 100 more offline within the last minute at each size.
Read the ratio column: the online queries should stay flat while the
subscribers grow; the open's count scan is linear by design.

$presence_query

\`target/release/presence open --subscribers $query_large\`: the open of a
store whose every subscriber is online with a lease and has an idempotency
record, in a fresh process: what it costs to rebuild the in-memory orders
(online indexes, lease deadlines, record expiry, counts) from one scan of
the documents beside one of the records. Target (issue 26): <= 5 s at
1,000,000 subscribers. The memory column is the whole process (sled's page
cache included).

$presence_open

The feed's fan-out: \`target/release/sse_fanout --readers $fan_readers --seconds
$fan_secs --rate $fan_rate --subscribers $fan_subscribers\` against one durable
subscriberd (feed on): $fan_readers server-sent event streams open, then
$fan_rate presence flips per second (open loop, 16 keep-alive connections,
round-robin over $fan_subscribers subscribers, each write one event) for
$fan_secs s; every reader checks it got every acknowledged write's event once,
in seq order. The lag is the time from the write's 200 to a reader's parse
of its event (from the send when the event came first, which is common: the
event becomes readable in the same flush round that acknowledges the
write). Readers, writers and server share the 2 cores, so the lag includes
the client's own scheduling and is an upper bound on the server's; it has
no target, while a lost or duplicated event would be a bug.

$fanout

## Operating: what the metrics cost

Target (issue 15): Prometheus metrics cost at most 3% of keyed durable
PATCH throughput over HTTP. \`MODE=keyed\` of benches/wrk.lua (\`wrk -t2 -c64
-d${metrics_wrk}s --latency\`) against two durable subscriberd with $n
subscribers each, \`--metrics on\` (the default: every request counted and
timed, the store observed) and \`--metrics off\`, both running, alternating
(the order swapped every pair), $metrics_reps pairs. The verdict is the ratio
of all requests served; one 3 s run swings by about 8% here, so each pair's
own ratio is listed to show the noise. What the metrics cost directly, by
\`perf record\` of the metrics-on server under this load: the prometheus
crate's label lookups and observes, the route match for the label and the
store's observer together about 0.4% of the samples. The levels below are
what README's alert thresholds are set against.

$metrics_http

## subscriberd bench against wrk

The load tool the binary ships with, \`subscriberd bench\`, against wrk on one
relaxed server ($n subscribers), with the same connections, threads,
duration and workload: \`wrk -t2 -c64 -d${wrk_secs}s --latency -s benches/wrk.lua\`
and \`subscriberd bench --connections 64 --threads 2 --duration ${wrk_secs}s
--subscribers $n --id-prefix subscriber- --workload W\` (wrk.lua's patch,
keyed and get are the bench's presence, presence-keyed and read). Runs in
the order wrk, bench, bench, wrk; the ratio is of the sums. Both share the
2 cores with the server, so a costlier client would leave the server less
CPU and show here. Target: bench >= 90% of wrk. The latencies are each
tool's first run.

$versus

$postgres

## Reading the results

- Keyed (idempotent) writes no longer use a sled transaction (each one
  rolled sled's IO buffer twice: a pwrite + sync_file_range, 2.4 per keyed
  write by strace); a redo journal keeps the record and the write together
  (ARCHITECTURE.md). What a keyed write still pays, by \`perf\` on the
  embedded bench at 1 writer: two new keys per write in sled (the record
  and its expiry entry; a new key costs about 4x an overwrite in sled 0.34,
  which copies the leaf: malloc/free/Vec::clone about 20% of the profile),
  two overwrites (the journal's ring slot and the document), and the bytes
  they add to sled's log (pwrite about 12%).
- Durable mode shares one flush + fdatasync among all waiting writers (the
  store's commit thread runs rounds back to back while anyone waits): the
  flushes per write fall as writers rise, and the gap to per-write flushing
  grows with concurrency. Over HTTP a durable write awaits its round as a
  future, with no thread parked per request.
- Over HTTP, keyed durable PATCH (2,000 subscribers, \`wrk -t1 -c64\`),
  \`perf record\` of the whole server process, self time: kernel 48%
  (socket reads and writes, context switches between the async workers,
  the commit thread and sled's IO threads, the syncs), malloc/free 18%,
  sled 13%, memcpy/memcmp and the rest 16%, hyper 3%, tokio 2%; SHA-256,
  JSON and bincode under 2% together. One flush round (pwrite 0.15 ms +
  sync_file_range 0.37 ms + fdatasync 0.37 ms under strace) serves about
  20 writes, so the disk is not the limit: the per-request CPU is. Redis
  answers from one thread, one epoll loop, no allocation per request and no
  tree copy-on-write, which is where the gap to it lies.
- 10,000 subscribers write fastest, most likely because the working set
  stays in the CPU caches (not measured); from 100,000 to 1,000,000 the
  rate falls far less than the tenfold growth. Bytes on disk per subscriber
  at small sizes are dominated by sled's fixed file overhead.
- Over HTTP, the fixed-response server does no work at all while
  subscriberd authenticates (SHA-256 + a sled read), parses JSON, writes and
  renders; on 2 cores shared with wrk that per-request work bounds the ratio.
  Profiling found and removed synchronous log writes, a thread handoff for
  relaxed writes and an intermediate JSON value (relaxed PATCH 40.5k to
  50.3k requests/s in the same setup).
MD
echo "wrote BENCHMARKS.md"
