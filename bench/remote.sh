#!/bin/bash
# Remote images, from one run: a 1 GiB qcow2 (half random, half unallocated) on a local nginx
# and a 128 MiB one on a local moto S3 server (127.0.0.1), vdmount against qemu's curl driver and nbdkit's
# curl and S3 plugins. Every pair is timed side by side (A = vdmount, B = the peer, run in
# turn, medians of RUNS wall times), and each line prints our figure, the peer's and the ratio.
#
#  sequential  `vdmount cat URL >/dev/null` against `qemu-img convert` of the same URL to qemu's
#              null-co driver, through qemu's curl driver (qemu-block-extra), through nbdkit's
#              curl plugin, and (S3) through nbdkit's S3 plugin; whole processes, wall time.
#              qemu-img runs with -m 1: with its default 8 coroutines the curl driver stalls for
#              good at a random point of the disk here (qemu 10.0.2, libcurl 7.88; -m 2 as well).
#  paced       the same, from bench/paced_http.py serving the same file with each connection
#              paced by the kernel to at most RATE bytes/s (50 MiB/s by default): a network where
#              each connection is limited, where parallel connections pay. The peers keep their
#              default settings. (nginx's limit_rate is no stand-in: every request may send its
#              first second's worth at full speed, and these requests are a few MiB.)
#  random      READS 4 KiB reads at queue depth 1 at the same fixed-seed offsets
#              (examples/randread.rs prints them): randread reading URL in process, against
#              qemu-io given the same reads on stdin through the curl driver and over nbdkit's
#              curl plugin; whole processes (open included), IOPS = READS / wall. Then fio's nbd
#              engine (randread, same count, QD1, its own seed) against qemu-nbd serving the URL
#              through the curl driver and over nbdkit: fio's own IOPS (reads only), compared
#              with randread's own IOPS (reads only, printed by it).
#
# Needs (not installed by CI, which does not run this): nginx-light, qemu-block-extra, nbdkit,
# nbdkit-plugin-python and python3-boto3 (for nbdkit's S3 plugin, Debian's python3), fio,
# python3 with moto[server] and boto3 (as tests/remote.rs).
# Usage: bench/remote.sh [RUNS]     (env: READS, 5000 by default; RATE, bytes/s, 52428800)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
RUNS=${1:-3}
READS=${READS:-5000}
RATE=${RATE:-$((50 << 20))}
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
VD=$BIN/vdmount
RR=$BIN/examples/randread
(cd "$REPO" && cargo build --release --quiet --bin vdmount --example randread) >&2
W=$(mktemp -d /tmp/vdmount-bench-remote.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "nothing listens on $1" >&2; exit 1; }
SIZE=$((1 << 30))
mkdir -p "$W/www" "$W/tmp"
head -c $((SIZE / 2)) /dev/urandom >"$W/src.raw"
truncate -s $SIZE "$W/src.raw"
qemu-img convert -f raw -O qcow2 "$W/src.raw" "$W/www/big.qcow2"
want=$(sha256sum <"$W/src.raw" | cut -c1-64)
rm "$W/src.raw"
PORT=$(free_port)
cat >"$W/nginx.conf" <<CONF
daemon off; master_process off; error_log $W/error.log; pid $W/nginx.pid;
events { worker_connections 256; }
http { access_log off; client_body_temp_path $W/tmp; proxy_temp_path $W/tmp; fastcgi_temp_path $W/tmp;
  uwsgi_temp_path $W/tmp; scgi_temp_path $W/tmp; keepalive_requests 100000;
  server { listen 127.0.0.1:$PORT; root $W/www; } }
CONF
nginx -c "$W/nginx.conf" -p "$W" &
PIDS+=($!)
wait_port "$PORT"
URL=http://127.0.0.1:$PORT/big.qcow2
NULL="driver=null-co,size=$SIZE"
# Same bytes first: the bench measures a reader that gives the source disk back.
got=$("$VD" cat "$URL" | sha256sum | cut -c1-64)
[ "$want" = "$got" ] || { echo "vdmount cat $URL differs from the source disk" >&2; exit 1; }

