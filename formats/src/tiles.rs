//! C2SP tlog-tiles resources (FORMATS.md §5.8): the paths `tile/<L>/<N>[.p/<W>]` and
//! `tile/entries/<N>[.p/<W>]`, what part of the tree each one covers, and the entry bundle
//! encoding. Pure: the server parses a request path here, the replicator names the tiles it
//! ships here, and a client reads bundles here, so there is one grammar.
//!
//! A path has exactly one spelling: `<L>` and `<W>` without leading zeros, `<N>` in 3-digit
//! groups with no leading `x000` group. Anything else is refused, so a cache never holds two
//! copies of one tile under different names.

/// Hashes in a full tile, and entries in a full bundle: tiles have height 8.
pub const TILE_WIDTH: u32 = 256;
/// Bytes of a full hash tile.
pub const TILE_BYTES: usize = TILE_WIDTH as usize * 32;
/// The largest tile level a path may name (the C2SP grammar); levels from 8 up name
/// subtrees of 2^64 leaves or more, which no log of `u64` size has.
pub const LEVEL_MAX: u8 = 63;
/// The largest entry of a bundle: its length is a big-endian `u16`.
pub const ENTRY_BYTES_MAX: usize = u16::MAX as usize;

/// What a tile path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TileKind {
    /// Hashes of tree level `8 * level` (`tile/<L>/…`).
    Hashes { level: u8 },
    /// The records themselves (`tile/entries/…`), 256 to a full bundle.
    Entries,
}

/// One tlog-tiles resource: tile `n` of its kind, `width` hashes or entries wide (256 for a
/// full tile, 1 to 255 for a partial one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tile {
    pub kind: TileKind,
    pub n: u64,
    pub width: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TilePathError {
    #[error("tile path {0:?} does not start with tile/")]
    Prefix(String),
    #[error("tile level {0:?}: expected entries or 0 to 63 without leading zeros")]
    Level(String),
    #[error("tile index {0:?}: expected 3-digit groups, all but the last starting with x, no leading x000")]
    Index(String),
    #[error("partial width {0:?}: expected 1 to 255 without leading zeros")]
    Width(String),
}

impl Tile {
    /// A full tile.
    pub fn full(kind: TileKind, n: u64) -> Tile {
        Tile {
            kind,
            n,
            width: TILE_WIDTH,
        }
    }

    pub fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }

    /// Parses `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]` (no leading `/`).
    pub fn parse(path: &str) -> Result<Tile, TilePathError> {
        let rest = path
            .strip_prefix("tile/")
            .ok_or_else(|| TilePathError::Prefix(path.to_string()))?;
        let (level, rest) = rest
            .split_once('/')
            .ok_or_else(|| TilePathError::Level(rest.to_string()))?;
        let kind = match level {
            "entries" => TileKind::Entries,
            l => TileKind::Hashes {
                level: decimal(l, u64::from(LEVEL_MAX))
                    .and_then(|v| u8::try_from(v).ok())
                    .ok_or_else(|| TilePathError::Level(l.to_string()))?,
            },
        };
        let (index, width) = match rest.split_once(".p/") {
            None => (rest, TILE_WIDTH),
            Some((index, w)) => {
                let width = decimal(w, u64::from(TILE_WIDTH) - 1)
                    .filter(|&w| w > 0)
                    .ok_or_else(|| TilePathError::Width(w.to_string()))?;
                (index, width as u32)
            }
        };
        let n = parse_index(index).ok_or_else(|| TilePathError::Index(index.to_string()))?;
        Ok(Tile { kind, n, width })
    }

    /// The path, without a leading `/`: `tile/0/x001/x234/067`, `tile/entries/000.p/7`.
    pub fn path(&self) -> String {
        let mut out = String::from("tile/");
        match self.kind {
            TileKind::Hashes { level } => out.push_str(&level.to_string()),
            TileKind::Entries => out.push_str("entries"),
        }
        push_index(&mut out, self.n);
        if !self.is_full() {
            out.push_str(&format!(".p/{}", self.width));
        }
        out
    }

    /// Tree level of the hashes: `8 * L` (0 for an entry bundle, whose entries hash to the
    /// level-0 tile's leaves).
    pub fn tree_level(&self) -> u32 {
        match self.kind {
            TileKind::Hashes { level } => 8 * u32::from(level),
            TileKind::Entries => 0,
        }
    }

    /// The first node of `tree_level` in this tile: `n * 256`; `None` past `u64`.
    pub fn first_node(&self) -> Option<u64> {
        self.n.checked_mul(u64::from(TILE_WIDTH))
    }

    /// The smallest tree that holds every hash of this tile, as complete subtrees:
    /// `(n * 256 + width) * 256^L`. `None` when no tree of `u64` size does.
    pub fn tree_size_needed(&self) -> Option<u64> {
        let end = self.first_node()?.checked_add(u64::from(self.width))?;
        let shift = self.tree_level();
        if shift >= 64 {
            return None;
        }
        let size = end.checked_shl(shift)?;
        (size >> shift == end).then_some(size)
    }

    /// The partial tiles (and bundles) of a tree of `size`, for each kind: level L's width is
    /// `floor(size / 256^L) mod 256`, and a width of 0 is no tile.
    pub fn partial(kind: TileKind, size: u64) -> Option<Tile> {
        let level = Tile::full(kind, 0).tree_level();
        let nodes = size.checked_shr(level).unwrap_or(0);
        let width = (nodes % u64::from(TILE_WIDTH)) as u32;
        (width > 0).then_some(Tile {
            kind,
            n: nodes / u64::from(TILE_WIDTH),
            width,
        })
    }
}

