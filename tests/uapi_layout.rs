//! The Rust mirror of the kernel ABI (src/abuse/uapi.rs) against the C header
//! (kmod/include/uapi/linux/abuse.h): a C program compiled against the header prints every
//! size, offset and ioctl number, and each must equal the Rust side's.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};
use std::process::Command;
use vdmount::abuse::uapi::*;

const PROGRAM: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <linux/abuse.h>
#define S(t) printf("size %s %zu\n", #t, sizeof(struct t));
#define O(t, f) printf("off %s.%s %zu\n", #t, #f, offsetof(struct t, f));
#define N(x) printf("num %s %llu\n", #x, (unsigned long long)(x));
int main(void) {
    S(abuse_setup) O(abuse_setup, version) O(abuse_setup, flags) O(abuse_setup, size)
    O(abuse_setup, block_size) O(abuse_setup, queue_depth) O(abuse_setup, max_io_bytes)
    O(abuse_setup, reconnect_timeout_ms) O(abuse_setup, features) O(abuse_setup, nr_queues)
    O(abuse_setup, reserved0) O(abuse_setup, reserved)
    S(abuse_request) O(abuse_request, offset) O(abuse_request, length) O(abuse_request, op)
    O(abuse_request, flags) O(abuse_request, tag) O(abuse_request, gen) O(abuse_request, data)
    O(abuse_request, reserved)
    S(abuse_completion) O(abuse_completion, tag) O(abuse_completion, gen) O(abuse_completion, result)
    O(abuse_completion, flags) O(abuse_completion, n_extents) O(abuse_completion, data)
    O(abuse_completion, reserved)
    S(abuse_extent) O(abuse_extent, offset) O(abuse_extent, length) O(abuse_extent, fd)
    S(abuse_xfer) O(abuse_xfer, completions) O(abuse_xfer, requests) O(abuse_xfer, data)
    O(abuse_xfer, data_len) O(abuse_xfer, n_completions) O(abuse_xfer, max_requests) O(abuse_xfer, flags)
    O(abuse_xfer, n_requests) O(abuse_xfer, n_completed) O(abuse_xfer, queue) O(abuse_xfer, reserved)
    S(abuse_status) O(abuse_status, version) O(abuse_status, index) O(abuse_status, state)
    O(abuse_status, flags) O(abuse_status, size) O(abuse_status, block_size) O(abuse_status, queue_depth)
    O(abuse_status, max_io_bytes) O(abuse_status, reconnect_timeout_ms) O(abuse_status, pending)
    O(abuse_status, in_flight) O(abuse_status, completed) O(abuse_status, errors)
    O(abuse_status, server_pid) O(abuse_status, openers) O(abuse_status, features)
    O(abuse_status, nr_queues) O(abuse_status, reserved0) O(abuse_status, reserved)
    N(ABUSE_SETUP) N(ABUSE_XFER) N(ABUSE_STATUS) N(ABUSE_RESET) N(ABUSE_CTL_GET_FREE) N(ABUSE_CTL_ADD) N(ABUSE_CTL_REMOVE)
    N(ABUSE_ABI_VERSION) N(ABUSE_MAX_QUEUE_DEPTH) N(ABUSE_MAX_IO_BYTES)
    N(ABUSE_FLAG_READ_ONLY) N(ABUSE_FLAG_RECONNECT) N(ABUSE_FLAG_FLUSH) N(ABUSE_FLAG_FUA)
    N(ABUSE_FLAG_DISCARD) N(ABUSE_FLAG_WRITE_ZEROES) N(ABUSE_SETUP_FLAGS)
    N(ABUSE_FEAT_EXTENTS) N(ABUSE_FEAT_QUEUES) N(ABUSE_FEATURES) N(ABUSE_MAX_QUEUES) N(ABUSE_CPL_FLAGS)
    N(ABUSE_OP_READ) N(ABUSE_OP_WRITE) N(ABUSE_OP_FLUSH) N(ABUSE_OP_DISCARD) N(ABUSE_OP_WRITE_ZEROES)
    N(ABUSE_REQ_FUA) N(ABUSE_REQ_NOUNMAP) N(ABUSE_XFER_WAIT)
    N(ABUSE_CPL_EXTENTS) N(ABUSE_MAX_EXTENTS) N(ABUSE_EXTENT_ZERO)
    N(ABUSE_STATE_FREE) N(ABUSE_STATE_SERVING) N(ABUSE_STATE_WAITING) N(ABUSE_STATE_DEAD)
    return 0;
}
"#;