# wall CMD: runs CMD through sh (output thrown away) and prints its wall seconds; fails with
# CMD's status and its last error lines.
wall() {
	local t0 t1
	t0=$(date +%s%N)
	if ! sh -c "$1" </dev/null >/dev/null 2>"$W/err"; then
		tail -3 "$W/err" | sed 's/^/    /' >&2
		return 1
	fi
	t1=$(date +%s%N)
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", (b - a) / 1e9 }'
}

# median: the median of the numbers on standard input.
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# pair NAME UNIT A B: A (vdmount) and B (the peer) run in turn, RUNS times each (whole
# processes, wall time, after one untimed run of each); prints one line with both medians (or
# READS / median as IOPS) and the ratio (above 1: vdmount faster).
pair() {
	local name=$1 unit=$2 a=$3 b=$4 i ta tb
	: >"$W/a.times"
	: >"$W/b.times"
	if ! wall "$a" >/dev/null || ! wall "$b" >/dev/null; then
		echo "$name: no figure (a command failed, above)"
		return
	fi
	for i in $(seq "$RUNS"); do
		ta=$(wall "$a") && tb=$(wall "$b") || { echo "$name: no figure (run $i failed, above)"; return; }
		echo "$ta" >>"$W/a.times"
		echo "$tb" >>"$W/b.times"
	done
	local sa sb
	sa=$(median <"$W/a.times") sb=$(median <"$W/b.times")
	if [ "$unit" = iops ]; then
		awk -v n="$name" -v a="$sa" -v b="$sb" -v r="$READS" \
			'BEGIN { printf "%-58s vdmount %6.0f IOPS  peer %6.0f IOPS  ratio %.2f\n", n, r / a, r / b, b / a }'
	else
		awk -v n="$name" -v a="$sa" -v b="$sb" \
			'BEGIN { printf "%-58s vdmount %6.2f s     peer %6.2f s     ratio %.2f\n", n, a, b, b / a }'
	fi
}

echo "== $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); medians of $RUNS runs; ratio = peer / vdmount time (above 1: vdmount faster)"
echo "-- sequential: the whole 1 GiB disk, whole processes, from nginx on 127.0.0.1 (no limit)"
pair "qemu-img, qemu's curl driver (-m 1)" s "exec $VD cat $URL >/dev/null" \
	"qemu-img convert -m 1 -n -f qcow2 --target-image-opts $URL $NULL"
pair "qemu-img over nbdkit's curl plugin" s "exec $VD cat $URL >/dev/null" \
	"nbdkit -U - curl $URL --run 'qemu-img convert -n -f qcow2 --target-image-opts \$nbd $NULL'"

PACED=$(free_port)
python3 "$HERE/paced_http.py" "$W/www" "$PACED" "$RATE" &
PIDS+=($!)
wait_port "$PACED"
PURL=http://127.0.0.1:$PACED/big.qcow2
MIBS=$((RATE >> 20))
echo "-- sequential, paced: the same disk, each connection paced to at most $MIBS MiB/s (bench/paced_http.py)"
pair "qemu-img, qemu's curl driver (-m 1), $MIBS MiB/s a connection" s "exec $VD cat $PURL >/dev/null" \
	"qemu-img convert -m 1 -n -f qcow2 --target-image-opts $PURL $NULL"
pair "qemu-img over nbdkit's curl plugin, $MIBS MiB/s a connection" s "exec $VD cat $PURL >/dev/null" \
	"nbdkit -U - curl $PURL --run 'qemu-img convert -n -f qcow2 --target-image-opts \$nbd $NULL'"

