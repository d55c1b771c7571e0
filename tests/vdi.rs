//! VDI reader tests. Oracles: qemu-img for the static and dynamic images it makes (1 MiB
//! blocks); for other block sizes and for differencing images, which qemu cannot make or read,
//! the image is written here from the specification (VirtualBox's VDI header), so the expected
//! disk is the data it was written from.

mod common;

use common::rng::Rng;
use common::*;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;
const UNALLOCATED: u32 = 0xffff_ffff;
const ZERO: u32 = 0xffff_fffe;

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// A source disk of `size` bytes with `[from, to)` zeroed, so images made from it have
/// unallocated blocks.
fn source_with_hole(path: &Path, size: u64, seed: u64, from: u64, to: u64) -> Vec<u8> {
    make_source_disk(path, size, seed);
    let mut data = std::fs::read(path).unwrap();
    let (from, to) = ((from as usize).min(data.len()), (to as usize).min(data.len()));
    data[from..to].fill(0);
    std::fs::write(path, &data).unwrap();
    data
}

fn to_vdi(src: &Path, dst: &Path, opts: &[&str]) {
    let mut args = vec!["convert", "-f", "raw", "-O", "vdi"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&[src.to_str().unwrap(), dst.to_str().unwrap()]);
    qemu_img(&args);
}

fn info(image: &Path, args: &[&str]) -> String {
    let out = run_ok(vdmount().arg("info").args(args).arg(image));
    String::from_utf8(out.stdout).unwrap()
}