fn c_layout() -> HashMap<String, u64> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("layout.c");
    let exe = dir.path().join("layout");
    std::fs::write(&src, PROGRAM).unwrap();
    let include = concat!(env!("CARGO_MANIFEST_DIR"), "/kmod/include/uapi");
    let out = Command::new("gcc").args(["-Wall", "-Werror", "-I", include, "-o"]).arg(&exe).arg(&src).output().unwrap();
    assert!(out.status.success(), "gcc: {}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(&exe).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut w = l.split_whitespace().skip(1);
            (w.next().unwrap().to_string(), w.next().unwrap().parse().unwrap())
        })
        .collect()
}

macro_rules! rust_layout {
    ($m:ident; $( $t:ident as $c:literal { $($f:ident),* } )*) => {
        $(
            $m.insert(format!("{}", $c), size_of::<$t>() as u64);
            $( $m.insert(format!("{}.{}", $c, stringify!($f)), offset_of!($t, $f) as u64); )*
        )*
    };
}

#[test]
fn rust_mirror_matches_c_header() {
    let c = c_layout();
    let mut r: HashMap<String, u64> = HashMap::new();
    rust_layout!(r;
        AbuseSetup as "abuse_setup" { version, flags, size, block_size, queue_depth, max_io_bytes, reconnect_timeout_ms, features, nr_queues, reserved0, reserved }
        AbuseRequest as "abuse_request" { offset, length, op, flags, tag, gen, data, reserved }
        AbuseCompletion as "abuse_completion" { tag, gen, result, flags, n_extents, data, reserved }
        AbuseExtent as "abuse_extent" { offset, length, fd }
        AbuseXfer as "abuse_xfer" { completions, requests, data, data_len, n_completions, max_requests, flags, n_requests, n_completed, queue, reserved }
        AbuseStatus as "abuse_status" { version, index, state, flags, size, block_size, queue_depth, max_io_bytes,
            reconnect_timeout_ms, pending, in_flight, completed, errors, server_pid, openers, features, nr_queues, reserved0, reserved }
    );
    let nums: [(&str, u64); 39] = [
        ("ABUSE_SETUP", ABUSE_SETUP),
        ("ABUSE_XFER", ABUSE_XFER),
        ("ABUSE_STATUS", ABUSE_STATUS),
        ("ABUSE_RESET", ABUSE_RESET),
        ("ABUSE_CTL_GET_FREE", ABUSE_CTL_GET_FREE),
        ("ABUSE_CTL_ADD", ABUSE_CTL_ADD),
        ("ABUSE_CTL_REMOVE", ABUSE_CTL_REMOVE),
        ("ABUSE_ABI_VERSION", ABUSE_ABI_VERSION.into()),
        ("ABUSE_MAX_QUEUE_DEPTH", ABUSE_MAX_QUEUE_DEPTH.into()),
        ("ABUSE_MAX_IO_BYTES", ABUSE_MAX_IO_BYTES.into()),
        ("ABUSE_FLAG_READ_ONLY", ABUSE_FLAG_READ_ONLY.into()),
        ("ABUSE_FLAG_RECONNECT", ABUSE_FLAG_RECONNECT.into()),
        ("ABUSE_FLAG_FLUSH", ABUSE_FLAG_FLUSH.into()),
        ("ABUSE_FLAG_FUA", ABUSE_FLAG_FUA.into()),
        ("ABUSE_FLAG_DISCARD", ABUSE_FLAG_DISCARD.into()),
        ("ABUSE_FLAG_WRITE_ZEROES", ABUSE_FLAG_WRITE_ZEROES.into()),
        ("ABUSE_SETUP_FLAGS", ABUSE_SETUP_FLAGS.into()),
        ("ABUSE_FEAT_EXTENTS", ABUSE_FEAT_EXTENTS),
        ("ABUSE_FEAT_QUEUES", ABUSE_FEAT_QUEUES),
        ("ABUSE_FEATURES", ABUSE_FEATURES),
        ("ABUSE_MAX_QUEUES", ABUSE_MAX_QUEUES.into()),
        ("ABUSE_CPL_FLAGS", ABUSE_CPL_FLAGS.into()),
        ("ABUSE_OP_READ", ABUSE_OP_READ.into()),
        ("ABUSE_OP_WRITE", ABUSE_OP_WRITE.into()),
        ("ABUSE_OP_FLUSH", ABUSE_OP_FLUSH.into()),
        ("ABUSE_OP_DISCARD", ABUSE_OP_DISCARD.into()),
        ("ABUSE_OP_WRITE_ZEROES", ABUSE_OP_WRITE_ZEROES.into()),
        ("ABUSE_REQ_FUA", ABUSE_REQ_FUA.into()),
        ("ABUSE_REQ_NOUNMAP", ABUSE_REQ_NOUNMAP.into()),
        ("ABUSE_XFER_WAIT", ABUSE_XFER_WAIT.into()),
        ("ABUSE_CPL_EXTENTS", ABUSE_CPL_EXTENTS.into()),
        ("ABUSE_MAX_EXTENTS", ABUSE_MAX_EXTENTS.into()),
        // Negative in C; both sides compare it as the unsigned long long the C cast gives.
        ("ABUSE_EXTENT_ZERO", ABUSE_EXTENT_ZERO as i64 as u64),
        ("ABUSE_STATE_FREE", ABUSE_STATE_FREE.into()),
        ("ABUSE_STATE_SERVING", ABUSE_STATE_SERVING.into()),
        ("ABUSE_STATE_WAITING", ABUSE_STATE_WAITING.into()),
        ("ABUSE_STATE_DEAD", ABUSE_STATE_DEAD.into()),
        ("abuse_setup.version", 0),
        ("abuse_request.offset", 0),
    ];
    for (k, v) in nums {
        r.insert(k.to_string(), v);
    }
    let mut mismatches = Vec::new();
    for (k, cv) in &c {
        match r.get(k) {
            Some(rv) if rv == cv => {}
            other => mismatches.push(format!("{k}: C {cv}, Rust {other:?}")),
        }
    }
    assert!(mismatches.is_empty(), "uapi mismatches:\n{}", mismatches.join("\n"));
    assert_eq!(c.len(), r.len(), "the C program and the Rust side check different sets of names");
}

