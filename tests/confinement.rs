//! Images cannot reach outside their folder: every file an image names (qcow2 backing and data
//! files, VMDK extents and parents; VHD and VHDX parents are in vhd.rs and vhdx.rs) must resolve
//! beneath the folder of the image named on the command line, or a --allow-dir, and be a regular
//! file. Each escape is refused by default with one line naming the image, the name, where it
//! leads and the option that allows it; with that option it reads what qemu-img reads.

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// `top` and `out`: the folder of the image the user names, and a folder outside it.
fn folders() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = scratch();
    let top = dir.path().join("top");
    let out = dir.path().join("out");
    std::fs::create_dir(&top).unwrap();
    std::fs::create_dir(&out).unwrap();
    (dir, top, out)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A raw disk with recognisable data, standing in for a host file.
fn secret(path: &Path) {
    make_source_disk(path, 1 << 20, 7);
}

/// A qcow2 in `dir` named `name` whose backing file is recorded as `backing` (not checked).
fn qcow2_over(dir: &Path, name: &str, backing: &str) -> PathBuf {
    let path = dir.join(name);
    qemu_img(&["create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", "raw", s(&path), "1M"]);
    path
}

fn assert_outside(image: &Path, name: &str, leads_to: &Path) {
    let err = cat_refusal(image, &[]);
    assert!(err.contains(&format!("\"{name}\"")), "does not give the name: {err}");
    assert!(err.contains("outside") && err.contains(s(leads_to)), "does not say where it leads: {err}");
    assert!(err.contains("--allow-dir") && err.contains("--allow-any-path"), "does not say what allows it: {err}");
}

/// Reads like qemu-img with each option that allows it.
fn assert_allowed(image: &Path, allow_dir: &Path) {
    let want = qemu_raw_sha256(image, None);
    assert_eq!(vdmount_cat_sha256(image, &["--allow-dir", s(allow_dir)]).unwrap(), want);
    assert_eq!(vdmount_cat_sha256(image, &["--allow-any-path"]).unwrap(), want);
}

#[test]
fn absolute_backing_name_outside_is_refused() {
    let (_d, top, out) = folders();
    let host = out.join("shadow");
    secret(&host);
    let img = qcow2_over(&top, "abs.qcow2", s(&host));
    assert_outside(&img, s(&host), &host);
    assert_allowed(&img, &out);
}

#[test]
fn dotdot_backing_name_is_refused() {
    let (_d, top, out) = folders();
    secret(&out.join("passwd"));
    let img = qcow2_over(&top, "rel.qcow2", "../out/passwd");
    assert_outside(&img, "../out/passwd", &out.join("passwd"));
    assert_allowed(&img, &out);
}

#[test]
fn symlink_beside_the_image_pointing_out_is_refused() {
    let (_d, top, out) = folders();
    secret(&out.join("target"));
    std::os::unix::fs::symlink(out.join("target"), top.join("base.raw")).unwrap();
    let img = qcow2_over(&top, "sym.qcow2", "base.raw");
    assert_outside(&img, "base.raw", &out.join("target"));
    assert_allowed(&img, &out);
}

/// Names that stay inside are followed: absolute names into the image's own folder (as libvirt
/// writes them), "..", and symlinks (absolute or relative) that lead back inside.
#[test]
fn names_that_stay_inside_are_followed() {
    let (_d, top, _out) = folders();
    std::fs::create_dir(top.join("sub")).unwrap();
    secret(&top.join("base.raw"));
    std::os::unix::fs::symlink(top.join("base.raw"), top.join("abs-link.raw")).unwrap();
    std::os::unix::fs::symlink("../base.raw", top.join("sub/rel-link.raw")).unwrap();
    for backing in [
        s(&top.join("base.raw")).to_string(),
        "sub/../base.raw".into(),
        "abs-link.raw".into(),
        "sub/rel-link.raw".into(),
    ] {
        let img = qcow2_over(&top, "in.qcow2", &backing);
        assert_eq!(vdmount_cat_sha256(&img, &[]).unwrap(), qemu_raw_sha256(&img, None), "backing {backing}");
    }
    // The image named through a symlinked folder: its folder is where the link leads.
    let img = qcow2_over(&top, "in.qcow2", "base.raw");
    let linked = top.parent().unwrap().join("top-link");
    std::os::unix::fs::symlink(&top, &linked).unwrap();
    assert_eq!(vdmount_cat_sha256(&linked.join("in.qcow2"), &[]).unwrap(), qemu_raw_sha256(&img, None));
}