/// A UUID at `at` in a VDI file, as VirtualBox prints it (first three fields little-endian).
fn uuid_at(b: &[u8], at: usize) -> String {
    let u = &b[at..at + 16];
    format!(
        "{:08x}-{:04x}-{:04x}-{}-{}",
        le32(u, 0),
        u16::from_le_bytes([u[4], u[5]]),
        u16::from_le_bytes([u[6], u[7]]),
        u[8..10].iter().map(|x| format!("{x:02x}")).collect::<String>(),
        u[10..].iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

#[test]
fn static_and_dynamic_match_qemu() {
    let dir = scratch();
    // 7 MiB with blocks 2 to 4 zero (unallocated in the dynamic image); sizes that are not whole
    // blocks (5 MiB - 1536, 3 MiB + 512), and one of a single block.
    for (i, size) in [7 * MIB, 5 * MIB - 1536, 3 * MIB + 512, MIB].into_iter().enumerate() {
        let src = dir.path().join(format!("src{i}.raw"));
        source_with_hole(&src, size, 3 + i as u64, 2 * MIB, 4 * MIB + 4096);
        for (kind, opts) in [("dynamic", &[][..]), ("static", &["-o", "static=on"][..])] {
            let img = dir.path().join(format!("img{i}-{kind}.vdi"));
            to_vdi(&src, &img, opts);
            let expected = qemu_raw_sha256(&img, Some("vdi"));
            let got = vdmount_cat_sha256(&img, &[]).unwrap_or_else(|e| panic!("{kind} {size}: {e}"));
            assert_eq!(got, expected, "size {size}, {kind}: vdmount and qemu-img differ");
            assert_eq!(got, sha256_file(&src), "size {size}, {kind}: not the source disk");
            let (described, total) = described_bytes(&img);
            assert_eq!((described, total), (size, size), "{kind} {size}: not described whole as extents");
        }
    }
}

#[test]
fn qemu_io_writes_into_a_dynamic_image() {
    let dir = scratch();
    let img = dir.path().join("w.vdi");
    qemu_img(&["create", "-q", "-f", "vdi", img.to_str().unwrap(), "9M"]);
    run_ok(std::process::Command::new("qemu-io").args([
        "-f",
        "vdi",
        "-c",
        "write -P 0x5a 5M 300k",
        "-c",
        "write -P 0xa5 1000k 100k",
        "-c",
        "write -P 0x11 0 512",
        "-c",
        "write -P 0x22 9215k 1k",
        img.to_str().unwrap(),
    ]));
    assert_eq!(vdmount_cat_sha256(&img, &[]).unwrap(), qemu_raw_sha256(&img, Some("vdi")));
    assert_eq!(described_bytes(&img), (9 * MIB, 9 * MIB));
}

#[test]
fn info_shows_type_block_size_and_uuids() {
    let dir = scratch();
    let src = dir.path().join("src.raw");
    make_source_disk(&src, 3 * MIB, 5);
    for (kind, opts) in [("dynamic", &[][..]), ("static", &["-o", "static=on"][..])] {
        let img = dir.path().join(format!("{kind}.vdi"));
        to_vdi(&src, &img, opts);
        let bytes = std::fs::read(&img).unwrap();
        let text = info(&img, &[]);
        for want in [
            "format: vdi".to_string(),
            format!("type: {kind}"),
            "block size: 1048576".into(),
            "cluster size: 1048576".into(),
            "virtual size: 3.0 MiB (3145728 bytes)".into(),
            format!("creation UUID: {}", uuid_at(&bytes, 0x188)),
            format!("modification UUID: {}", uuid_at(&bytes, 0x198)),
        ] {
            assert!(text.contains(&want), "{want:?} not in:\n{text}");
        }
    }
}

/// One block of a hand-written VDI.
#[derive(Clone)]
enum Block {
    /// Stored in the file (the data, one block long).
    Data(Vec<u8>),
    /// Map entry 0xFFFFFFFF: the parent's, or zeros.
    Unallocated,
    /// Map entry 0xFFFFFFFE: zeros.
    Zero,
}

/// A VDI written from the specification: header, block map at 512, blocks from the next
/// 512-byte boundary, stored in reverse order (so map entries are not the identity).
struct Vdi {
    image_type: u32,
    disk_size: u64,
    block_size: u64,
    blocks: Vec<Block>,
    create: [u8; 16],
    modify: [u8; 16],
    linkage: [u8; 16],
    parent_modify: [u8; 16],
}

impl Vdi {
    fn bytes(&self) -> Vec<u8> {
        let n = self.blocks.len();
        let data_at = (512 + 4 * n).next_multiple_of(512);
        let mut b = vec![0u8; data_at];
        b[..40].copy_from_slice(b"<<< Oracle VM VirtualBox Disk Image >>>\n");
        let put32 = |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put32(&mut b, 0x40, 0xbeda_107f); //                   signature
        put32(&mut b, 0x44, 0x0001_0001); //                   version 1.1
        put32(&mut b, 0x48, 0x190); //                         header size
        put32(&mut b, 0x4c, self.image_type); //               1 dynamic, 2 static, 4 differencing
        put32(&mut b, 0x154, 512); //                          block map offset
        put32(&mut b, 0x158, data_at as u32); //               data offset
        put32(&mut b, 0x168, 512); //                          legacy geometry: sector size
        b[0x170..0x178].copy_from_slice(&self.disk_size.to_le_bytes());
        put32(&mut b, 0x178, self.block_size as u32); //       block size
        put32(&mut b, 0x180, n as u32); //                     blocks
        let stored: Vec<usize> = (0..n).rev().filter(|i| matches!(self.blocks[*i], Block::Data(_))).collect();
        put32(&mut b, 0x184, stored.len() as u32); //          blocks allocated
        b[0x188..0x198].copy_from_slice(&self.create);
        b[0x198..0x1a8].copy_from_slice(&self.modify);
        b[0x1a8..0x1b8].copy_from_slice(&self.linkage);
        b[0x1b8..0x1c8].copy_from_slice(&self.parent_modify);
        for (i, block) in self.blocks.iter().enumerate() {
            let entry = match block {
                Block::Data(_) => stored.iter().position(|s| *s == i).unwrap() as u32,
                Block::Unallocated => UNALLOCATED,
                Block::Zero => ZERO,
            };
            put32(&mut b, 512 + 4 * i, entry);
        }
        for i in stored {
            let Block::Data(d) = &self.blocks[i] else { unreachable!() };
            assert_eq!(d.len() as u64, self.block_size);
            b.extend_from_slice(d);
        }
        b
    }

    /// The disk as it should read, over `below` (the parent's disk, or none).
    fn expected(&self, below: Option<&[u8]>) -> Vec<u8> {
        let bs = self.block_size as usize;
        let mut out = vec![0u8; self.disk_size as usize];
        for (i, block) in self.blocks.iter().enumerate() {
            let start = i * bs;
            if start >= out.len() {
                break;
            }
            let end = (start + bs).min(out.len());
            match block {
                Block::Data(d) => out[start..end].copy_from_slice(&d[..end - start]),
                Block::Unallocated => {
                    if let Some(p) = below {
                        let pe = end.min(p.len());
                        if start < pe {
                            out[start..pe].copy_from_slice(&p[start..pe]);
                        }
                    }
                }
                Block::Zero => {}
            }
        }
        out
    }
}

/// `n` bytes of deterministic data for block `i`.
fn block_data(n: u64, i: u64, seed: u64) -> Vec<u8> {
    let mut rng = Rng((seed * 1000 + i).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    (0..n).map(|_| rng.next() as u8).collect()
}

fn uuid(seed: u8) -> [u8; 16] {
    std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8 * 7) | 1)
}

#[test]
fn other_block_sizes_and_discarded_blocks() {
    let dir = scratch();
    for (block_size, disk_size) in [(2 * MIB, 9 * MIB - 512), (512 << 10, 3 * MIB), (4096, 70 * 1024)] {
        let n = disk_size.div_ceil(block_size);
        let blocks: Vec<Block> = (0..n)
            .map(|i| match i % 4 {
                1 => Block::Unallocated,
                3 => Block::Zero,
                _ => Block::Data(block_data(block_size, i, block_size)),
            })
            .collect();
        for image_type in [1, 2] {
            let vdi = Vdi {
                image_type,
                disk_size,
                block_size,
                blocks: blocks.clone(),
                create: uuid(1),
                modify: uuid(2),
                linkage: [0; 16],
                parent_modify: [0; 16],
            };
            let img = dir.path().join(format!("b{block_size}-t{image_type}.vdi"));
            std::fs::write(&img, vdi.bytes()).unwrap();
            let got = vdmount_cat_sha256(&img, &[]).unwrap_or_else(|e| panic!("block size {block_size}: {e}"));
            assert_eq!(got, sha256_hex(vdi.expected(None)), "block size {block_size}: not the data written");
            assert_eq!(described_bytes(&img), (disk_size, disk_size));
            assert!(info(&img, &[]).contains(&format!("block size: {block_size}")));
        }
    }
}

#[test]
fn a_discarded_block_in_a_qemu_image_reads_as_zeros() {
    let dir = scratch();
    let src = dir.path().join("src.raw");
    let mut data = source_with_hole(&src, 4 * MIB, 21, 0, 0);
    let img = dir.path().join("d.vdi");
    to_vdi(&src, &img, &[]);
    let mut bytes = std::fs::read(&img).unwrap();
    let map = le32(&bytes, 0x154) as usize;
    assert!(le32(&bytes, map + 4) < ZERO, "block 1 is stored");
    bytes[map + 4..map + 8].copy_from_slice(&ZERO.to_le_bytes()); // block 1: discarded
    std::fs::write(&img, &bytes).unwrap();
    data[MIB as usize..2 * MIB as usize].fill(0);
    assert_eq!(vdmount_cat_sha256(&img, &[]).unwrap(), sha256_hex(&data));
    assert_eq!(vdmount_cat_sha256(&img, &[]).unwrap(), qemu_raw_sha256(&img, Some("vdi")));
}

/// A folder with a qemu-made dynamic parent under an unremarkable name, a decoy VDI and a file
/// named .vdi that is not one, and a differencing child written by hand over the parent.
struct Diff {
    dir: tempfile::TempDir,
    parent: PathBuf,
    child: PathBuf,
    expected: Vec<u8>,
}

fn child_over(parent_bytes: &[u8], size: u64, seed: u64) -> Vdi {
    let n = size.div_ceil(MIB);
    let blocks = (0..n)
        .map(|i| match i % 3 {
            0 => Block::Data(block_data(MIB, i, seed)),
            1 => Block::Unallocated,
            _ if i == 2 => Block::Zero,
            _ => Block::Unallocated,
        })
        .collect();
    Vdi {
        image_type: 4,
        disk_size: size,
        block_size: MIB,
        blocks,
        create: uuid(seed as u8 + 10),
        modify: uuid(seed as u8 + 20),
        linkage: parent_bytes[0x188..0x198].try_into().unwrap(),
        parent_modify: parent_bytes[0x198..0x1a8].try_into().unwrap(),
    }
}

fn differencing() -> Diff {
    let dir = scratch();
    let src = dir.path().join("src.raw");
    let base = source_with_hole(&src, 6 * MIB, 31, 4 * MIB, 5 * MIB);
    let parent = dir.path().join("zz-something.vdi");
    to_vdi(&src, &parent, &[]);
    std::fs::remove_file(&src).unwrap();
    // Decoys: another VDI (other UUID), and a text file with the extension.
    let decoy_src = dir.path().join("decoy.raw");
    make_source_disk(&decoy_src, MIB, 1);
    to_vdi(&decoy_src, &dir.path().join("aa-other.vdi"), &[]);
    std::fs::remove_file(&decoy_src).unwrap();
    std::fs::write(dir.path().join("notes.VDI"), "not a disk").unwrap();
    let parent_bytes = std::fs::read(&parent).unwrap();
    let child_vdi = child_over(&parent_bytes, 6 * MIB, 3);
    let child = dir.path().join("child.vdi");
    std::fs::write(&child, child_vdi.bytes()).unwrap();
    let expected = child_vdi.expected(Some(&base));
    Diff { dir, parent, child, expected }
}

#[test]
fn differencing_child_over_a_parent_found_by_uuid() {
    let d = differencing();
    let got = vdmount_cat_sha256(&d.child, &[]).unwrap();
    assert_eq!(got, sha256_hex(&d.expected), "child over parent: not the data written");
    assert_eq!(described_bytes(&d.child), (6 * MIB, 6 * MIB));
    let parent_bytes = std::fs::read(&d.parent).unwrap();
    let text = info(&d.child, &[]);
    for want in [
        "type: differencing".to_string(),
        format!("parent: {}", d.parent.display()),
        format!("parent creation UUID (recorded in child): {}", uuid_at(&parent_bytes, 0x188)),
        format!("parent modification UUID (in parent): {}", uuid_at(&parent_bytes, 0x198)),
        "type: dynamic".into(),
    ] {
        assert!(text.contains(&want), "{want:?} not in:\n{text}");
    }

    // A second child over the first: a chain of three.
    let child_bytes = std::fs::read(&d.child).unwrap();
    let top = child_over(&child_bytes, 6 * MIB, 4);
    let top_path = d.dir.path().join("top.vdi");
    std::fs::write(&top_path, top.bytes()).unwrap();
    assert_eq!(vdmount_cat_sha256(&top_path, &[]).unwrap(), sha256_hex(top.expected(Some(&d.expected))));
}

#[test]
fn a_parent_written_to_since_is_refused_unless_ignored() {
    let d = differencing();
    let mut parent_bytes = std::fs::read(&d.parent).unwrap();
    parent_bytes[0x198] ^= 0xff; // modification UUID
    std::fs::write(&d.parent, &parent_bytes).unwrap();
    let e = vdmount_cat_sha256(&d.child, &[]).unwrap_err();
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("child.vdi") && e.contains("has modification UUID") && e.contains("--ignore-parent-id"), "{e}");
    assert_eq!(vdmount_cat_sha256(&d.child, &["--ignore-parent-id"]).unwrap(), sha256_hex(&d.expected));
    assert!(info(&d.child, &["--ignore-parent-id"]).contains("MISMATCH, ignored (--ignore-parent-id)"));
}

