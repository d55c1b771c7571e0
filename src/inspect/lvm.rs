//! LVM2 physical volumes inside an image, read by vdmount itself (never by the host's lvm, which
//! would mix the image's volume group with the host's when their names or UUIDs are the same):
//! the label (`LABELONE` in one of the first four sectors), the metadata area header, the text
//! metadata (`lvm_text`), and from it each logical volume as a list of linear or striped pieces
//! of its physical volumes, ready to become device-mapper tables. Everything comes from the
//! image: offsets and counts are checked before use, and what vdmount does not map (mirrors,
//! RAID, thin, snapshots, caches) is listed with the reason.

use super::lvm_text::{self, Value};
use crate::formats::DiskImage;
use crate::limits::{MAX_LVM_METADATA_BYTES, MAX_LVM_SEGMENTS, MAX_LVM_STRIPES};

const SECTOR: u64 = 512;
const LABEL_MAGIC: &[u8] = b"LABELONE";
const LABEL_TYPE: &[u8] = b"LVM2 001";
const MDA_MAGIC: &[u8] = b" LVM2 x[5A%r0N*>";
const MDA_HEADER_SIZE: u64 = 512;
/// lvm2's checksums: CRC-32 (reflected 0xEDB88320) from this seed, without the final inversion.
const INITIAL_CRC: u32 = 0xf597a6cf;
/// Longest volume group or logical volume name lvm2 allows.
const MAX_NAME: usize = 127;

/// lvm2's checksum of `data`.
pub fn crc(data: &[u8]) -> u32 {
    let mut c = INITIAL_CRC;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = (c >> 1) ^ (0xEDB8_8320 & (c & 1).wrapping_neg());
        }
    }
    c
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// A physical volume's label and the newest metadata text found in its metadata areas.
#[derive(Debug)]
pub struct PhysicalVolume {
    /// The 32-character UUID, without the dashes the text metadata writes.
    pub uuid: String,
    pub metadata: Result<Vec<u8>, String>,
}

/// Reads the physical volume at byte `start` of `disk` (a partition of `size` bytes, or the
/// whole disk); `Err` says why it is not a usable one.
pub fn read_pv(disk: &dyn DiskImage, start: u64, size: u64) -> Result<PhysicalVolume, String> {
    let mut head = vec![0u8; 4 * SECTOR as usize];
    disk.read_at(&mut head, start).map_err(|e| format!("reading the LVM label: {e}"))?;
    let (i, sec) = head
        .chunks(SECTOR as usize)
        .enumerate()
        .find(|(i, s)| &s[0..8] == LABEL_MAGIC && le64(s, 8) == *i as u64)
        .ok_or("no LVM2 label in the first four sectors")?;
    if &sec[24..32] != LABEL_TYPE {
        return Err(format!("LVM label of an unknown type {:?}", String::from_utf8_lossy(&sec[24..32])));
    }
    if crc(&sec[20..]) != le32(sec, 16) {
        return Err(format!("LVM label in sector {i}: bad checksum"));
    }
    let pvh = le32(sec, 20) as usize;
    if !(32..=SECTOR as usize - 56).contains(&pvh) {
        return Err(format!("LVM label: PV header at offset {pvh}, outside the label sector"));
    }
    let uuid = &sec[pvh..pvh + 32];
    if !uuid.iter().all(|c| c.is_ascii_alphanumeric()) {
        return Err("LVM label: the PV UUID is not text".into());
    }
    // Two lists of (offset, size) follow, each ending with a zero offset: data areas, then
    // metadata areas. They must fit in the sector.
    let mut lists: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
    let mut at = pvh + 40;
    for list in lists.iter_mut() {
        loop {
            if at + 16 > sec.len() {
                return Err("LVM label: the area lists run past the label sector".into());
            }
            let (off, len) = (le64(sec, at), le64(sec, at + 8));
            at += 16;
            if off == 0 {
                break;
            }
            list.push((off, len));
        }
    }
    let mut metadata = Err("no metadata area (vgcfgrestore it, or read it from another PV)".to_string());
    for &(off, len) in &lists[1] {
        match read_mda(disk, start, size, off, len) {
            Ok(text) => {
                metadata = Ok(text);
                break;
            }
            Err(e) => metadata = Err(e),
        }
    }
    Ok(PhysicalVolume { uuid: String::from_utf8_lossy(uuid).into_owned(), metadata })
}

