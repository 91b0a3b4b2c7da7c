//! Zig-zag LEB128 variable-length integers, as used by Kafka records.

/// Why a varint could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The input ended before the last byte of the varint.
    Truncated,
    /// The varint has more bytes than its type allows.
    Overflow,
}

/// Encoded size of a zig-zag `i64` (1 to 10 bytes).
#[inline]
pub fn size_i64(v: i64) -> usize {
    let z = zigzag64(v);
    // 7 bits per byte; 0 still takes one byte.
    let bits = 64 - (z | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Encoded size of a zig-zag `i32` (1 to 5 bytes).
#[inline]
pub fn size_i32(v: i32) -> usize {
    size_i64(v as i64)
}

#[inline]
fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Appends a zig-zag varint `i64` to `out`.
#[inline]
pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    let mut z = zigzag64(v);
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Appends a zig-zag varint `i32` to `out`.
#[inline]
pub fn put_i32(out: &mut Vec<u8>, v: i32) {
    put_i64(out, v as i64)
}

/// Decodes a zig-zag varint of at most `max_bytes` bytes; returns the value and its size.
#[inline]
fn get(buf: &[u8], max_bytes: usize) -> Result<(i64, usize), VarintError> {
    let mut z: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(max_bytes) {
        z |= ((b & 0x7f) as u64) << (7 * i);
        if b < 0x80 {
            let v = ((z >> 1) as i64) ^ -((z & 1) as i64);
            return Ok((v, i + 1));
        }
    }
    if buf.len() < max_bytes {
        Err(VarintError::Truncated)
    } else {
        Err(VarintError::Overflow)
    }
}

/// Decodes a zig-zag varint `i64`; returns the value and the number of bytes read.
#[inline]
pub fn get_i64(buf: &[u8]) -> Result<(i64, usize), VarintError> {
    get(buf, 10)
}

/// Decodes a zig-zag varint `i32`; returns the value and the number of bytes read.
#[inline]
pub fn get_i32(buf: &[u8]) -> Result<(i32, usize), VarintError> {
    let (v, n) = get(buf, 5)?;
    i32::try_from(v)
        .map(|v| (v, n))
        .map_err(|_| VarintError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        // Values from Kafka's ByteUtilsTest.
        for (v, bytes) in [
            (0i64, vec![0x00]),
            (-1, vec![0x01]),
            (1, vec![0x02]),
            (63, vec![0x7e]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
            (i32::MAX as i64, vec![0xfe, 0xff, 0xff, 0xff, 0x0f]),
        ] {
            let mut out = Vec::new();
            put_i64(&mut out, v);
            assert_eq!(out, bytes, "encoding {v}");
            assert_eq!(size_i64(v), bytes.len());
            assert_eq!(get_i64(&out), Ok((v, bytes.len())));
        }
    }

    #[test]
    fn rejects_truncated_and_overlong() {
        assert_eq!(get_i64(&[0x80]), Err(VarintError::Truncated));
        assert_eq!(get_i32(&[0xff; 5]), Err(VarintError::Overflow));
        assert_eq!(get_i64(&[0xff; 11]), Err(VarintError::Overflow));
        // Five bytes that decode past i32's range.
        assert_eq!(
            get_i32(&[0xfe, 0xff, 0xff, 0xff, 0x7f]),
            Err(VarintError::Overflow)
        );
    }

    proptest! {
        #[test]
        fn round_trip(v in any::<i64>()) {
            let mut out = Vec::new();
            put_i64(&mut out, v);
            prop_assert_eq!(out.len(), size_i64(v));
            prop_assert_eq!(get_i64(&out), Ok((v, out.len())));
        }
    }
}