/// A decimal in `0..=max` without leading zeros (`"0"` itself is fine).
fn decimal(s: &str, max: u64) -> Option<u64> {
    let canonical = !s.is_empty()
        && s.len() <= 20
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    let v: u64 = s.parse().ok().filter(|_| canonical)?;
    (v <= max).then_some(v)
}

/// `x001/x234/067` -> 1234067: 3-digit groups, all but the last prefixed with `x`, the first
/// group not `x000` (one spelling per index), within `u64`.
fn parse_index(s: &str) -> Option<u64> {
    let groups: Vec<&str> = s.split('/').collect();
    let (last, upper) = groups.split_last()?;
    if upper.first().is_some_and(|g| *g == "x000") {
        return None;
    }
    let mut n: u64 = 0;
    for (i, g) in groups.iter().enumerate() {
        let digits = if i == upper.len() {
            Some(*last)
        } else {
            g.strip_prefix('x')
        }?;
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let v: u64 = digits.parse().ok()?;
        n = n.checked_mul(1000)?.checked_add(v)?;
    }
    Some(n)
}

/// Appends `/x001/x234/067` for 1234067 (`/000` for 0).
fn push_index(out: &mut String, n: u64) {
    let mut groups = Vec::with_capacity(7);
    let mut v = n;
    loop {
        groups.push(v % 1000);
        v /= 1000;
        if v == 0 {
            break;
        }
    }
    for (i, g) in groups.iter().enumerate().rev() {
        let x = if i == 0 { "" } else { "x" };
        out.push_str(&format!("/{x}{g:03}"));
    }
}

/// An entry longer than a bundle can frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("entry of {0} bytes is over the 65535-byte tlog-tiles entry limit")]
pub struct EntryTooLarge(pub usize);

/// Appends one entry to a bundle: its length as a big-endian `u16`, then its bytes.
pub fn push_entry(bundle: &mut Vec<u8>, entry: &[u8]) -> Result<(), EntryTooLarge> {
    let len = u16::try_from(entry.len()).map_err(|_| EntryTooLarge(entry.len()))?;
    bundle.extend_from_slice(&len.to_be_bytes());
    bundle.extend_from_slice(entry);
    Ok(())
}

/// A bundle that does not split into whole entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("entry bundle: entry {entry} at byte {offset} runs past the end ({len} bytes)")]
pub struct BundleError {
    pub entry: usize,
    pub offset: usize,
    pub len: usize,
}

/// The entries of a bundle, in order; an error when the bytes end inside an entry.
pub fn bundle_entries(bundle: &[u8]) -> BundleEntries<'_> {
    BundleEntries {
        bundle,
        offset: 0,
        entry: 0,
    }
}

pub struct BundleEntries<'a> {
    bundle: &'a [u8],
    offset: usize,
    entry: usize,
}

