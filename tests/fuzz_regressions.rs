//! Every input that once crashed, hung or blew up a fuzz target (or a hostile case found by
//! hand), replayed through the same code as the target: tests/fuzz-regressions/<target>/<file>.
//! The folder name says which target: open_and_read (format detected), open_qcow2, open_vmdk,
//! open_vhd, open_vhdx, open_vdi, open_qed, open_parallels, open_ewf, open_dmg, open_sparseimage (format forced), vmdk_descriptor. Each input runs in a fresh folder that
//! also holds a FIFO named "fifo", so an image naming it as backing file must not hang.

mod common;

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod fuzz_lib;

use std::path::Path;
use std::time::Duration;
use vdmount::formats::Format;

/// Longer than any input should take; a hang fails the test instead of stalling it forever.
const TIMEOUT: Duration = Duration::from_secs(30);

fn format_of(target: &str) -> Option<Option<Format>> {
    Some(match target {
        "open_and_read" => None,
        "open_qcow2" => Some(Format::Qcow2),
        "open_vmdk" => Some(Format::Vmdk),
        "open_vhd" => Some(Format::Vhd),
        "open_vhdx" => Some(Format::Vhdx),
        "open_vdi" => Some(Format::Vdi),
        "open_qed" => Some(Format::Qed),
        "open_parallels" => Some(Format::Parallels),
        "open_ewf" => Some(Format::Ewf),
        "open_dmg" => Some(Format::Dmg),
        "open_sparseimage" => Some(Format::SparseImage),
        _ => return None,
    })
}

/// Replays one input on a thread; Err if it panicked or did not finish in time.
fn replay(target: &str, input: &Path) -> Result<(), String> {
    let data = std::fs::read(input).unwrap();
    let target = target.to_string();
    let dir = common::scratch();
    let fifo = std::ffi::CString::new(dir.path().join("fifo").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    let image = dir.path().join(input.file_name().unwrap());
    std::fs::write(&image, &data).unwrap();

    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(|| match format_of(&target) {
            Some(format) => fuzz_lib::open_and_read_file(&image, &data, format),
            None if target == "vmdk_descriptor" => {
                let _ = vdmount::formats::vmdk::descriptor::parse_descriptor(&String::from_utf8_lossy(&data));
            }
            None => panic!("unknown fuzz target folder {target}"),
        });
        let _ = done.send(outcome.is_ok());
    });
    match finished.recv_timeout(TIMEOUT) {
        Ok(true) => Ok(()),
        Ok(false) => Err("panicked".into()),
        Err(_) => Err(format!("did not finish in {TIMEOUT:?}")),
    }
}

#[test]
fn fuzz_regressions_replay_cleanly() {
    let root = common::repo().join("tests/fuzz-regressions");
    let mut failures = Vec::new();
    let mut count = 0;
    for target in std::fs::read_dir(&root).unwrap() {
        let target = target.unwrap().path();
        if !target.is_dir() {
            continue;
        }
        let name = target.file_name().unwrap().to_str().unwrap().to_string();
        for input in std::fs::read_dir(&target).unwrap() {
            let input = input.unwrap().path();
            count += 1;
            if let Err(e) = replay(&name, &input) {
                failures.push(format!("{}: {e}", input.display()));
            }
        }
    }
    assert!(count > 0, "no regression inputs found under {}", root.display());
    assert!(failures.is_empty(), "fuzz regressions fail again:\n{}", failures.join("\n"));
}

/// The input that named a FIFO as its backing file used to block in open(2) forever; it must now
/// be refused, quickly, with a message naming the FIFO and the image.
#[test]
fn backing_file_fifo_is_refused_not_waited_for() {
    let input = common::repo().join("tests/fuzz-regressions/open_and_read/backing-is-fifo.qcow2");
    let dir = common::scratch();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let image = dir.path().join("child.qcow2");
    std::fs::copy(&input, &image).unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let opts = vdmount::formats::OpenOptions::new(vdmount::cache::Cache::new(1 << 20));
        let _ = done.send(vdmount::formats::open(&image, &opts).err().map(|e| e.to_string()));
    });
    let err = finished.recv_timeout(TIMEOUT).expect("opening an image whose backing file is a FIFO hung");
    let err = err.expect("an image whose backing file is a FIFO opened");
    assert!(err.contains("fifo") && err.contains("child.qcow2") && err.contains("FIFO"), "unexpected message: {err}");
}
