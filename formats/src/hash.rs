//! Leaf and node hashing of RFC 9162 §2.1 with a per-log choice of hash function.

use sha2::{Digest, Sha256};

/// A tree hash. Both supported functions give 32 bytes.
pub type Hash = [u8; 32];

pub const HASH_BYTES: usize = 32;

/// The hash function a log's tree uses. Fixed at log creation and named in its metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum TreeHash {
    /// FIPS 180-4 SHA-256: the C2SP default and the one auditors' tools expect.
    #[default]
    Sha256,
    Blake3,
}

impl TreeHash {
    pub fn name(self) -> &'static str {
        match self {
            TreeHash::Sha256 => "sha256",
            TreeHash::Blake3 => "blake3",
        }
    }

    pub fn from_name(name: &str) -> Option<TreeHash> {
        match name {
            "sha256" | "sha-256" | "SHA-256" => Some(TreeHash::Sha256),
            "blake3" | "BLAKE3" => Some(TreeHash::Blake3),
            _ => None,
        }
    }

    /// The one-byte code stored in segment headers and footers.
    pub fn code(self) -> u8 {
        match self {
            TreeHash::Sha256 => 1,
            TreeHash::Blake3 => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<TreeHash> {
        match code {
            1 => Some(TreeHash::Sha256),
            2 => Some(TreeHash::Blake3),
            _ => None,
        }
    }

    /// `H(0x00 || record)`: the 0x00 prefix separates leaves from interior nodes, so no
    /// interior node can be passed off as a leaf (second-preimage resistance, RFC 9162 §2.1.1).
    #[inline]
    pub fn leaf(self, record: &[u8]) -> Hash {
        match self {
            TreeHash::Sha256 => {
                let mut h = Sha256::new();
                h.update([0x00]);
                h.update(record);
                h.finalize().into()
            }
            TreeHash::Blake3 => {
                let mut h = blake3::Hasher::new();
                h.update(&[0x00]);
                h.update(record);
                h.finalize().into()
            }
        }
    }

    /// `H(0x01 || left || right)`.
    #[inline]
    pub fn node(self, left: &Hash, right: &Hash) -> Hash {
        let mut buf = [0u8; 1 + 2 * HASH_BYTES];
        buf[0] = 0x01;
        buf[1..33].copy_from_slice(left);
        buf[33..65].copy_from_slice(right);
        match self {
            TreeHash::Sha256 => Sha256::digest(buf).into(),
            TreeHash::Blake3 => blake3::hash(&buf).into(),
        }
    }

    /// The root of the empty tree: the hash of the empty string (RFC 9162 §2.1.1).
    pub fn empty(self) -> Hash {
        match self {
            TreeHash::Sha256 => Sha256::digest([]).into(),
            TreeHash::Blake3 => blake3::hash(&[]).into(),
        }
    }
}

/// Lowercase hex, the API's encoding of hashes.
pub fn to_hex(hash: &Hash) -> String {
    let mut out = String::with_capacity(64);
    push_hex(&mut out, hash);
    out
}

/// Appends `hash` as 64 lowercase hex digits (`hex::encode` goes through a char iterator,
/// and proofs render ~24 hashes per answer straight into one buffer).
pub fn push_hex(out: &mut String, hash: &Hash) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(64);
    for b in hash {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

pub fn from_hex(text: &str) -> Option<Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written encoder against the `hex` crate, and back through `from_hex`.
    #[test]
    fn hex_round_trips_and_matches_the_hex_crate() {
        for seed in 0u8..=255 {
            let h: Hash = std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8 * 7));
            let text = to_hex(&h);
            assert_eq!(text, hex::encode(h));
            assert_eq!(from_hex(&text), Some(h));
            let mut out = String::from("x");
            push_hex(&mut out, &h);
            assert_eq!(out, format!("x{text}"));
        }
    }
}