/// /proc and /sys: magic links (/proc/self/root/..., /proc/self/fd/N) are refused even with
/// --allow-dir /, and plain /proc or /sys files are outside.
#[test]
fn proc_and_sys_paths_are_refused() {
    let (_d, top, _out) = folders();
    for name in ["/proc/self/root/etc/hostname", "/proc/self/fd/0", "/proc/self/environ", "/sys/kernel/uevent_seqnum"] {
        let img = qcow2_over(&top, "proc.qcow2", name);
        let err = cat_refusal(&img, &[]);
        assert!(err.contains(&format!("\"{name}\"")), "{err}");
        assert!(err.contains("outside") || err.contains("through /proc"), "{err}");
    }
    let img = qcow2_over(&top, "proc.qcow2", "/proc/self/root/etc/hostname");
    let err = cat_refusal(&img, &["--allow-dir", "/"]);
    assert!(err.contains("through /proc"), "{err}");
    // A symlink beside the image into /proc/self/fd is a magic link too.
    std::os::unix::fs::symlink("/proc/self/fd/0", top.join("fd0")).unwrap();
    let img = qcow2_over(&top, "fd.qcow2", "fd0");
    let err = cat_refusal(&img, &["--allow-dir", "/"]);
    assert!(err.contains("through /proc"), "{err}");
}

/// A block device as a backing file: outside when it is /dev/..., and refused for what it is
/// when a node for it sits inside the folder. --allow-any-path restores qemu's behaviour.
#[test]
fn block_devices_as_backing_files_are_refused() {
    let (_d, top, _out) = folders();
    let img = qcow2_over(&top, "loop.qcow2", "/dev/loop0");
    let err = cat_refusal(&img, &[]);
    assert!(err.contains("outside") && err.contains("/dev/loop0"), "{err}");

    let node = top.join("disk0");
    let c = std::ffi::CString::new(s(&node)).unwrap();
    // SAFETY: a path string; block device 7:0 (loop0), which need not exist to make the node.
    assert_eq!(unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(7, 0)) }, 0, "mknod (needs root)");
    let img = qcow2_over(&top, "node.qcow2", "disk0");
    let err = cat_refusal(&img, &[]);
    assert!(err.contains("a block device, not a regular file") && err.contains("--allow-any-path"), "{err}");
    // With --allow-any-path the node is opened like any device (an unattached loop0 is empty,
    // or absent on machines without the loop driver): no confinement refusal either way.
    let any = vdmount_cat_sha256(&img, &["--allow-any-path"]);
    if let Err(e) = any {
        assert!(!e.contains("not a regular file") && !e.contains("outside"), "{e}");
    }
}

/// A qcow2 external data file named outside the folder.
#[test]
fn data_file_outside_is_refused() {
    let (_d, top, out) = folders();
    let img = top.join("df.qcow2");
    let data = out.join("data.raw");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={},data_file_raw=on", s(&data)),
        s(&img),
        "1M",
    ]);
    secret(&data);
    let err = cat_refusal(&img, &[]);
    assert!(err.contains("external data file") && err.contains("outside") && err.contains(s(&data)), "{err}");
    assert_allowed(&img, &out);
}

fn vmdk_descriptor(path: &Path, extent: &str, parent: Option<&str>) {
    let (create, parent_lines) = match parent {
        Some(p) => ("vmfsSparse", format!("parentCID=ffffffff\nparentFileNameHint=\"{p}\"\n")),
        None => ("monolithicFlat", "parentCID=ffffffff\n".to_string()),
    };
    let text = format!(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\n{parent_lines}createType=\"{create}\"\n\n# Extent description\n{extent}\n\n# The Disk Data Base\nddb.adapterType = \"ide\"\n"
    );
    std::fs::write(path, text).unwrap();
}

