#!/bin/bash
# Builds a static vdmount (glibc static-pie) for the initramfs; prints its path.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target/static}
RUSTFLAGS='-C target-feature=+crt-static' cargo build -q --release --locked \
	--manifest-path "$REPO/Cargo.toml" --target x86_64-unknown-linux-gnu --bin vdmount >&2
echo "$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/vdmount"
