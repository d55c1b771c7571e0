//! Hostile cases: backing chains that loop, run too deep or end in a folder, a FIFO or a device.

use super::harness::*;

/// A qcow2 image `name` in `dir` naming `backing` (not checked) as its backing file.
fn qcow2_child(dir: &Path, name: &str, backing: &str, backing_fmt: &str) -> PathBuf {
    let path = dir.join(name);
    qemu_img(&["create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", backing_fmt, path.to_str().unwrap(), "1M"]);
    path
}

#[test]
fn hostile_backing_chains() {
    let dir = scratch();
    let d = dir.path();
    let mut failures = Vec::new();
    let a = qcow2_child(d, "self.qcow2", "self.qcow2", "qcow2");
    failures.extend(refused("A -> A", &a, &["self.qcow2"], "loop"));

    let a = qcow2_child(d, "a.qcow2", "b.qcow2", "qcow2");
    qcow2_child(d, "b.qcow2", "a.qcow2", "qcow2");
    failures.extend(refused("A -> B -> A", &a, &["a.qcow2", "b.qcow2"], "loop"));

    // A chain one longer than the limit: deep0 <- deep1 <- ... <- deepN.
    let depth = vdmount::limits::MAX_CHAIN_DEPTH + 1;
    qemu_img(&["create", "-q", "-f", "qcow2", d.join("deep0.qcow2").to_str().unwrap(), "1M"]);
    for i in 1..depth {
        qcow2_child(d, &format!("deep{i}.qcow2"), &format!("deep{}.qcow2", i - 1), "qcow2");
    }
    let top = format!("deep{}.qcow2", depth - 1);
    failures.extend(refused("chain deeper than MAX_CHAIN_DEPTH", &d.join(&top), &[&top], "chain"));
    // Exactly at the limit it opens.
    let at_limit = format!("deep{}.qcow2", depth - 2);
    if let Err(e) = vdmount_cat_sha256(&d.join(&at_limit), &[]) {
        failures.push(format!("a chain of exactly MAX_CHAIN_DEPTH images was refused: {e}"));
    }

    std::fs::create_dir(d.join("folder")).unwrap();
    let a = qcow2_child(d, "on-folder.qcow2", "folder", "raw");
    failures.extend(refused("backing file is a folder", &a, &["on-folder.qcow2", "folder"], "a folder"));

    let fifo = d.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let a = qcow2_child(d, "on-fifo.qcow2", "fifo", "raw");
    failures.extend(refused("backing file is a FIFO", &a, &["on-fifo.qcow2", "fifo"], "FIFO"));

    // Outside the image's folder: refused for that; with --allow-any-path, for being a device.
    let any = ["--allow-any-path"];
    let a = qcow2_child(d, "on-null.qcow2", "/dev/null", "raw");
    failures.extend(refused("backing file is /dev/null", &a, &["on-null.qcow2", "/dev/null"], "outside"));
    failures.extend(refused_with("/dev/null, any path", &a, &any, &["/dev/null"], "character device"));
    let a = qcow2_child(d, "on-zero.qcow2", "/dev/zero", "raw");
    failures.extend(refused("backing file is /dev/zero", &a, &["on-zero.qcow2", "/dev/zero"], "outside"));
    failures.extend(refused_with("/dev/zero, any path", &a, &any, &["/dev/zero"], "character device"));

    // /proc/self/mem is a "regular" file of size 0: refused by default (outside); with
    // --allow-any-path reading it as an empty raw disk is fine, but it must not hang or blow up.
    let a = qcow2_child(d, "on-proc.qcow2", "/proc/self/mem", "raw");
    failures.extend(refused("backing file is /proc/self/mem", &a, &["on-proc.qcow2"], "outside"));
    if let Err(e) = cat_is_clean(&a, &any, &["on-proc.qcow2"]) {
        failures.push(format!("backing file /proc/self/mem: {e}"));
    }
    assert_none(failures);
}
