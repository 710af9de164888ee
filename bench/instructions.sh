#!/usr/bin/env bash
# bench/instructions.sh: instructions per 1 KiB keep-alive hit, counted by callgrind.
#
#   bench/instructions.sh                          # target/release/holdfast (built if missing)
#   bench/instructions.sh /tmp/holdfast-a /tmp/holdfast-b   # compare two builds
#   bench/instructions.sh nginx target/release/holdfast     # nginx's hit, then Holdfast's
#   BENCH_PROTO=h2 bench/instructions.sh                    # the same hit over TLS and HTTP/2
#   BENCH_KIND=miss bench/instructions.sh A B               # a miss instead (see below)
#
# Timed benchmarks on a shared machine move by ±10 % from run to run; a change of 1-2 %
# in what a hit costs cannot be seen in them. Instructions can: valgrind counts them,
# whatever else the machine is doing. For each binary this starts Holdfast under
# `valgrind --tool=callgrind` (one worker thread, its built-in demo origin as the origin,
# on 127.0.0.1), stores one 1 KiB object, sends N1 and, in a second run, N2 hits down one
# keep-alive connection (one curl), and prints (instructions(N2) - instructions(N1)) /
# (N2 - N1): the cost of one hit with start-up and shutdown taken out. Background tasks
# (timers, the sync loop) add a little noise: about 0.1 % on a quiet machine, up to 0.6 %
# while the other core is busy (they run more often under valgrind then). Compare builds
# in one invocation.
#
# The word `nginx` in place of a binary counts nginx's `proxy_cache` hit the same way: one
# process (`master_process off`), the cache in the work directory, `access_log off`, and
# a second server block of the same nginx as the origin (asked once, for the fill, so the
# difference leaves it out). Timed runs compare CPU seconds, kernel included; this
# compares the user-space instructions (libc included), where Holdfast and nginx differ
# most (docs/benchmarks.md, "A hit's instructions against nginx's").
#
# BENCH_PROTO chooses how curl asks: h1 (plain HTTP/1.1, the default), tls (HTTP/1.1 over
# TLS) or h2 (HTTP/2 over TLS), all down one connection; over TLS both servers present
# the same ECDSA P-256 certificate, made here with openssl, and the handshake is paid once.
#
# BENCH_KIND=miss asks for a new URL each time (`1k.bin?m=<i>`), so that each request is a
# miss that the origin answers and the store keeps; the origin is Holdfast's built-in demo
# origin, in the same process, so its instructions count too: compare two builds with it,
# not Holdfast with nginx.
#
# Settings (environment): BENCH_N1=500 BENCH_N2=2500 BENCH_PROTO=h1 BENCH_KIND=hit
# BENCH_PORT_BASE=28280 (uses 4 ports). Installs valgrind, curl and openssl with apt-get
# when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

N1=${BENCH_N1:-500}
N2=${BENCH_N2:-2500}
BASE=${BENCH_PORT_BASE:-28280}
PROTO=${BENCH_PROTO:-h1}
KIND=${BENCH_KIND:-hit}
die() { echo "instructions: $*" >&2; exit 1; }
case $KIND in hit) KINDS=hits ;; miss) KINDS=misses ;; *) die "BENCH_KIND is hit or miss, not '$KIND'" ;; esac
case $PROTO in
  h1) URL="http://127.0.0.1:$BASE/1k.bin" CURL_PROTO=(--http1.1) ;;
  tls) URL="https://127.0.0.1:$((BASE + 3))/1k.bin" CURL_PROTO=(-k --http1.1) ;;
  h2) URL="https://127.0.0.1:$((BASE + 3))/1k.bin" CURL_PROTO=(-k --http2) ;;
  *) die "BENCH_PROTO is h1, tls or h2, not '$PROTO'" ;;
esac
NGINX=
for arg in "$@"; do
  if [ "$arg" = nginx ]; then
    NGINX=$(command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true)
    [ -n "$NGINX" ] || die "nginx is not installed (bench/run.sh installs it)"
  fi
done
for tool in valgrind curl openssl; do
  if ! command -v "$tool" >/dev/null; then
    apt-get update -qq && apt-get install -y -qq "$tool" >/dev/null || die "cannot install $tool"
  fi
