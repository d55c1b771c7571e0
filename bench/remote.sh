#!/bin/bash
# Remote images, from one run: a 1 GiB qcow2 on a local nginx (127.0.0.1), read whole
# (sequential) by `vdmount cat URL`, by qemu-img with qemu's curl driver (qemu-block-extra),
# and by qemu-img over nbdkit's curl plugin; each pair timed side by side with farm-bench.
# Prints our figure, the peer's and the ratio (peer time / our time: above 1 means faster).
# Needs nginx, qemu-block-extra, nbdkit (apt-get install nginx-light nbdkit) and farm-bench.
# Usage: bench/remote.sh [RUNS]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
RUNS=${1:-3}
VD=$REPO/target/release/vdmount
[ -x "$VD" ] || cargo build --release --manifest-path "$REPO/Cargo.toml" >&2
W=$(mktemp -d /tmp/vdmount-bench-remote.XXXXXX)
cleanup() { [ -n "${NGINX:-}" ] && kill "$NGINX" 2>/dev/null; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
SIZE=$((1 << 30))
mkdir -p "$W/www" "$W/tmp"
# Half random (incompressible), half zeros: allocated clusters and holes both count.
head -c $((SIZE / 2)) /dev/urandom >"$W/src.raw"
truncate -s $SIZE "$W/src.raw"
qemu-img convert -f raw -O qcow2 "$W/src.raw" "$W/www/big.qcow2"
want=$(sha256sum <"$W/src.raw" | cut -c1-64)
rm "$W/src.raw"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$W/nginx.conf" <<CONF
daemon off; master_process off; error_log $W/error.log; pid $W/nginx.pid;
events { worker_connections 256; }
http { access_log off; client_body_temp_path $W/tmp; proxy_temp_path $W/tmp; fastcgi_temp_path $W/tmp;
  uwsgi_temp_path $W/tmp; scgi_temp_path $W/tmp; keepalive_requests 100000;
  server { listen 127.0.0.1:$PORT; root $W/www; } }
CONF
nginx -c "$W/nginx.conf" -p "$W" &
NGINX=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
URL=http://127.0.0.1:$PORT/big.qcow2
NULL="driver=null-co,size=$SIZE"
# Same bytes first: the bench measures a reader that gives the source disk back.
got=$("$VD" cat "$URL" | sha256sum | cut -c1-64)
[ "$want" = "$got" ] || { echo "vdmount cat $URL differs from the source disk" >&2; exit 1; }

pair() {
	local name=$1 peer=$2
	local out="$W/${name// /-}.txt"
	farm-bench -n "$RUNS" --timeout 1800 --vs "$peer" -- sh -c "exec $VD cat $URL >/dev/null" >"$out" 2>&1 || true
	cat "$out"
	echo "== $name: see the wall medians above (A: vdmount cat, B: $name); ratio B/A > 1: vdmount faster"
}
pair "qemu-img curl driver" "qemu-img convert -n -f qcow2 --target-image-opts $URL $NULL"
if command -v nbdkit >/dev/null; then
	pair "nbdkit curl plugin" "nbdkit -U - curl $URL --run 'qemu-img convert -n -f qcow2 --target-image-opts \$nbd $NULL'"
else
	echo "nbdkit: not installed (apt-get install nbdkit); its row is missing"
fi
echo "random 4 KiB reads: not measured (vdmount has no random-read client outside a block device)"
