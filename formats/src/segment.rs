//! Sealed-segment layout: independently readable zstd blocks, a block index, and a footer
//! that makes the segment self-describing (leaf range, the tree's edge just before the
//! segment, the tree head at its last leaf, a signed checkpoint of that head) and a BLAKE3
//! digest of the whole file. All integers big-endian. See FORMATS.md for byte offsets.
//!
//! This module builds and parses bytes only; the engine decides where they live.

use crate::batch::Entries;
use crate::hash::{Hash, TreeHash};
use crate::record::RECORD_BYTES_MAX;
use crate::{be_u32, be_u64};

pub const HEADER_MAGIC: &[u8; 8] = b"AUDLSEG1";
pub const TRAILER_MAGIC: &[u8; 8] = b"AUDLSEGX";
/// The version a segment whose blocks are zstd frames of their raw block carries.
pub const FORMAT_VERSION: u8 = 1;
/// The version a segment whose blocks are in the columnar form carries (§3.3).
pub const FORMAT_VERSION_COLUMNAR: u8 = 2;
pub const HEADER_BYTES: usize = 32;
pub const BLOCK_ENTRY_BYTES: usize = 32;
pub const TRAILER_BYTES: usize = 56;
/// The digest covers every byte before it: the file less its last 40 bytes.
pub const DIGEST_COVERS_ALL_BUT: usize = 40;
pub const FOOTER_BYTES_MAX: usize = 64 << 20;
pub const BLOCK_RAW_BYTES_MAX: usize = 16 << 20;
pub const NOTE_BYTES_MAX: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("file of {0} bytes is too short for a sealed segment")]
    TooShort(u64),
    #[error("bad {0} magic")]
    Magic(&'static str),
    #[error("unknown format version {0}")]
    Version(u8),
    #[error("unknown tree hash code {0}")]
    TreeHash(u8),
    #[error("footer: {0}")]
    Footer(String),
    #[error("header and footer disagree: {0}")]
    Mismatch(String),
    #[error("block {block}: {reason}")]
    Block { block: u32, reason: String },
}

/// How a segment's blocks are coded: its format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BlockCodec {
    /// Version 1: each block one zstd frame of its raw block.
    Zstd,
    /// Version 2: each block the raw block's lanes, [`crate::columnar`].
    #[default]
    Columnar,
}

impl BlockCodec {
    pub fn version(self) -> u8 {
        match self {
            BlockCodec::Zstd => FORMAT_VERSION,
            BlockCodec::Columnar => FORMAT_VERSION_COLUMNAR,
        }
    }

    pub fn from_version(v: u8) -> Option<BlockCodec> {
        match v {
            FORMAT_VERSION => Some(BlockCodec::Zstd),
            FORMAT_VERSION_COLUMNAR => Some(BlockCodec::Columnar),
            _ => None,
        }
    }