done
BINS=("$@")
if [ ${#BINS[@]} -eq 0 ]; then
  [ -x target/release/holdfast ] || cargo build --release --locked >&2
  BINS=(target/release/holdfast)
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/holdfast-instructions.XXXXXX")
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/www"
head -c 1024 /dev/zero | tr '\0' 'x' >"$WORK/www/1k.bin"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
  -keyout "$WORK/tls.key" -out "$WORK/tls.crt" -subj "/CN=bench.local" \
  -addext "subjectAltName=DNS:bench.local" 2>/dev/null || die "openssl could not make a certificate"
cat >"$WORK/holdfast.yaml" <<EOF
server: { threads: 1 }
listen: ["127.0.0.1:$BASE", { addr: "127.0.0.1:$((BASE + 3))", tls: true }]
tls: { default: { cert: tls.crt, key: tls.key } }
admin: { listen: "127.0.0.1:$((BASE + 1))" }
demo_origin: { listen: "127.0.0.1:$((BASE + 2))", root: www }
customers:
  - name: bench
    hosts: ["bench.local"]
    tls: { cert: tls.crt, key: tls.key }
    origin: { servers: ["127.0.0.1:$((BASE + 2))"] }
    cache: { default_ttl: 1h }
EOF
cat >"$WORK/nginx.conf" <<EOF
daemon off;
master_process off;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections 64; }
http {
    access_log off;
    keepalive_requests 1000000;
    sendfile on;
    client_body_temp_path $WORK/tmp-body;
    proxy_temp_path $WORK/tmp-proxy;
    fastcgi_temp_path $WORK/tmp-fcgi;
    uwsgi_temp_path $WORK/tmp-uwsgi;
    scgi_temp_path $WORK/tmp-scgi;
    proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=bench:16m use_temp_path=off;
    server {
        listen 127.0.0.1:$((BASE + 2));
        root $WORK/www;
        location / { add_header Cache-Control "max-age=3600"; }
    }
    server {
        listen 127.0.0.1:$BASE;
        listen 127.0.0.1:$((BASE + 3)) ssl http2;
        ssl_certificate $WORK/tls.crt;
        ssl_certificate_key $WORK/tls.key;
        location / {
            proxy_pass http://127.0.0.1:$((BASE + 2));
            proxy_cache bench;
        }
    }
}
EOF
for n in "$N1" "$N2"; do
  : >"$WORK/urls-$n"
  for i in $(seq "$n"); do
    u=$URL
    [ "$KIND" = miss ] && u="$URL?m=$i"
    printf 'url = "%s"\noutput = "/dev/null"\n' "$u" >>"$WORK/urls-$n"
  done
done

# Instructions of one run serving $2 hits with binary $1 (or nginx).
count() {
  local out="$WORK/callgrind.out" cmd=("$1" -c "$WORK/holdfast.yaml") stop=INT
  if [ "$1" = nginx ]; then
    cmd=("$NGINX" -c "$WORK/nginx.conf")
    stop=QUIT # nginx's graceful stop, after which callgrind writes its totals
    rm -rf "$WORK/nginx-cache"
  fi
  rm -f "$out"*
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out" \
    "${cmd[@]}" >"$WORK/run.log" 2>&1 &
  PID=$!
  local ok=
  for _ in $(seq 300); do
    if curl -sf "${CURL_PROTO[@]}" -o /dev/null -H "Host: bench.local" "$URL"; then ok=1; break; fi
    sleep 0.1
  done
  [ -n "$ok" ] || die "$1 did not answer under valgrind (see its log: $(tail -3 "$WORK/run.log"))"
  local codes
  codes=$(curl -s "${CURL_PROTO[@]}" -H "Host: bench.local" -w '%{http_code}\n' -K "$WORK/urls-$2" |
    grep -c '^200$' || true)
  [ "$codes" = "$2" ] || die "$codes of $2 requests answered 200 (see $WORK/run.log)"
  kill -"$stop" "$PID"
  wait "$PID" 2>/dev/null || true
  PID=
  awk '/^summary:/ { print $2 }' "$out"
}

for bin in "${BINS[@]}"; do
  [ "$bin" = nginx ] || [ -x "$bin" ] || die "$bin is not an executable (or the word nginx)"
  a=$(count "$bin" "$N1")
  b=$(count "$bin" "$N2")
  [ -n "$a" ] && [ -n "$b" ] || die "callgrind wrote no totals for $bin"
  echo "$bin: $(( (b - a) / (N2 - N1) )) instructions per 1 KiB keep-alive $KIND over $PROTO ($N1 and $N2 $KINDS: $a and $b in all)"
done
