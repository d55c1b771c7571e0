//! Issue 3's command-line contract: `cat` matches qemu-img on the shipped fixture, files with no
//! known signature are raw (and `info` says so), `--format` forces a format, and every bad input
//! gets a one-line error naming the file, a non-zero exit and no panic.

mod common;
use common::*;

fn stderr_of(args: &[&str]) -> (i32, String) {
    let out = vdmount().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "vdmount {args:?} panicked: {err}");
    (out.status.code().unwrap_or(-1), err)
}

/// A refusal: non-zero exit, one line on stderr, naming `name`.
fn assert_refused(args: &[&str], name: &str, why: &str) {
    let (code, err) = stderr_of(args);
    assert_ne!(code, 0, "vdmount {args:?} succeeded");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("vdmount: "), "{err}");
    assert!(err.contains(name), "error does not name {name}: {err}");
    assert!(err.to_lowercase().contains(why), "error does not say '{why}': {err}");
}

#[test]
fn fixture_cat_matches_qemu_img() {
    let fixture = repo().join("fixtures/e2e.qcow2");
    assert_eq!(vdmount_cat_sha256(&fixture, &[]).unwrap(), qemu_raw_sha256(&fixture, None));
}

#[test]
fn unknown_magic_is_raw_like_qemu() {
    let dir = scratch();
    let img = dir.path().join("plain.bin");
    make_source_disk(&img, 3 << 20, 7);
    assert_eq!(vdmount_cat_sha256(&img, &[]).unwrap(), qemu_raw_sha256(&img, None));
    let out = run_ok(vdmount().arg("info").arg(&img));
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(info.contains("format: raw"), "{info}");
    assert!(info.contains("no known signature"), "{info}");
}

#[test]
fn format_option_forces_and_refuses_wrong_magic() {
    let dir = scratch();
    let raw = dir.path().join("disk.raw");
    make_source_disk(&raw, 1 << 20, 3);
    let p = raw.to_str().unwrap();
    assert_refused(&["cat", "--format", "qcow2", p], "disk.raw", "qcow2");
    // Forcing raw on a qcow2 serves the container's bytes, as qemu-img -f raw does.
    let fixture = repo().join("fixtures/e2e.qcow2");
    assert_eq!(vdmount_cat_sha256(&fixture, &["--format", "raw"]).unwrap(), sha256_file(&fixture));
}

#[test]
fn bad_inputs_get_one_line_errors() {
    let dir = scratch();
    let d = dir.path();
    let missing = d.join("missing.qcow2");
    assert_refused(&["cat", missing.to_str().unwrap()], "missing.qcow2", "no such file");
    assert_refused(&["info", missing.to_str().unwrap()], "missing.qcow2", "no such file");
    assert_refused(&["info", d.to_str().unwrap()], d.to_str().unwrap(), "directory");
    assert_refused(&["cat", d.to_str().unwrap()], d.to_str().unwrap(), "directory");

    // A qcow2 cut short inside its metadata.
    let fixture = std::fs::read(repo().join("fixtures/e2e.qcow2")).unwrap();
    let cut = d.join("cut.qcow2");
    std::fs::write(&cut, &fixture[..300]).unwrap();
    assert_refused(&["cat", cut.to_str().unwrap()], "cut.qcow2", "");
    // A qcow2 with a corrupt header (cluster_bits 99).
    let mut bad = fixture.clone();
    bad[20..24].copy_from_slice(&99u32.to_be_bytes());
    let corrupt = d.join("corrupt.qcow2");
    std::fs::write(&corrupt, &bad).unwrap();
    assert_refused(&["info", corrupt.to_str().unwrap()], "corrupt.qcow2", "cluster");
    // The server refuses before it touches any device.
    assert_refused(&[corrupt.to_str().unwrap(), "/dev/abctl-none"], "corrupt.qcow2", "cluster");
    assert_refused(&[missing.to_str().unwrap()], "missing.qcow2", "no such file");
}

