//! Minimal unsigned LEB128, the one varint of the formats (the leaf-hash index's key deltas,
//! the columnar block codec's lanes): seven bits a byte, low group first, the top bit set on
//! every byte but the last, and no trailing zero group (one value, one encoding).

/// Bytes of the longest `u64`.
pub const U64_BYTES_MAX: usize = 10;

/// Appends `v` in minimal LEB128.
#[inline]
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// `(value, bytes used)` of the varint at the start of `b`, at most `bytes_max` bytes long;
/// `None` if it is cut, longer, not minimal, or over `u64`.
#[inline]
pub fn get(b: &[u8], bytes_max: usize) -> Option<(u64, usize)> {
    let mut v = 0u64;
    let mut used = 0;
    loop {
        let byte = *b.get(used)?;
        let group = u64::from(byte & 0x7f);
        if used == U64_BYTES_MAX - 1 && group > 1 {
            return None;
        }
        v |= group << (7 * used);
        used += 1;
        if byte & 0x80 == 0 {
            // Minimal: no trailing zero group (a lone zero is the value 0).
            if byte == 0 && used > 1 {
                return None;
            }
            return Some((v, used));
        }
        if used == bytes_max.min(U64_BYTES_MAX) {
            return None;
        }
    }
}

/// `v` zigzag-mapped so that small magnitudes of either sign are small.
#[inline]
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_answers_and_refusals() {
        let mut b = Vec::new();
        put(&mut b, 0x0102_0304);
        assert_eq!(b, [0x84, 0x86, 0x88, 0x08]);
        assert_eq!(get(&b, 10), Some((0x0102_0304, 4)));
        assert_eq!(get(&b, 3), None, "longer than allowed");
        assert_eq!(get(&b[..3], 10), None, "cut");
        assert_eq!(get(&[0x80, 0x00], 10), None, "not minimal");
        assert_eq!(get(&[0x00], 10), Some((0, 1)));
        let mut max = Vec::new();
        put(&mut max, u64::MAX);
        assert_eq!(max.len(), U64_BYTES_MAX);
        assert_eq!(get(&max, 10), Some((u64::MAX, 10)));
        let mut over = max.clone();
        over[9] = 0x02;
        assert_eq!(get(&over, 10), None, "over u64");
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        assert_eq!(zigzag(i64::MIN), u64::MAX);
    }

    proptest! {
        #[test]
        fn round_trips(v in any::<u64>(), s in any::<i64>()) {
            let mut b = Vec::new();
            put(&mut b, v);
            prop_assert_eq!(get(&b, 10), Some((v, b.len())));
            prop_assert_eq!(unzigzag(zigzag(s)), s);
        }
    }
}