/// VMDK FLAT extents named by absolute path or "..": refused, read with the options (the oracle
/// is the extent file's own bytes, as qemu reads a flat extent).
#[test]
fn vmdk_extents_outside_are_refused() {
    let (_d, top, out) = folders();
    let flat = out.join("disk-flat.vmdk");
    secret(&flat);
    for name in [s(&flat).to_string(), "../out/disk-flat.vmdk".to_string()] {
        let desc = top.join("disk.vmdk");
        vmdk_descriptor(&desc, &format!("RW 2048 FLAT \"{name}\" 0"), None);
        let err = cat_refusal(&desc, &[]);
        assert!(
            err.contains("extent file") && err.contains(&format!("\"{name}\"")) && err.contains("outside"),
            "{err}"
        );
        assert_eq!(vdmount_cat_sha256(&desc, &["--allow-dir", s(&out)]).unwrap(), sha256_file(&flat));
        assert_eq!(vdmount_cat_sha256(&desc, &["--allow-any-path"]).unwrap(), sha256_file(&flat));
    }
}

/// A VMDK child whose parent hint leads out of the folder.
#[test]
fn vmdk_parent_outside_is_refused() {
    let (_d, top, out) = folders();
    let src = out.join("src.raw");
    secret(&src);
    let parent = out.join("base.vmdk");
    qemu_img(&["convert", "-q", "-f", "raw", "-O", "vmdk", s(&src), s(&parent)]);
    let child = top.join("child.vmdk");
    qemu_img(&["create", "-q", "-f", "vmdk", "-b", s(&parent), "-F", "vmdk", s(&child)]);
    let err = cat_refusal(&child, &[]);
    assert!(err.contains("backing file") && err.contains("outside") && err.contains(s(&parent)), "{err}");
    assert_allowed(&child, &out);
}

/// `info` shows every layer of a chain and, for the refused one, why; it then fails.
#[test]
fn info_shows_the_refused_layer_and_why() {
    let (_d, top, out) = folders();
    secret(&out.join("base.raw"));
    qcow2_over(&top, "mid.qcow2", "../out/base.raw");
    let img = top.join("top.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-u", "-b", "mid.qcow2", "-F", "qcow2", s(&img), "1M"]);
    let out_ = vdmount().arg("info").arg(&img).output().unwrap();
    assert_eq!(out_.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out_.stdout);
    assert!(text.contains("top.qcow2") && text.contains("mid.qcow2"), "{text}");
    assert!(text.contains("not opened:") && text.contains("outside") && text.contains("base.raw"), "{text}");
    let err = String::from_utf8_lossy(&out_.stderr);
    assert!(err.contains("mid.qcow2") && err.contains("--allow-dir") && err.lines().count() == 1, "{err}");
    // The same with JSON: the layer carries an "error" field.
    let json = vdmount().args(["info", "--json"]).arg(&img).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(v["backing"]["backing"]["error"].as_str().unwrap().contains("outside"), "{v}");
    // Allowed, the whole chain opens.
    run_ok(vdmount().arg("info").arg("--allow-dir").arg(&out).arg(&img));
}

/// The same file under other names (hard links in nested folders, each naming "sub/img") is a
/// loop, not a 64-layer chain that holds 64 copies of its tables.
#[test]
fn hard_link_chains_are_loops() {
    let (_d, top, _out) = folders();
    let first = qcow2_over(&top, "img", "sub/img");
    let mut dir = top.clone();
    for _ in 0..4 {
        dir = dir.join("sub");
        std::fs::create_dir(&dir).unwrap();
        std::fs::hard_link(&first, dir.join("img")).unwrap();
    }
    let err = cat_refusal(&first, &[]);
    assert!(err.contains("loops back"), "{err}");
}

/// Errors inside a backing layer say which image named it.
#[test]
fn errors_in_a_backing_layer_name_the_child() {
    let (_d, top, _out) = folders();
    std::fs::write(top.join("base.qcow2"), b"QFI\xfb\0\0\0\x03 truncated").unwrap();
    let img = top.join("child.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-u", "-b", "base.qcow2", "-F", "qcow2", s(&img), "1M"]);
    let err = cat_refusal(&img, &[]);
    assert!(err.contains("base.qcow2") && err.contains("backing file of") && err.contains("child.qcow2"), "{err}");
}