/// The current metadata text of the metadata area at `off` (`len` bytes) of the PV at `start`.
fn read_mda(disk: &dyn DiskImage, start: u64, size: u64, off: u64, len: u64) -> Result<Vec<u8>, String> {
    if len < 2 * MDA_HEADER_SIZE || off.checked_add(len).is_none_or(|end| end > size) {
        return Err(format!("LVM metadata area at {off} ({len} bytes) is past the end of the PV ({size} bytes)"));
    }
    let mut h = vec![0u8; MDA_HEADER_SIZE as usize];
    let base = start.checked_add(off).ok_or("LVM metadata area offset overflows")?;
    disk.read_at(&mut h, base).map_err(|e| format!("reading the LVM metadata area: {e}"))?;
    if &h[4..20] != MDA_MAGIC || le32(&h, 20) != 1 {
        return Err(format!("LVM metadata area at {off}: bad magic or version"));
    }
    if crc(&h[4..]) != le32(&h, 0) {
        return Err(format!("LVM metadata area at {off}: bad header checksum"));
    }
    // The first raw location is the committed metadata, a circular buffer after the header.
    let (loc, n, sum, flags) = (le64(&h, 40), le64(&h, 48), le32(&h, 56), le32(&h, 60));
    if flags & 1 != 0 || loc == 0 || n == 0 {
        return Err(format!("LVM metadata area at {off} holds no metadata"));
    }
    if n > MAX_LVM_METADATA_BYTES {
        return Err(format!(
            "LVM metadata is {n} bytes, more than the limit of {MAX_LVM_METADATA_BYTES}; the image is corrupt or hostile"
        ));
    }
    if loc < MDA_HEADER_SIZE || loc >= len || n > len - MDA_HEADER_SIZE {
        return Err(format!("LVM metadata at {loc} ({n} bytes) is outside its area ({len} bytes)"));
    }
    let mut text = vec![0u8; n as usize];
    let first = n.min(len - loc) as usize;
    disk.read_at(&mut text[..first], base + loc).map_err(|e| format!("reading LVM metadata: {e}"))?;
    if first < text.len() {
        disk.read_at(&mut text[first..], base + MDA_HEADER_SIZE).map_err(|e| format!("reading LVM metadata: {e}"))?;
    }
    if crc(&text) != sum {
        return Err(format!("LVM metadata at {off}: bad checksum"));
    }
    while text.last() == Some(&0) {
        text.pop();
    }
    Ok(text)
}

/// A physical volume as the volume group's metadata describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct PvRef {
    pub name: String,
    pub uuid: String,
    /// First sector of the first extent, and the number of extents.
    pub pe_start: u64,
    pub pe_count: u64,
}

