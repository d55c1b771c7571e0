//! EWF2 sets for the tests: made by make_ex01.py (beside this file) from a raw source file, with
//! the layout it reports (every section and table entry), and helpers to patch them and put
//! their checksums right again, so a patch gets past the checksums to the checks behind them.
#![allow(dead_code)]

use crate::common::run_ok;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const DEVICE_INFORMATION: u32 = 1;
pub const CASE_DATA: u32 = 2;
pub const SECTOR_DATA: u32 = 3;
pub const SECTOR_TABLE: u32 = 4;
pub const MD5_HASH: u32 = 8;
pub const SHA1_HASH: u32 = 9;
pub const NEXT: u32 = 0xd;
pub const DONE: u32 = 0xf;

#[derive(Clone, Debug)]
pub struct SectionAt {
    pub segment: usize,
    pub kind: u32,
    /// Offset of the descriptor, and of the data before it.
    pub descriptor: usize,
    pub data: usize,
    pub data_size: usize,
}

#[derive(Clone, Debug)]
pub struct EntryAt {
    pub segment: usize,
    pub chunk: u64,
    /// Offset of the table entry.
    pub at: usize,
    pub offset: u64,
    pub size: u64,
    pub flags: u32,
}

pub struct Layout {
    /// The segment files, .Ex01 first.
    pub segments: Vec<PathBuf>,
    pub sections: Vec<SectionAt>,
    pub entries: Vec<EntryAt>,
}

impl Layout {
    pub fn first(&self) -> &Path {
        &self.segments[0]
    }

    /// The sections of segment `segment` (1-based) of type `kind`.
    pub fn sections_of(&self, segment: usize, kind: u32) -> Vec<SectionAt> {
        self.sections.iter().filter(|s| s.segment == segment && s.kind == kind).cloned().collect()
    }
}

/// Runs make_ex01.py on `src`, writing `base`.Ex01, ...; `args` are its options.
pub fn build(src: &Path, base: &Path, args: &[&str]) -> Layout {
    let layout = base.with_extension("layout.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ewf2/make_ex01.py");
    run_ok(Command::new("python3").arg(script).arg(src).arg(base).args(args).arg("--layout").arg(&layout));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&layout).unwrap()).unwrap();
    let n = |o: &serde_json::Value, k: &str| o[k].as_u64().unwrap();
    Layout {
        segments: v["segments"].as_array().unwrap().iter().map(|s| PathBuf::from(s.as_str().unwrap())).collect(),
        sections: v["sections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| SectionAt {
                segment: n(s, "segment") as usize,
                kind: n(s, "type") as u32,
                descriptor: n(s, "descriptor") as usize,
                data: n(s, "data") as usize,
                data_size: n(s, "data_size") as usize,
            })
            .collect(),
        entries: v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| EntryAt {
                segment: n(e, "segment") as usize,
                chunk: n(e, "chunk"),
                at: n(e, "at") as usize,
                offset: n(e, "offset"),
                size: n(e, "size"),
                flags: n(e, "flags") as u32,
            })
            .collect(),
    }
}

pub fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// Puts the Adler-32 of `bytes[from..sum_at]` at `sum_at`.
pub fn put_adler32(bytes: &mut [u8], from: usize, sum_at: usize) {
    let sum = adler32(&bytes[from..sum_at]);
    bytes[sum_at..sum_at + 4].copy_from_slice(&sum.to_le_bytes());
}

/// After a change in the data of section `s`: its integrity hash (when it has one) and its
/// descriptor's checksum made right again.
pub fn reseal(bytes: &mut [u8], s: &SectionAt) {
    use md5::Digest;
    let d = s.descriptor;
    if bytes[d + 4] & 1 != 0 {
        let h = md5::Md5::digest(&bytes[s.data..s.data + s.data_size]);
        bytes[d + 32..d + 48].copy_from_slice(&h);
    }
    put_adler32(bytes, d, d + 60);
}