#[test]
fn server_names_a_missing_control_device() {
    let fixture = repo().join("fixtures/e2e.qcow2");
    let (code, err) = stderr_of(&[fixture.to_str().unwrap(), "/nonexistent/abctl9"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("/nonexistent/abctl9"), "{err}");
}

#[test]
fn help_lists_the_fixed_commands() {
    let out = run_ok(vdmount().arg("--help"));
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["cat", "info", "list", "CTLDEV", "--cow", "--format"] {
        assert!(help.contains(word), "--help lacks {word}");
    }
}

/// man/vdmount.1 is what `vdmount man` prints now. Its synopsis and options are generated from
/// the clap definitions (src/cli/man.rs), so the page cannot drift from `--help`; the prose
/// sections come from man/sections/*.roff.
#[test]
fn man_page_is_generated() {
    let generated = run_ok(vdmount().arg("man")).stdout;
    let committed = std::fs::read(repo().join("man/vdmount.1")).unwrap();
    assert!(
        generated == committed,
        "man/vdmount.1 is not what `vdmount man` prints now (an option, its help or man/sections/ \
         changed): regenerate it with `cargo run --release -- man > man/vdmount.1` and commit it"
    );
    // `man` is for making the page, not for users: hidden from --help.
    let help = String::from_utf8(run_ok(vdmount().arg("--help")).stdout).unwrap();
    assert!(!help.lines().any(|l| l.trim_start().starts_with("man ")), "--help lists `man`: {help}");
}

/// Every option and subcommand `--help` shows is in man/vdmount.1 (a check of the generator
/// itself: an option it left out would fail here, not in `man_page_is_generated`).
#[test]
fn man_page_covers_every_option() {
    let man = std::fs::read_to_string(repo().join("man/vdmount.1")).unwrap();
    // Compare plain text: drop roff escapes for dashes and fonts.
    let man = ["\\fB", "\\fI", "\\fR", "\\fP"].iter().fold(man.replace("\\-", "-"), |m, f| m.replace(f, ""));
    let mut missing = Vec::new();
    for sub in ["", "cat", "info", "list", "detach"] {
        let mut cmd = vdmount();
        if !sub.is_empty() {
            cmd.arg(sub);
            if !man.contains(&format!("vdmount {sub}")) {
                missing.push(format!("subcommand {sub}"));
            }
        }
        let help = String::from_utf8(run_ok(cmd.arg("--help")).stdout).unwrap();
        for word in help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']') {
            let word = word.trim_end_matches(|c: char| !c.is_alphanumeric());
            if word.starts_with("--") && word.len() > 2 && !man.contains(word) {
                missing.push(format!("{sub} {word}"));
            }
        }
    }
    assert!(missing.is_empty(), "man/vdmount.1 lacks: {missing:?}");
}

/// Issue 14: `--cow=FILE` is opened once, never through a symlink, and must be the user's own
/// regular file; a new overlay is 0600. The server stops at the (missing) control device, after
/// the overlay was opened or made.
#[test]
fn cow_file_is_opened_safely() {
    use std::os::unix::fs::MetadataExt;
    let dir = scratch();
    let d = dir.path();
    let image = d.join("disk.raw");
    make_source_disk(&image, 1 << 20, 9);
    let img = image.to_str().unwrap();
    let ctl = "/nonexistent/abctl9";

    // A symlink at FILE, to a file elsewhere: refused, and that file is unchanged.
    let elsewhere = scratch();
    let target = elsewhere.path().join("precious");
    std::fs::write(&target, b"do not touch").unwrap();
    let link = d.join("link.qcow2");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert_refused(&[&format!("--cow={}", link.display()), img, ctl], "link.qcow2", "symbolic link");
    assert_eq!(std::fs::read(&target).unwrap(), b"do not touch");
    // A dangling symlink: nothing is created where it points.
    let dangling = d.join("dangling.qcow2");
    let nowhere = elsewhere.path().join("created-through-link");
    std::os::unix::fs::symlink(&nowhere, &dangling).unwrap();
    assert_refused(&[&format!("--cow={}", dangling.display()), img, ctl], "dangling.qcow2", "symbolic link");
    assert!(!nowhere.exists(), "the overlay was created through a symlink");

    // A new overlay is 0600 and a qcow2 file.
    let new = d.join("new.qcow2");
    let (code, err) = stderr_of(&[&format!("--cow={}", new.display()), img, ctl]);
    assert_eq!(code, 3, "{err}");
    let meta = std::fs::metadata(&new).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600, "new overlay mode");
    assert_eq!(&std::fs::read(&new).unwrap()[..4], b"QFI\xfb");
    // It is continued the next time (same image)...
    let (code, err) = stderr_of(&[&format!("--cow={}", new.display()), img, ctl]);
    assert_eq!(code, 3, "{err}");
    // ...but not if another user owns it (only root can make that file here).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&new, Some(65534), Some(65534)).unwrap();
        let before = sha256_file(&new);
        assert_refused(&[&format!("--cow={}", new.display()), img, ctl], "new.qcow2", "owned by uid 65534");
        assert_eq!(sha256_file(&new), before);
    }
    // Not a regular file.
    let fifo = d.join("fifo.qcow2");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a path string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert_refused(&[&format!("--cow={}", fifo.display()), img, ctl], "fifo.qcow2", "not a regular file");
}