impl<'a> Iterator for BundleEntries<'a> {
    type Item = Result<&'a [u8], BundleError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.bundle[self.offset..];
        if rest.is_empty() {
            return None;
        }
        let err = BundleError {
            entry: self.entry,
            offset: self.offset,
            len: self.bundle.len(),
        };
        let entry = match rest {
            [a, b, body @ ..] => body.get(..usize::from(u16::from_be_bytes([*a, *b]))),
            _ => None,
        };
        let Some(entry) = entry else {
            // Stop after the error: the rest cannot be framed.
            self.offset = self.bundle.len();
            return Some(Err(err));
        };
        self.offset += 2 + entry.len();
        self.entry += 1;
        Some(Ok(entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(level: u8, n: u64, width: u32) -> Tile {
        Tile {
            kind: TileKind::Hashes { level },
            n,
            width,
        }
    }

    #[test]
    fn paths_follow_the_c2sp_examples() {
        assert_eq!(hashes(0, 1234067, 256).path(), "tile/0/x001/x234/067");
        assert_eq!(hashes(0, 0, 256).path(), "tile/0/000");
        assert_eq!(hashes(1, 999, 17).path(), "tile/1/999.p/17");
        assert_eq!(hashes(63, 1000, 256).path(), "tile/63/x001/000");
        let bundle = Tile {
            kind: TileKind::Entries,
            n: 5,
            width: 7,
        };
        assert_eq!(bundle.path(), "tile/entries/005.p/7");
        for t in [
            hashes(0, 1234067, 256),
            hashes(2, u64::MAX, 255),
            hashes(5, 1000, 1),
            bundle,
            Tile::full(TileKind::Entries, 999_999),
        ] {
            assert_eq!(Tile::parse(&t.path()), Ok(t), "{}", t.path());
        }
    }

    #[test]
    fn non_canonical_or_malformed_paths_are_refused() {
        let bad = [
            "",
            "tile",
            "tile/",
            "tiles/0/000",
            "/tile/0/000",
            "tile/0",
            "tile/0/",
            "tile/00/000",
            "tile/64/000",
            "tile/-1/000",
            "tile/data/000",
            "tile/0/0",
            "tile/0/0000",
            "tile/0/x000/001",
            "tile/0/001/002",
            "tile/0/x001",
            "tile/0/y001/002",
            "tile/0/x01/002",
            "tile/0/+01",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/07",
            "tile/0/000.p/",
            "tile/0/000.p",
            "tile/0/000.p/1/2",
            "tile/entries/000.p/x",
            "tile/0/x018/x446/x744/x073/x709/x551/616", // u64::MAX + 1
            "tile/0/000/",
        ];
        for p in bad {
            assert!(Tile::parse(p).is_err(), "{p:?} was accepted");
        }
        assert_eq!(
            Tile::parse("tile/0/x018/x446/x744/x073/x709/x551/615").map(|t| t.n),
            Ok(u64::MAX)
        );
    }

    /// The C2SP example: a tree of 70,000 has 273 full level-0 tiles, a partial one of
    /// 112, one full level-1 tile, a partial one of 17 and a partial level-2 tile of 1.
    #[test]
    fn partial_tiles_of_a_tree() {
        let kind = |level| TileKind::Hashes { level };
        assert_eq!(Tile::partial(kind(0), 70_000), Some(hashes(0, 273, 112)));
        assert_eq!(Tile::partial(kind(1), 70_000), Some(hashes(1, 1, 17)));
        assert_eq!(Tile::partial(kind(2), 70_000), Some(hashes(2, 0, 1)));
        assert_eq!(Tile::partial(kind(3), 70_000), None);
        assert_eq!(Tile::partial(kind(0), 256), None);
        assert_eq!(Tile::partial(kind(1), 256), Some(hashes(1, 0, 1)));
        assert_eq!(Tile::partial(kind(9), u64::MAX), None);
        for level in 0..3 {
            let t = Tile::partial(kind(level), 70_000).expect("partial");
            assert!(t.tree_size_needed().expect("fits") <= 70_000);
        }
    }

    #[test]
    fn tree_size_needed_is_exact_and_checked() {
        assert_eq!(hashes(0, 0, 1).tree_size_needed(), Some(1));
        assert_eq!(hashes(0, 1, 256).tree_size_needed(), Some(512));
        assert_eq!(hashes(1, 0, 17).tree_size_needed(), Some(17 * 256));
        assert_eq!(hashes(2, 1, 256).tree_size_needed(), Some(2 << 24));
        assert_eq!(hashes(7, 0, 255).tree_size_needed(), Some(255 << 56));
        assert_eq!(hashes(7, 0, 256).tree_size_needed(), None);
        assert_eq!(hashes(8, 0, 1).tree_size_needed(), None);
        assert_eq!(hashes(63, 0, 1).tree_size_needed(), None);
        assert_eq!(hashes(0, u64::MAX, 256).tree_size_needed(), None);
        assert_eq!(hashes(1, 1 << 48, 1).tree_size_needed(), None);
    }

    #[test]
    fn bundles_round_trip_and_refuse_what_does_not_fit() {
        let entries: [&[u8]; 4] = [b"a", b"", &[7u8; 300], &[1u8; ENTRY_BYTES_MAX]];
        let mut bundle = Vec::new();
        for e in entries {
            push_entry(&mut bundle, e).expect("fits");
        }
        assert_eq!(&bundle[..3], &[0, 1, b'a']);
        let back: Vec<&[u8]> = bundle_entries(&bundle).map(|e| e.expect("whole")).collect();
        assert_eq!(back, entries);
        assert_eq!(
            push_entry(&mut bundle, &[0u8; ENTRY_BYTES_MAX + 1]),
            Err(EntryTooLarge(ENTRY_BYTES_MAX + 1))
        );
        // Cut inside the last entry, or inside a length: an error, then nothing more.
        for cut in [bundle.len() - 1, 1, 4] {
            let mut it = bundle_entries(&bundle[..cut]);
            let errs = it.by_ref().filter(|e| e.is_err()).count();
            assert_eq!(errs, 1, "cut at {cut}");
            assert!(it.next().is_none());
        }
    }
}