/// abuse.ko checks every uapi size at build time (BUILD_BUG_ON in kmod/main.c); those numbers
/// must be the Rust mirror's too.
#[test]
fn module_build_checks_match_rust_sizes() {
    let main_c = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/kmod/main.c")).unwrap();
    let rust: HashMap<&str, usize> = [
        ("abuse_setup", size_of::<AbuseSetup>()),
        ("abuse_request", size_of::<AbuseRequest>()),
        ("abuse_completion", size_of::<AbuseCompletion>()),
        ("abuse_extent", size_of::<AbuseExtent>()),
        ("abuse_xfer", size_of::<AbuseXfer>()),
        ("abuse_status", size_of::<AbuseStatus>()),
    ]
    .into();
    let mut checked = HashMap::new();
    for line in main_c.lines() {
        // BUILD_BUG_ON(sizeof(struct NAME) != SIZE);
        let Some(rest) = line.trim().strip_prefix("BUILD_BUG_ON(sizeof(struct ") else { continue };
        let (name, size) = rest.split_once(") != ").unwrap();
        checked.insert(name, size.trim_end_matches(");").parse::<usize>().unwrap());
    }
    for (name, size) in &rust {
        assert_eq!(checked.get(name), Some(size), "BUILD_BUG_ON for struct {name} in kmod/main.c");
    }
    assert_eq!(checked.len(), rust.len(), "kmod/main.c checks a struct the Rust mirror does not have");
}