# S3, from moto's server: it spends about 0.1 s on each request whatever its size (so this
# counts requests more than it measures a reader) and serves some 10-20 MB/s, so its image is
# smaller: 128 MiB, half random.
head -c $((64 << 20)) /dev/urandom >"$W/s3.raw"
truncate -s $((128 << 20)) "$W/s3.raw"
qemu-img convert -f raw -O qcow2 "$W/s3.raw" "$W/s3.qcow2"
want=$(sha256sum <"$W/s3.raw" | cut -c1-64)
S3NULL="driver=null-co,size=$((128 << 20))"
S3PORT=$(free_port)
python3 -m moto.server -H 127.0.0.1 -p "$S3PORT" >"$W/moto.log" 2>&1 &
PIDS+=($!)
wait_port "$S3PORT"
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3PORT AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
python3 - "$W/s3.qcow2" <<'PY'
import os, sys, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
s3.create_bucket(Bucket="bench")
s3.upload_file(sys.argv[1], "bench", "s3.qcow2")
PY
got=$("$VD" cat s3://bench/s3.qcow2 | sha256sum | cut -c1-64)
[ "$want" = "$got" ] || { echo "vdmount cat s3://bench/s3.qcow2 differs from the source disk" >&2; exit 1; }
if nbdkit S3 --dump-plugin >/dev/null 2>&1; then
	pair "S3 (moto, 128 MiB): qemu-img over nbdkit's S3 plugin" s "exec $VD cat s3://bench/s3.qcow2 >/dev/null" \
		"nbdkit -U - S3 endpoint-url=$AWS_ENDPOINT_URL access-key=test secret-key=test bucket=bench key=s3.qcow2 --run 'qemu-img convert -n -f qcow2 --target-image-opts \$nbd $S3NULL'"
else
	echo "S3: nbdkit's S3 plugin does not load (apt-get install nbdkit-plugin-python python3-boto3); no peer figure"
fi

echo "-- random: $READS reads of 4 KiB at QD1, same offsets; whole processes (open included)"
"$RR" "$URL" --count "$READS" --print-offsets | awk '{ print "read " $1 " 4096" }' >"$W/qemu-io.txt"
pair "qemu-io, qemu's curl driver" iops "exec $RR $URL --count $READS >/dev/null" \
	"sh -c 'exec qemu-io -r -f qcow2 $URL <$W/qemu-io.txt'"
pair "qemu-io over nbdkit's curl plugin" iops "exec $RR $URL --count $READS >/dev/null" \
	"nbdkit -U - curl $URL --run 'qemu-io -r -f qcow2 \$nbd <$W/qemu-io.txt'"

echo "-- random: fio's nbd engine ($READS reads, QD1, its own seed) against qemu-nbd; IOPS of the reads alone, one run"
ours=$("$RR" "$URL" --count "$READS" | awk '{ print $3 }')
fio_iops() {
	fio --name=r --ioengine=nbd --uri="nbd+unix:///?socket=$1" --rw=randread --bs=4k --iodepth=1 \
		--number_ios="$READS" --size=$SIZE --randseed=1 --output-format=terse --terse-version=3 |
		awk -F';' '{ print $8 }'
}
fio_row() {
	local name=$1 theirs
	shift
	rm -f "$W/nbd.sock"
	"$@" &
	local pid=$!
	for _ in $(seq 100); do [ -S "$W/nbd.sock" ] && break; sleep 0.1; done
	theirs=$(fio_iops "$W/nbd.sock" || true)
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	if [ -z "$theirs" ]; then
		echo "$name: fio gave no figure"
		return
	fi
	awk -v n="$name" -v a="$ours" -v b="$theirs" \
		'BEGIN { printf "%-58s vdmount %6.0f IOPS  peer %6.0f IOPS  ratio %.2f\n", n, a, b, a / b }'
}
if command -v fio >/dev/null; then
	fio_row "fio -> qemu-nbd, qemu's curl driver" qemu-nbd -r -t -k "$W/nbd.sock" -f qcow2 "$URL"
	nbdkit -U "$W/kit.sock" -f curl "$URL" &
	PIDS+=($!)
	for _ in $(seq 100); do [ -S "$W/kit.sock" ] && break; sleep 0.1; done
	fio_row "fio -> qemu-nbd over nbdkit's curl plugin" qemu-nbd -r -t -k "$W/nbd.sock" -f qcow2 "nbd+unix:///?socket=$W/kit.sock"
else
	echo "fio: not installed (apt-get install fio); its rows are missing"
fi