#[test]
fn a_missing_parent_is_refused_saying_where_it_was_looked_for() {
    let d = differencing();
    std::fs::remove_file(&d.parent).unwrap();
    let e = vdmount_cat_sha256(&d.child, &[]).unwrap_err();
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    for want in ["child.vdi", "no .vdi file in", "aa-other.vdi (UUID", "notes.VDI (not a readable VDI)", "--allow-dir"]
    {
        assert!(e.contains(want), "{want:?} not in {e}");
    }
    // info still shows the child, and the parent layer as not opened, saying why.
    let out = vdmount().arg("info").arg(&d.child).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("type: differencing") && text.contains("not opened:") && text.contains("no .vdi file in"),
        "{text}"
    );
}

#[test]
fn a_parent_in_another_folder_needs_allow_dir() {
    let d = differencing();
    let elsewhere = d.dir.path().join("bases");
    std::fs::create_dir(&elsewhere).unwrap();
    let moved = elsewhere.join("base.vdi");
    std::fs::rename(&d.parent, &moved).unwrap();
    let e = vdmount_cat_sha256(&d.child, &[]).unwrap_err();
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("no .vdi file in") && e.contains("--allow-dir"), "{e}");
    let allow = ["--allow-dir", elsewhere.to_str().unwrap()];
    assert_eq!(vdmount_cat_sha256(&d.child, &allow).unwrap(), sha256_hex(&d.expected));
    assert!(info(&d.child, &allow).contains(&format!("parent: {}", moved.display())));
}

