//! GUIDs as VHDX stores them: the Windows layout, whose first three fields are little-endian.

use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The GUID written `{d1-d2-d3-d4}` in text.
    pub const fn new(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5], d4[6], d4[7]])
    }

    /// The GUID in the first 16 bytes of `b`; the caller has checked the length.
    pub fn read(b: &[u8]) -> Guid {
        let mut g = [0u8; 16];
        g.copy_from_slice(&b[..16]);
        Guid(g)
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    /// Parses `{XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX}` (braces optional, any case).
    pub fn parse(text: &str) -> Option<Guid> {
        let t = text.trim().trim_matches(|c| c == '{' || c == '}' || c == '\0');
        let parts: Vec<&str> = t.split('-').collect();
        let lens = [8, 4, 4, 4, 12];
        if parts.len() != 5 || parts.iter().zip(lens).any(|(p, l)| p.len() != l || !p.is_ascii()) {
            return None;
        }
        let d1 = u32::from_str_radix(parts[0], 16).ok()?;
        let d2 = u16::from_str_radix(parts[1], 16).ok()?;
        let d3 = u16::from_str_radix(parts[2], 16).ok()?;
        let tail = format!("{}{}", parts[3], parts[4]);
        let mut d4 = [0u8; 8];
        for (i, b) in d4.iter_mut().enumerate() {
            *b = u8::from_str_radix(&tail[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Guid::new(d1, d2, d3, d4))
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.0;
        let d1 = u32::from_le_bytes([g[0], g[1], g[2], g[3]]);
        let d2 = u16::from_le_bytes([g[4], g[5]]);
        let d3 = u16::from_le_bytes([g[6], g[7]]);
        write!(f, "{{{d1:08X}-{d2:04X}-{d3:04X}-{:02X}{:02X}-", g[8], g[9])?;
        for b in &g[10..] {
            write!(f, "{b:02X}")?;
        }
        write!(f, "}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let g = Guid::new(0x2DC27766, 0xF623, 0x4200, [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08]);
        assert_eq!(g.0[..4], [0x66, 0x77, 0xC2, 0x2D]);
        assert_eq!(g.to_string(), "{2DC27766-F623-4200-9D64-115E9BFD4A08}");
        assert_eq!(Guid::parse("{2dc27766-f623-4200-9d64-115e9bfd4a08}"), Some(g));
        assert_eq!(Guid::parse("2DC27766-F623-4200-9D64-115E9BFD4A08"), Some(g));
        assert_eq!(Guid::parse("{2DC27766-F623-4200-9D64-115E9BFD4A0}"), None);
        assert_eq!(Guid::parse("{2DC27766-F623-4200-9D64-115E9BFD4A0é}"), None);
    }
}