/// One piece of a logical volume: `len` sectors from `start`, on one PV (linear) or several
/// (striped, in chunks of `chunk` sectors).
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start: u64,
    pub len: u64,
    pub chunk: u64,
    /// (index into `VolumeGroup::pvs`, first sector on that PV).
    pub stripes: Vec<(usize, u64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogicalVolume {
    pub name: String,
    pub sectors: u64,
    /// The pieces, or why vdmount does not map this volume.
    pub segments: Result<Vec<Segment>, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VolumeGroup {
    pub name: String,
    pub id: String,
    pub seqno: u64,
    pub extent_size: u64,
    pub pvs: Vec<PvRef>,
    /// The visible logical volumes (lvm2's internal ones, such as a mirror's legs, are left out).
    pub lvs: Vec<LogicalVolume>,
}

/// A name lvm2 would accept, so it is safe in a device-mapper name and a folder.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_NAME
        && !n.starts_with('-')
        && n != "."
        && n != ".."
        && n.chars().all(|c| c.is_ascii_alphanumeric() || "+_.-".contains(c))
}

/// The volume group a metadata text describes.
pub fn parse_vg(text: &[u8]) -> Result<VolumeGroup, String> {
    let top = lvm_text::parse(text)?;
    let (name, vg) = top
        .sections()
        .find(|(_, s)| s.get("physical_volumes").is_some())
        .ok_or("LVM metadata: no volume group section")?;
    if !valid_name(name) {
        return Err(format!("LVM metadata: volume group name {:?} is not valid", truncate(name)));
    }
    let need = |v: &Value, key: &str, what: &str| {
        v.uint(key).ok_or_else(|| format!("LVM metadata: {what} has no valid {key}"))
    };
    let extent_size = need(vg, "extent_size", name)?;
    if extent_size == 0 || extent_size > 1 << 32 {
        return Err(format!("LVM metadata: extent size {extent_size} sectors is not valid"));
    }
    let mut pvs = Vec::new();
    for (pv_name, pv) in vg.get("physical_volumes").map(|v| v.sections()).into_iter().flatten() {
        let what = format!("PV {}", truncate(pv_name));
        let uuid: String = pv.str("id").ok_or(format!("LVM metadata: {what} has no id"))?.replace('-', "");
        pvs.push(PvRef {
            name: pv_name.to_string(),
            uuid,
            pe_start: need(pv, "pe_start", &what)?,
            pe_count: need(pv, "pe_count", &what)?,
        });
    }
    let mut lvs = Vec::new();
    for (lv_name, lv) in vg.get("logical_volumes").map(|v| v.sections()).into_iter().flatten() {
        let visible = lv.list("status").is_some_and(|s| s.contains(&Value::Str("VISIBLE".into())));
        if !visible {
            continue;
        }
        let segments = if valid_name(lv_name) {
            segments(lv, &pvs, extent_size)
        } else {
            Err(format!("logical volume name {:?} is not valid", truncate(lv_name)))
        };
        let sectors = segments.as_ref().map(|s| s.iter().map(|s| s.len).sum()).unwrap_or(0);
        lvs.push(LogicalVolume { name: truncate(lv_name), sectors, segments });
    }
    Ok(VolumeGroup {
        name: name.to_string(),
        id: vg.str("id").unwrap_or("").to_string(),
        seqno: vg.uint("seqno").unwrap_or(0),
        extent_size,
        pvs,
        lvs,
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(MAX_NAME + 1).collect()
}

/// The segments of one logical volume, in order, covering it without gaps.
fn segments(lv: &Value, pvs: &[PvRef], extent: u64) -> Result<Vec<Segment>, String> {
    let mut out: Vec<Segment> = Vec::new();
    let mut next_extent = 0u64;
    let mut segs: Vec<(u64, &Value)> = Vec::new();
    for (_, s) in lv.sections().filter(|(k, _)| k.starts_with("segment")) {
        if segs.len() >= MAX_LVM_SEGMENTS {
            return Err(format!("more than {MAX_LVM_SEGMENTS} segments"));
        }
        segs.push((s.uint("start_extent").ok_or("a segment has no start_extent")?, s));
    }
    segs.sort_by_key(|(start, _)| *start);
    if segs.is_empty() {
        return Err("no segments".into());
    }
    for (start_extent, s) in segs {
        let count = s.uint("extent_count").filter(|&c| c > 0).ok_or("a segment has no extent_count")?;
        let kind = s.str("type").unwrap_or("");
        if kind != "striped" {
            return Err(format!(
                "segment type {:?} is not mapped by vdmount (only linear and striped)",
                truncate(kind)
            ));
        }
        if start_extent != next_extent {
            return Err(format!("segments leave a gap or overlap at extent {next_extent}"));
        }
        next_extent = start_extent.checked_add(count).ok_or("extent count overflows")?;
        let list = s.list("stripes").ok_or("a segment has no stripes")?;
        let n = s.uint("stripe_count").unwrap_or(1);
        if n == 0 || n as usize > MAX_LVM_STRIPES || list.len() as u64 != 2 * n || count % n != 0 {
            return Err(format!("a segment's stripes ({n}) do not match its list or its extents"));
        }
        let chunk =
            if n > 1 { s.uint("stripe_size").filter(|c| c.is_power_of_two()).ok_or("bad stripe_size")? } else { 0 };
        let per_stripe = count / n;
        let mut stripes = Vec::new();
        for pair in list.chunks(2) {
            let (Value::Str(pv), Value::Int(first)) = (&pair[0], &pair[1]) else {
                return Err("a stripe is not a PV name and an extent".into());
            };
            let i = pvs.iter().position(|p| &p.name == pv).ok_or(format!("stripe on unknown PV {:?}", truncate(pv)))?;
            let first = u64::try_from(*first).map_err(|_| "negative extent")?;
            if first.checked_add(per_stripe).is_none_or(|end| end > pvs[i].pe_count) {
                return Err(format!("a segment runs past the end of {} ({} extents)", pv, pvs[i].pe_count));
            }
            // Checked: pe_start and extent sizes come from the text.
            let sector = first
                .checked_mul(extent)
                .and_then(|s| s.checked_add(pvs[i].pe_start))
                .ok_or("extent offset overflows")?;
            stripes.push((i, sector));
        }
        let start = start_extent.checked_mul(extent).ok_or("extent offset overflows")?;
        let len = count.checked_mul(extent).ok_or("volume size overflows")?;
        out.push(Segment { start, len, chunk, stripes });
    }
    Ok(out)
}

/// The device-mapper table of `lv`: (start, length, target, parameters) lines, with `device(i)`
/// naming PV `i` of the group (a path or MAJ:MIN) and its size in sectors, or `None` if it is not
/// in the image.
pub fn dm_table(
    vg: &VolumeGroup,
    lv: &LogicalVolume,
    device: &dyn Fn(usize) -> Option<(String, u64)>,
) -> Result<Vec<(u64, u64, &'static str, String)>, String> {
    let segs = lv.segments.as_ref().map_err(|e| e.clone())?;
    let mut lines = Vec::new();
    for s in segs {
        let mut places = Vec::new();
        for &(i, sector) in &s.stripes {
            let pv = &vg.pvs[i];
            let (dev, size) = device(i).ok_or(format!("its PV {} ({}) is not in this image", pv.name, pv.uuid))?;
            // The PV's whole data area must lie on the device.
            let end = pv.pe_count.checked_mul(vg.extent_size).and_then(|n| n.checked_add(pv.pe_start));
            if end.is_none_or(|end| end > size) {
                return Err(format!("{} extents of {} run past the end of {dev}", pv.pe_count, pv.name));
            }
            places.push(format!("{dev} {sector}"));
        }
        if s.stripes.len() == 1 {
            lines.push((s.start, s.len, "linear", places.remove(0)));
        } else {
            lines.push((s.start, s.len, "striped", format!("{} {} {}", s.stripes.len(), s.chunk, places.join(" "))));
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VG: &str = r#"vg0 {
id = "Abc-1"
seqno = 2
extent_size = 8192
physical_volumes {
pv0 {
id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa"
pe_start = 2048
pe_count = 10
}
}
logical_volumes {
home {
status = ["READ", "WRITE", "VISIBLE"]
segment_count = 1
segment1 {
start_extent = 0
extent_count = 4
type = "striped"
stripe_count = 1
stripes = ["pv0", 1]
}
}
thin {
status = ["READ", "VISIBLE"]
segment1 { start_extent = 0
extent_count = 1
type = "thin" }
}
hidden_rimage { status = ["READ"] }
}
}
contents = "Text Format Volume Group"
"#;

    #[test]
    fn maps_linear_volumes_and_lists_the_rest() {
        let vg = parse_vg(VG.as_bytes()).unwrap();
        assert_eq!((vg.name.as_str(), vg.extent_size, vg.pvs[0].uuid.len()), ("vg0", 8192, 32));
        assert_eq!(vg.lvs.len(), 2, "the hidden volume is left out");
        let home = &vg.lvs[0];
        assert_eq!(home.sectors, 4 * 8192);
        let table = dm_table(&vg, home, &|_| Some(("/dev/x".into(), 2048 + 10 * 8192))).unwrap();
        assert_eq!(table, vec![(0, 4 * 8192, "linear", format!("/dev/x {}", 2048 + 8192))]);
        assert!(dm_table(&vg, home, &|_| Some(("/dev/x".into(), 4096))).unwrap_err().contains("past the end"));
        assert!(vg.lvs[1].segments.as_ref().unwrap_err().contains("\"thin\""));
    }

    #[test]
    fn crc_matches_lvm2() {
        // From Python's zlib: ~zlib.crc32(data, 0xf597a6cf ^ 0xffffffff), the same CRC with
        // lvm2's seed and no final inversion.
        assert_eq!(crc(b"LVM2 checksum"), 0x1702807a);
    }
}