#[test]
fn a_symlink_beside_the_child_leading_out_is_not_followed() {
    let d = differencing();
    let elsewhere = scratch();
    let moved = elsewhere.path().join("base.vdi");
    std::fs::copy(&d.parent, &moved).unwrap();
    std::fs::remove_file(&d.parent).unwrap();
    std::os::unix::fs::symlink(&moved, d.dir.path().join("link.vdi")).unwrap();
    let e = vdmount_cat_sha256(&d.child, &[]).unwrap_err();
    assert!(e.contains("link.vdi (not a readable VDI)"), "{e}");
    let allow = ["--allow-dir", elsewhere.path().to_str().unwrap()];
    assert_eq!(vdmount_cat_sha256(&d.child, &allow).unwrap(), sha256_hex(&d.expected));
}

#[test]
fn third_party_vdi_images() {
    // fixtures/third-party holds no VDI yet; this reads any that are added to MANIFEST.tsv.
    let read = check_third_party("vdi");
    eprintln!("third-party VDI images read: {read:?}");
}

/// nginx serving `root` with the folder listing on or off, logging requests to `log`.
fn nginx_listing(root: &Path, listing: bool, log: &Path) -> common::servers::Nginx {
    let extra = format!("autoindex {}; access_log {} ranges;", if listing { "on" } else { "off" }, log.display());
    common::servers::Nginx::start_with(root, &extra)
}

