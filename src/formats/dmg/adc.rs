//! Apple Data Compression (ADC), an LZ77 variant with three kinds of opcode byte:
//! - 1xxxxxxx: a literal run of (x + 1) bytes follows;
//! - 01xxxxxx, then two bytes: copy (x + 4) bytes from (the two bytes, big-endian) + 1 back;
//! - 00xxxxyy, then one byte: copy (xxxx + 3) bytes from (yy:byte) + 1 back.
//!
//! Copies may overlap their own output (a distance shorter than the length repeats a pattern).

/// Decompresses `input` into `out`; returns the bytes produced, at most `out.len()` (the caller
/// gives one byte of room past the expected size to see over-long output).
pub fn decompress(input: &[u8], out: &mut [u8]) -> Result<usize, String> {
    let (mut i, mut o) = (0usize, 0usize);
    while i < input.len() && o < out.len() {
        let op = input[i];
        if op & 0x80 != 0 {
            let n = (op & 0x7f) as usize + 1;
            let lit = input.get(i + 1..i + 1 + n).ok_or("a literal run goes past the end of the input")?;
            let n = n.min(out.len() - o);
            out[o..o + n].copy_from_slice(&lit[..n]);
            i += 1 + lit.len();
            o += n;
            continue;
        }
        let (len, dist, size) = if op & 0x40 != 0 {
            let b = input.get(i + 1..i + 3).ok_or("a copy code goes past the end of the input")?;
            ((op & 0x3f) as usize + 4, u16::from_be_bytes([b[0], b[1]]) as usize + 1, 3)
        } else {
            let b = *input.get(i + 1).ok_or("a copy code goes past the end of the input")?;
            (((op >> 2) & 0x0f) as usize + 3, (((op & 0x03) as usize) << 8 | b as usize) + 1, 2)
        };
        if dist > o {
            return Err(format!("a copy reaches {dist} bytes back, before the start of the output ({o} bytes)"));
        }
        // Byte by byte: an overlapping copy reads what it has just written.
        for _ in 0..len.min(out.len() - o) {
            out[o] = out[o - dist];
            o += 1;
        }
        i += size;
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_both_copy_kinds() {
        // "abc", then a 2-byte copy of 5 from 3 back, then a 3-byte copy of 4 from 8 back.
        let input = [0x82, b'a', b'b', b'c', (5 - 3) << 2, 2, 0x40, 0, 7];
        let mut out = [0u8; 13];
        assert_eq!(decompress(&input, &mut out), Ok(12));
        assert_eq!(&out[..12], b"abcabcababca");
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        let mut out = [0u8; 16];
        assert!(decompress(&[0x85, 1, 2], &mut out).is_err()); // literal past the end
        assert!(decompress(&[0x80, 1, 0x00, 5], &mut out).is_err()); // copy before the start
        assert!(decompress(&[0x40, 0], &mut out).is_err()); // truncated code
                                                            // Output is capped at the buffer.
        assert_eq!(decompress(&[0x80, 7, 0x3c, 0], &mut out), Ok(16));
    }
}
