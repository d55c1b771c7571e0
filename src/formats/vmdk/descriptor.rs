//! The VMDK text descriptor: `key=value` header lines, extent lines
//! (`ACCESS SECTORS TYPE "FILE" [OFFSET]`) and the disk database (`ddb.* = "..."`).
//! A pure function on text, so it can be fuzzed on its own.

use crate::limits::MAX_EXTENTS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
    NoAccess,
}

impl Access {
    pub fn name(self) -> &'static str {
        match self {
            Access::ReadWrite => "RW",
            Access::ReadOnly => "RDONLY",
            Access::NoAccess => "NOACCESS",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtentType {
    /// Raw data in a file, from an offset (in sectors).
    Flat,
    /// Hosted sparse extent (KDMV) — qemu also accepts COWD here.
    Sparse,
    /// Reads as zeros, no file.
    Zero,
    /// Raw data on VMFS: the same as FLAT.
    Vmfs,
    /// VMFS sparse extent (COWD).
    VmfsSparse,
    /// VMFS6 space-efficient sparse extent.
    SeSparse,
    /// Anything else (VMFSRDM, VMFSRAW, ...), kept by name to refuse it clearly.
    Other(String),
}

impl ExtentType {
    fn parse(s: &str) -> ExtentType {
        match s.to_ascii_uppercase().as_str() {
            "FLAT" => ExtentType::Flat,
            "SPARSE" => ExtentType::Sparse,
            "ZERO" => ExtentType::Zero,
            "VMFS" => ExtentType::Vmfs,
            "VMFSSPARSE" => ExtentType::VmfsSparse,
            "SESPARSE" => ExtentType::SeSparse,
            _ => ExtentType::Other(s.to_string()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            ExtentType::Flat => "FLAT",
            ExtentType::Sparse => "SPARSE",
            ExtentType::Zero => "ZERO",
            ExtentType::Vmfs => "VMFS",
            ExtentType::VmfsSparse => "VMFSSPARSE",
            ExtentType::SeSparse => "SESPARSE",
            ExtentType::Other(s) => s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    pub access: Access,
    /// Size of the extent in 512-byte sectors.
    pub sectors: u64,
    pub kind: ExtentType,
    /// File name as written (ZERO extents have none).
    pub file: Option<String>,
    /// Start of the data in the file, in sectors (FLAT and VMFS lines).
    pub offset: u64,
    /// 1-based line number in the descriptor, for messages.
    pub line: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// Every `key=value` line in order (header and disk database), quotes removed.
    pub entries: Vec<(String, String)>,
    pub extents: Vec<ExtentLine>,
}

/// "No parent" as parentCID records it.
pub const NO_PARENT_CID: u32 = 0xffff_ffff;

impl Descriptor {
    /// The value of `key` (last one wins, keys compared without regard to case).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().rev().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }

    pub fn create_type(&self) -> Option<&str> {
        self.get("createType")
    }

    pub fn cid(&self) -> Option<u32> {
        self.get("CID").and_then(parse_hex_u32)
    }

    pub fn parent_cid(&self) -> Option<u32> {
        self.get("parentCID").and_then(parse_hex_u32)
    }

    /// The parent's file name for a snapshot (delta link), if any.
    pub fn parent_hint(&self) -> Option<&str> {
        self.get("parentFileNameHint").filter(|s| !s.is_empty())
    }
}

fn parse_hex_u32(s: &str) -> Option<u32> {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    u32::from_str_radix(s, 16).ok()
}

/// Parses descriptor text. Unknown lines are skipped, as VMware and qemu do; a line that starts
/// with an access mode but is not a valid extent line is an error naming the line.
pub fn parse_descriptor(text: &str) -> Result<Descriptor, String> {
    // An embedded descriptor is padded with NULs to its sector count.
    let text = text.split('\0').next().unwrap_or("");
    let mut d = Descriptor::default();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or("");
        let access = match first.to_ascii_uppercase().as_str() {
            "RW" => Some(Access::ReadWrite),
            "RDONLY" => Some(Access::ReadOnly),
            "NOACCESS" => Some(Access::NoAccess),
            _ => None,
        };
        if let Some(access) = access {
            if d.extents.len() >= MAX_EXTENTS {
                return Err(format!(
                    "the descriptor lists more than {MAX_EXTENTS} extents (line {}); the image is corrupt or hostile",
                    i + 1
                ));
            }
            let rest = line[first.len()..].trim_start();
            let extent = parse_extent(access, rest, i + 1).map_err(|e| format!("line {}: {e}: {line}", i + 1))?;
            d.extents.push(extent);
        } else if let Some((k, v)) = line.split_once('=') {
            d.entries.push((k.trim().to_string(), unquote(v.trim()).to_string()));
        }
    }
    Ok(d)
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v)
}

/// `SECTORS TYPE ["FILE" [OFFSET [more fields]]]`, after the access mode.
fn parse_extent(access: Access, rest: &str, line: usize) -> Result<ExtentLine, String> {
    let (sectors, rest) = next_token(rest).ok_or("invalid extent line (no size)")?;
    let sectors: u64 = sectors.parse().map_err(|_| format!("invalid extent size {sectors:?}"))?;
    let (kind, rest) = next_token(rest).ok_or("invalid extent line (no extent type)")?;
    let kind = ExtentType::parse(kind);
    let rest = rest.trim_start();
    let (file, rest) = if let Some(quoted) = rest.strip_prefix('"') {
        let end = quoted.find('"').ok_or("unterminated file name")?;
        (Some(quoted[..end].to_string()), &quoted[end + 1..])
    } else if let Some((tok, rest)) = next_token(rest) {
        (Some(tok.to_string()), rest)
    } else {
        (None, "")
    };
    let offset = match next_token(rest) {
        Some((tok, _)) => tok.parse().map_err(|_| format!("invalid extent offset {tok:?}"))?,
        None => 0,
    };
    if file.is_none() && kind != ExtentType::Zero {
        return Err(format!("a {} extent needs a file name", kind.name()));
    }
    Ok(ExtentLine { access, sectors, kind, file, offset, line })
}

fn next_token(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    Some((&s[..end], &s[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_vmware_descriptor() {
        let d = parse_descriptor(
            "# Disk DescriptorFile\nversion=1\nCID=f879aea6\nparentCID=ffffffff\ncreateType=\"vmfs\"\n\n\
             RW 20480 VMFS \"image t4-flat.vmdk\" 0\nRDONLY 8 ZERO\nRW 16 FLAT x.vmdk 4\n\
             ddb.adapterType = \"ide\"\r\n",
        )
        .unwrap();
        assert_eq!(d.create_type(), Some("vmfs"));
        assert_eq!(d.cid(), Some(0xf879aea6));
        assert_eq!(d.parent_cid(), Some(NO_PARENT_CID));
        assert_eq!(d.get("ddb.adapterType"), Some("ide"));
        assert_eq!(d.extents.len(), 3);
        assert_eq!(d.extents[0].file.as_deref(), Some("image t4-flat.vmdk"));
        assert_eq!(d.extents[0].kind, ExtentType::Vmfs);
        assert_eq!(d.extents[1].kind, ExtentType::Zero);
        assert_eq!(d.extents[1].access, Access::ReadOnly);
        assert_eq!(d.extents[2].offset, 4);
    }

    #[test]
    fn refuses_bad_extent_lines_and_too_many_extents() {
        let refusal = |t: &str| parse_descriptor(t).unwrap_err();
        assert_eq!(refusal("RW abc FLAT \"x\" 0"), "line 1: invalid extent size \"abc\": RW abc FLAT \"x\" 0");
        assert_eq!(refusal("# c\nRW 10 FLAT \"x"), "line 2: unterminated file name: RW 10 FLAT \"x");
        assert!(
            refusal("RW 10 SPARSE").starts_with("line 1: a SPARSE extent needs a file name"),
            "{}",
            refusal("RW 10 SPARSE")
        );
        assert!(refusal("RW 10 FLAT x.vmdk zz").starts_with("line 1: invalid extent offset \"zz\""));
        assert!(refusal("RW").starts_with("line 1: invalid extent line (no size)"));
        assert!(refusal("RW 1").starts_with("line 1: invalid extent line (no extent type)"));
        let many = "RW 1 ZERO\n".repeat(MAX_EXTENTS + 1);
        assert!(refusal(&many).starts_with("the descriptor lists more than 4096 extents (line 4097)"));
    }

    #[test]
    fn embedded_descriptor_padding_ends_the_text() {
        let d = parse_descriptor("CID=0000000a\nRW 8 ZERO\n\0\0RW 8 ZERO\n").unwrap();
        assert_eq!(d.cid(), Some(10));
        assert_eq!(d.extents.len(), 1);
    }

    #[test]
    fn never_panics_on_odd_text() {
        for t in [
            "",
            "\0\0",
            "RW",
            "RW 1",
            "=",
            "RW 1 FLAT \"\"",
            "CID=zz",
            "RW 99999999999999999999999 ZERO",
            "é=\"",
            "\"RW\"",
        ] {
            let _ = parse_descriptor(t);
        }
    }
}