/// `vdmount cat URL`: the SHA-256 of what it wrote, or its stderr.
fn cat_url(url: &str, envs: &[(&str, &str)]) -> Result<String, String> {
    let out = vdmount().args(["cat", url]).envs(envs.iter().copied()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "{url}: {err}");
    if out.status.success() {
        Ok(sha256_hex(&out.stdout))
    } else {
        Err(err)
    }
}

#[test]
fn differencing_child_over_http_finds_its_parent_in_the_folder_listing() {
    let d = differencing();
    let logs = scratch();
    let log = logs.path().join("access.log");
    let nginx = nginx_listing(d.dir.path(), true, &log);
    let url = nginx.http("child.vdi");
    assert_eq!(cat_url(&url, &[]).unwrap(), sha256_hex(&d.expected), "{url}: not the data written");
    // The listing was read, and the parent found through it.
    let seen = common::servers::requests_logged(&log);
    assert!(seen.iter().any(|r| r.starts_with("GET / ")), "no listing asked for: {seen:?}");
    assert!(seen.iter().any(|r| r.starts_with("GET /zz-something.vdi ")), "parent not read: {seen:?}");
}

#[test]
fn differencing_child_over_http_without_a_listing_is_one_line_saying_what_to_do() {
    let d = differencing();
    let logs = scratch();
    let nginx = nginx_listing(d.dir.path(), false, &logs.path().join("access.log"));
    let url = nginx.http("child.vdi");
    let err = cat_url(&url, &[]).unwrap_err();
    let lines: Vec<&str> = err.trim_end().lines().collect();
    assert_eq!(lines.len(), 1, "not one line: {err}");
    let line = lines[0];
    assert!(line.contains(&url) && line.contains("only by creation UUID "), "{line}");
    assert!(line.contains("does not list the folder") && line.contains("HTTP 403"), "{line}");
    assert!(line.contains("autoindex on") && line.contains("download the chain"), "{line}");
    // `info` still describes the child, and says why its parent is not opened.
    let out = vdmount().args(["info", &url]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("type: differencing") && text.contains("not opened:"), "{text}");
    assert!(text.contains("does not list the folder"), "{text}");
}