    /// The configuration name: `zstd` or `columnar`.
    pub fn name(self) -> &'static str {
        match self {
            BlockCodec::Zstd => "zstd",
            BlockCodec::Columnar => "columnar",
        }
    }

    pub fn from_name(name: &str) -> Option<BlockCodec> {
        [BlockCodec::Zstd, BlockCodec::Columnar]
            .into_iter()
            .find(|c| c.name() == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub codec: BlockCodec,
    pub tree_hash: TreeHash,
    pub first_index: u64,
    pub count: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut h = [0u8; HEADER_BYTES];
        h[0..8].copy_from_slice(HEADER_MAGIC);
        h[8] = self.codec.version();
        h[9] = self.tree_hash.code();
        h[16..24].copy_from_slice(&self.first_index.to_be_bytes());
        h[24..32].copy_from_slice(&self.count.to_be_bytes());
        h
    }

    pub fn decode(b: &[u8]) -> Result<SegmentHeader, SegmentError> {
        if b.len() < HEADER_BYTES {
            return Err(SegmentError::TooShort(b.len() as u64));
        }
        if &b[0..8] != HEADER_MAGIC {
            return Err(SegmentError::Magic("header"));
        }
        let codec = BlockCodec::from_version(b[8]).ok_or(SegmentError::Version(b[8]))?;
        let tree_hash = TreeHash::from_code(b[9]).ok_or(SegmentError::TreeHash(b[9]))?;
        let (first_index, count) = (be_u64(&b[16..24]), be_u64(&b[24..32]));
        if count == 0 || first_index.checked_add(count).is_none() {
            return Err(SegmentError::Mismatch(format!(
                "leaf range {first_index} + {count} is empty or overflows"
            )));
        }
        Ok(SegmentHeader {
            codec,
            tree_hash,
            first_index,
            count,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockEntry {
    pub first_index: u64,
    pub offset: u64,
    pub compressed_bytes: u32,
    pub raw_bytes: u32,
    pub record_count: u32,
    /// CRC-32C of the compressed bytes, so one block can be checked without the whole file.
    pub crc32c: u32,
    /// The segment's block codec (from its header; not stored in the entry).
    pub codec: BlockCodec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    pub blocks: Vec<BlockEntry>,
    /// The tree's right edge at `first_index`: the roots of its complete subtrees, largest
    /// (leftmost) first. With it and this segment's leaves, a verifier recomputes `root`.
    pub prior_edge: Vec<Hash>,
    /// The tree head at `first_index + count`.
    pub root: Hash,
    pub sealed_at_unix_ns: u64,
    /// The highest classification code of any event in the segment (retention follows it).
    pub max_classification: u8,
    /// A signed checkpoint note for (`first_index + count`, `root`), or empty.
    pub checkpoint_note: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub footer_offset: u64,
    pub footer_bytes: u32,
    pub digest: [u8; 32],
}

/// Builds a sealed segment as a stream of byte chunks for the caller to write, keeping the
/// running digest. Feed raw blocks (entry-framed records, as in a batch body) in order.
pub struct SegmentBuilder {
    header: SegmentHeader,
    digest: blake3::Hasher,
    offset: u64,
    next_index: u64,
    blocks: Vec<BlockEntry>,
    zstd_level: i32,
    /// One compression context for the whole segment, not one per block.
    compressor: Option<zstd::bulk::Compressor<'static>>,
}

impl SegmentBuilder {
    /// Returns the builder and the header bytes to write first.
    pub fn new(header: SegmentHeader, zstd_level: i32) -> (SegmentBuilder, [u8; HEADER_BYTES]) {
        let bytes = header.encode();
        let mut digest = blake3::Hasher::new();
        digest.update(&bytes);
        let b = SegmentBuilder {
            header,
            digest,
            offset: HEADER_BYTES as u64,
            next_index: header.first_index,
            blocks: Vec::new(),
            zstd_level,
            compressor: None,
        };
        (b, bytes)
    }

    /// Compresses one raw block of `record_count` entries; returns the bytes to write.
    pub fn add_block(&mut self, raw: &[u8], record_count: u32) -> std::io::Result<Vec<u8>> {
        assert!(record_count > 0 && raw.len() <= BLOCK_RAW_BYTES_MAX);
        let compressor = match &mut self.compressor {
            Some(c) => c,
            None => self
                .compressor
                .insert(zstd::bulk::Compressor::new(self.zstd_level)?),
        };
        let compressed = match self.header.codec {
            BlockCodec::Zstd => compressor.compress(raw)?,
            BlockCodec::Columnar => crate::columnar::encode(raw, compressor)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
        };
        self.blocks.push(BlockEntry {
            codec: self.header.codec,
            first_index: self.next_index,
            offset: self.offset,
            compressed_bytes: compressed.len() as u32,
            raw_bytes: raw.len() as u32,
            record_count,
            crc32c: crc32c::crc32c(&compressed),
        });
        self.next_index += record_count as u64;
        self.offset += compressed.len() as u64;
        self.digest.update(&compressed);
        Ok(compressed)
    }

    /// The footer and trailer bytes that end the file.
    pub fn finish(
        mut self,
        prior_edge: Vec<Hash>,
        root: Hash,
        sealed_at_unix_ns: u64,
        max_classification: u8,
        checkpoint_note: String,
    ) -> Vec<u8> {
        assert_eq!(
            self.next_index,
            self.header.first_index + self.header.count,
            "blocks do not cover the header's range"
        );
        assert_eq!(
            prior_edge.len(),
            self.header.first_index.count_ones() as usize,
            "prior edge size"
        );
        let footer = Footer {
            blocks: std::mem::take(&mut self.blocks),
            prior_edge,
            root,
            sealed_at_unix_ns,
            max_classification,
            checkpoint_note,
        };
        let mut out = encode_footer(&footer);
        let footer_bytes = out.len() as u32;
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&footer_bytes.to_be_bytes());
        out.extend_from_slice(&[0u8; 4]);
        self.digest.update(&out);
        let digest: [u8; 32] = self.digest.finalize().into();
        out.extend_from_slice(&digest);
        out.extend_from_slice(TRAILER_MAGIC);
        out
    }
}

fn encode_footer(f: &Footer) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        4 + f.blocks.len() * BLOCK_ENTRY_BYTES + 64 * 32 + 64 + f.checkpoint_note.len(),
    );
    out.extend_from_slice(&(f.blocks.len() as u32).to_be_bytes());
    for b in &f.blocks {
        out.extend_from_slice(&b.first_index.to_be_bytes());
        out.extend_from_slice(&b.offset.to_be_bytes());
        out.extend_from_slice(&b.compressed_bytes.to_be_bytes());
        out.extend_from_slice(&b.raw_bytes.to_be_bytes());
        out.extend_from_slice(&b.record_count.to_be_bytes());
        out.extend_from_slice(&b.crc32c.to_be_bytes());
    }
    out.push(f.prior_edge.len() as u8);
    for h in &f.prior_edge {
        out.extend_from_slice(h);
    }
    out.extend_from_slice(&f.root);
    out.extend_from_slice(&f.sealed_at_unix_ns.to_be_bytes());
    out.push(f.max_classification);
    out.extend_from_slice(&(f.checkpoint_note.len() as u32).to_be_bytes());
    out.extend_from_slice(f.checkpoint_note.as_bytes());
    out
}

pub fn decode_trailer(file_len: u64, tail: &[u8]) -> Result<Trailer, SegmentError> {
    if file_len < (HEADER_BYTES + TRAILER_BYTES) as u64 || tail.len() != TRAILER_BYTES {
        return Err(SegmentError::TooShort(file_len));
    }
    if &tail[48..56] != TRAILER_MAGIC {
        return Err(SegmentError::Magic("trailer"));
    }
    let t = Trailer {
        footer_offset: be_u64(&tail[0..8]),
        footer_bytes: be_u32(&tail[8..12]),
        digest: tail[16..48]
            .try_into()
            .map_err(|_| SegmentError::Magic("trailer"))?,
    };
    let footer_end = t.footer_offset.checked_add(t.footer_bytes as u64);
    if t.footer_bytes as usize > FOOTER_BYTES_MAX
        || t.footer_offset < HEADER_BYTES as u64
        || footer_end != Some(file_len - TRAILER_BYTES as u64)
    {
        return Err(SegmentError::Footer(format!(
            "footer at {} of {} bytes does not end where the trailer starts",
            t.footer_offset, t.footer_bytes
        )));
    }
    Ok(t)
}

/// Parses the footer and checks it against the header: block ranges contiguous and
/// covering exactly the header's leaves, offsets contiguous up to the footer.
pub fn decode_footer(
    header: &SegmentHeader,
    trailer: &Trailer,
    b: &[u8],
) -> Result<Footer, SegmentError> {
    let bad = |m: &str| SegmentError::Footer(m.to_string());
    let mut r = Reader { b, at: 0 };
    let block_count = r.u32().ok_or_else(|| bad("truncated block count"))? as usize;
    if block_count > b.len() / BLOCK_ENTRY_BYTES {
        return Err(bad("block count larger than the footer"));
    }
    let mut blocks = Vec::with_capacity(block_count);
    let (mut next_index, mut next_offset) = (header.first_index, HEADER_BYTES as u64);
    for i in 0..block_count {
        let e = BlockEntry {
            first_index: r.u64().ok_or_else(|| bad("truncated block index"))?,
            offset: r.u64().ok_or_else(|| bad("truncated block index"))?,
            compressed_bytes: r.u32().ok_or_else(|| bad("truncated block index"))?,
            raw_bytes: r.u32().ok_or_else(|| bad("truncated block index"))?,
            record_count: r.u32().ok_or_else(|| bad("truncated block index"))?,
            crc32c: r.u32().ok_or_else(|| bad("truncated block index"))?,
            codec: header.codec,
        };
        if e.first_index != next_index
            || e.offset != next_offset
            || e.record_count == 0
            || e.raw_bytes as usize > BLOCK_RAW_BYTES_MAX
        {
            return Err(SegmentError::Footer(format!(
                "block {i}: entry out of sequence"
            )));
        }
        let (Some(ni), Some(no)) = (
            next_index.checked_add(e.record_count as u64),
            next_offset.checked_add(e.compressed_bytes as u64),
        ) else {
            return Err(SegmentError::Footer(format!("block {i}: range overflows")));
        };
        next_index = ni;
        next_offset = no;
        blocks.push(e);
    }
    if next_index != header.first_index + header.count {
        return Err(SegmentError::Mismatch(format!(
            "blocks cover leaves to {next_index}, header says {}",
            header.first_index + header.count
        )));
    }
    if next_offset != trailer.footer_offset {
        return Err(bad("blocks do not end where the footer starts"));
    }
    let edge_count = r.u8().ok_or_else(|| bad("truncated edge"))? as usize;
    if edge_count != header.first_index.count_ones() as usize {
        return Err(bad("prior edge has the wrong number of hashes"));
    }
    let mut prior_edge = Vec::with_capacity(edge_count);
    for _ in 0..edge_count {
        prior_edge.push(r.hash().ok_or_else(|| bad("truncated edge"))?);
    }
    let root = r.hash().ok_or_else(|| bad("truncated root"))?;
    let sealed_at_unix_ns = r.u64().ok_or_else(|| bad("truncated seal time"))?;
    let max_classification = r.u8().ok_or_else(|| bad("truncated classification"))?;
    let note_len = r.u32().ok_or_else(|| bad("truncated note length"))? as usize;
    if note_len > NOTE_BYTES_MAX {
        return Err(bad("checkpoint note over 1 MiB"));
    }
    let note = r.take(note_len).ok_or_else(|| bad("truncated note"))?;
    let checkpoint_note = String::from_utf8(note.to_vec()).map_err(|_| bad("note is not UTF-8"))?;
    if r.at != b.len() {
        return Err(bad("stray bytes after the note"));
    }
    Ok(Footer {
        blocks,
        prior_edge,
        root,
        sealed_at_unix_ns,
        max_classification,
        checkpoint_note,
    })
}

/// Decodes one block of `codec` with a zstd context kept per thread: making one per block
/// was ~1% of the daemon's CPU while sealing (its allocation and set-up, for blocks of
/// ~1 MiB).
fn decompress(
    codec: BlockCodec,
    compressed: &[u8],
    capacity: usize,
    records_max: usize,
) -> Result<Vec<u8>, String> {
    thread_local! {
        static CONTEXT: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    CONTEXT.with(|c| {
        let mut c = c.borrow_mut();
        let d = match c.as_mut() {
            Some(d) => d,
            None => c.insert(zstd::bulk::Decompressor::new().map_err(|e| format!("zstd: {e}"))?),
        };
        match codec {
            BlockCodec::Zstd => d
                .decompress(compressed, capacity)
                .map_err(|e| format!("zstd: {e}")),
            BlockCodec::Columnar => {
                crate::columnar::decode_records(compressed, capacity, records_max, d)
                    .map_err(|e| e.to_string())
            }
        }
    })
}

/// Appends one record (encoded, as read from a batch) to a raw block under construction:
/// `record_bytes:u32 | record`, the framing of a batch body, read back by [`block_records`].
pub fn push_block_entry(raw: &mut Vec<u8>, record: &[u8]) {
    assert!(
        record.len() <= RECORD_BYTES_MAX,
        "a record over the limit reached a block"
    );
    raw.extend_from_slice(&(record.len() as u32).to_be_bytes());
    raw.extend_from_slice(record);
}

/// The records of a raw block, in order: the counterpart of [`push_block_entry`]. Yields
/// `(position, reason)` on a malformed entry and stops.
pub fn block_records(raw: &[u8]) -> Entries<'_> {
    Entries::new(raw)
}

/// Decompresses one block and checks it against its index entry: checksum, size, count.
/// Returns the raw block (entry-framed records).
pub fn decode_block(
    block: u32,
    entry: &BlockEntry,
    compressed: &[u8],
) -> Result<Vec<u8>, SegmentError> {
    decode_block_records(block, entry, compressed, entry.record_count)
}

/// The first `records` records of a block (all of them if it holds fewer), checked
/// against its index entry as far as they go: the checksum of the whole block, then the
/// count (and, for a whole block, the size). A columnar block decodes only that far; a zstd
/// block is decompressed whole and cut.
pub fn decode_block_records(
    block: u32,
    entry: &BlockEntry,
    compressed: &[u8],
    records: u32,
) -> Result<Vec<u8>, SegmentError> {
    let fail = |reason: String| SegmentError::Block { block, reason };
    if compressed.len() != entry.compressed_bytes as usize {
        return Err(fail("short read".into()));
    }
    let crc = crc32c::crc32c(compressed);
    if crc != entry.crc32c {
        return Err(fail(format!(
            "checksum mismatch (stored {:#010x}, computed {crc:#010x})",
            entry.crc32c
        )));
    }
    let whole = records >= entry.record_count;
    let wanted = records.min(entry.record_count);
    let mut raw = decompress(
        entry.codec,
        compressed,
        entry.raw_bytes as usize,
        wanted as usize,
    )
    .map_err(fail)?;
    if (entry.codec == BlockCodec::Zstd || whole) && raw.len() != entry.raw_bytes as usize {
        return Err(fail(format!(
            "{} raw bytes, index says {}",
            raw.len(),
            entry.raw_bytes
        )));
    }
    let (mut n, mut end) = (0u32, 0usize);
    for e in block_records(&raw) {
        if n == wanted && !whole {
            break;
        }
        let rec = e.map_err(|(p, r)| fail(format!("record {p}: {r}")))?;
        n += 1;
        end = rec.as_ptr() as usize - raw.as_ptr() as usize + rec.len();
    }
    if n != if whole { entry.record_count } else { wanted } {
        return Err(fail(format!(
            "{n} records, index says {}",
            entry.record_count
        )));
    }
    raw.truncate(end);
    Ok(raw)
}

/// The root of the tree at `first_index + leaves.len()` from the prior edge and the
/// segment's leaf hashes: what a verifier checks a lone segment's footer against.
pub fn root_from_edge(
    alg: TreeHash,
    first_index: u64,
    prior_edge: &[Hash],
    leaves: impl Iterator<Item = Hash>,
) -> Option<Hash> {
    if prior_edge.len() != first_index.count_ones() as usize {
        return None;
    }
    let mut edge = crate::tree::RightEdge::from_parts(alg, first_index, prior_edge);
    for leaf in leaves {
        edge.append(leaf, |_, _| {});
    }
    Some(edge.root())
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(be_u32)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(be_u64)
    }
    fn hash(&mut self) -> Option<Hash> {
        self.take(32).and_then(|b| b.try_into().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::push_entry;
    use crate::record::Record;
    use crate::tree::MemoryTree;

    /// The per-thread context carries nothing from one block to the next: a failed block
    /// (garbage, or larger than its stated size) leaves the following good ones readable.
    #[test]
    fn reused_decompression_context_survives_bad_blocks() {
        let good: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let packed = zstd::bulk::compress(&good, 3).expect("compress");
        for _ in 0..3 {
            assert!(
                decompress(BlockCodec::Zstd, b"not a zstd frame", 1 << 20, usize::MAX).is_err()
            );
            assert!(decompress(BlockCodec::Zstd, &packed, good.len() - 1, usize::MAX).is_err());
            assert_eq!(
                decompress(BlockCodec::Zstd, &packed, good.len(), usize::MAX).expect("good block"),
                good
            );
        }
    }

    /// Builds a segment of leaves [first, first+count) of a tree whose earlier leaves are
    /// also synthetic; returns the file bytes and the full tree.
    fn build(codec: BlockCodec, first: u64, count: u64, per_block: u64) -> (Vec<u8>, MemoryTree) {
        let alg = TreeHash::Sha256;
        let rec = |i: u64| {
            Record {
                received_at_unix_ns: i,
                submitter: (i % 2 == 1).then_some("auditlogd"),
                kind: crate::record::PayloadKind::Event,
                payload: format!("{{\"i\":{i}}}").as_bytes().to_vec().leak(),
            }
            .to_bytes()
        };
        let mut tree = MemoryTree::new(alg);
        for i in 0..first {
            tree.append_leaf_hash(alg.leaf(&rec(i)));
        }
        let prior = tree.edge.subtree_roots();
        let header = SegmentHeader {
            codec,
            tree_hash: alg,
            first_index: first,
            count,
        };
        let (mut b, head) = SegmentBuilder::new(header, 3);
        let mut file = head.to_vec();
        let mut raw = Vec::new();
        let mut n = 0u32;
        for i in first..first + count {
            let r = rec(i);
            tree.append_leaf_hash(alg.leaf(&r));
            push_entry(&mut raw, &Record::parse(&r).expect("record"));
            n += 1;
            if n as u64 == per_block || i + 1 == first + count {
                file.extend(b.add_block(&raw, n).expect("compress"));
                raw.clear();
                n = 0;
            }
        }
        file.extend(b.finish(prior, tree.root(), 42, 1, String::new()));
        (file, tree)
    }

    fn parse(file: &[u8]) -> Result<(SegmentHeader, Footer), SegmentError> {
        let header = SegmentHeader::decode(file)?;
        let trailer = decode_trailer(file.len() as u64, &file[file.len() - TRAILER_BYTES..])?;
        let digest: [u8; 32] = blake3::hash(&file[..file.len() - DIGEST_COVERS_ALL_BUT]).into();
        if digest != trailer.digest {
            return Err(SegmentError::Footer("digest".into()));
        }
        let f = &file[trailer.footer_offset as usize
            ..(trailer.footer_offset + trailer.footer_bytes as u64) as usize];
        Ok((header, decode_footer(&header, &trailer, f)?))
    }

    #[test]
    fn round_trip_and_root_from_prior_edge() {
        for (codec, first, count, per_block) in [
            (BlockCodec::Zstd, 0u64, 1u64, 1u64),
            (BlockCodec::Zstd, 0, 100, 7),
            (BlockCodec::Columnar, 0, 1, 1),
            (BlockCodec::Columnar, 0, 100, 7),
            (BlockCodec::Columnar, 13, 50, 50),
            (BlockCodec::Zstd, 1000, 333, 64),
            (BlockCodec::Columnar, 1000, 333, 64),
        ] {
            let (file, tree) = build(codec, first, count, per_block);
            let (h, footer) = parse(&file).expect("parses");
            assert_eq!(h.codec, codec);
            assert_eq!(file[8], codec.version());
            assert_eq!((h.first_index, h.count), (first, count));
            assert_eq!(footer.root, tree.root());
            let mut leaves = Vec::new();
            for (n, b) in footer.blocks.iter().enumerate() {
                let raw = decode_block(
                    n as u32,
                    b,
                    &file[b.offset as usize..(b.offset + b.compressed_bytes as u64) as usize],
                )
                .expect("block");
                leaves.extend(Entries::new(&raw).map(|r| TreeHash::Sha256.leaf(r.expect("rec"))));
                // Any prefix is the whole block's first records, byte for byte.
                let compressed =
                    &file[b.offset as usize..(b.offset + b.compressed_bytes as u64) as usize];
                let whole: Vec<&[u8]> = Entries::new(&raw).map(|r| r.expect("rec")).collect();
                for k in [0, 1, b.record_count / 2, b.record_count, b.record_count + 5] {
                    let part = decode_block_records(n as u32, b, compressed, k).expect("prefix");
                    let got: Vec<&[u8]> = Entries::new(&part).map(|r| r.expect("rec")).collect();
                    assert_eq!(
                        got,
                        whole[..(k.min(b.record_count)) as usize],
                        "{k} records"
                    );
                    let mut flipped = compressed.to_vec();
                    flipped[compressed.len() / 2] ^= 1;
                    assert!(decode_block_records(n as u32, b, &flipped, k).is_err());
                }
            }
            assert_eq!(leaves.len() as u64, count);
            let root = root_from_edge(
                TreeHash::Sha256,
                first,
                &footer.prior_edge,
                leaves.into_iter(),
            );
            assert_eq!(
                root,
                Some(tree.root()),
                "a lone segment reproduces the head at its last leaf"
            );
        }
    }

    #[test]
    fn overflowing_leaf_ranges_are_refused() {
        // Found by `cargo fuzz run segment`: first_index + count past u64 panicked.
        let h = SegmentHeader {
            codec: BlockCodec::Zstd,
            tree_hash: TreeHash::Sha256,
            first_index: u64::MAX - 1,
            count: 5,
        }
        .encode();
        assert!(matches!(
            SegmentHeader::decode(&h),
            Err(SegmentError::Mismatch(_))
        ));
        let mut b = crate::batch::encode_header(u64::MAX - 1, 5, 0, b"x").to_vec();
        b.push(b'x');
        assert!(crate::batch::decode_header(&b).is_err());
    }

    #[test]
    fn any_changed_byte_is_refused() {
        for codec in [BlockCodec::Zstd, BlockCodec::Columnar] {
            let (file, _) = build(codec, 5, 40, 9);
            for at in 0..file.len() {
                let mut t = file.clone();
                t[at] ^= 0x01;
                assert!(parse(&t).is_err(), "{codec:?}: flip at {at} not caught");
            }
            for cut in [1, 10, TRAILER_BYTES, file.len() / 2] {
                assert!(parse(&file[..file.len() - cut]).is_err());
            }
        }
    }
}