#[test]
fn a_listing_naming_files_outside_the_folder_is_not_followed() {
    let d = differencing();
    let sub = d.dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::copy(&d.child, sub.join("child.vdi")).unwrap();
    let logs = scratch();
    let log = logs.path().join("access.log");
    let nginx = nginx_listing(d.dir.path(), true, &log);
    // A listing (served as the folder's index page) whose links lead to the parent outside.
    let port = nginx.server.port;
    let page = format!(
        "<html><a href=\"../zz-something.vdi\">a</a> <a href=\"http://127.0.0.1:{port}/zz-something.vdi\">b</a>\n\
         <a href=\"/zz-something.vdi\">c</a> <a href=\"..%2fzz-something.vdi\">d</a> <a href=\"child.vdi\">e</a></html>"
    );
    std::fs::write(sub.join("index.html"), page).unwrap();
    let url = nginx.http("sub/child.vdi");
    let err = cat_url(&url, &[]).unwrap_err();
    assert!(err.contains("no .vdi file in") && err.contains(&url), "{err}");
    let seen = common::servers::requests_logged(&log);
    assert!(seen.iter().any(|r| r.starts_with("GET /sub/ ")), "no listing asked for: {seen:?}");
    assert!(!seen.iter().any(|r| r.contains("zz-something")), "a file outside the folder was requested: {seen:?}");
}

#[test]
fn differencing_child_over_s3_finds_its_parent_by_listing_the_prefix() {
    let d = differencing();
    let moto = common::servers::moto();
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let p = |n: &str| d.dir.path().join(n);
    let (parent, other, notes) = (p("zz-something.vdi"), p("aa-other.vdi"), p("notes.VDI"));
    common::servers::s3_put(
        &endpoint,
        "disks",
        &[
            ("vm/child.vdi", &d.child),
            ("vm/zz-something.vdi", &parent),
            ("vm/aa-other.vdi", &other),
            ("vm/notes.VDI", &notes),
            // Outside the prefix: never a candidate.
            ("vm/sub/deeper.vdi", &parent),
            ("elsewhere/child.vdi", &d.child),
            ("elsewhere/sub/zz-something.vdi", &parent),
        ],
    );
    let envs = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let url = "s3://disks/vm/child.vdi";
    assert_eq!(cat_url(url, &envs).unwrap(), sha256_hex(&d.expected), "{url}: not the data written");
    // Its parent only in a deeper prefix: not found there.
    let url = "s3://disks/elsewhere/child.vdi";
    let err = cat_url(url, &envs).unwrap_err();
    assert!(err.contains("no .vdi file in") && err.contains(url), "{err}");
}
