//! The columnar block codec of segment format 2 (FORMATS.md §3.3): a raw block
//! (entry-framed records) rewritten as lanes of like values, each group of lanes
//! zstd-compressed on its own. Lossless for any bytes: JSON is only recognised, never
//! parsed and re-serialised, so a record decodes to exactly the bytes its leaf hash covers.
//!
//! A record's header goes to fixed lanes (kind, receipt-time delta); its submitter, the
//! *template* of its JSON payload (the payload with every string value and number cut
//! out) and each cut-out value go to *streams*: one per kind of value, and one per
//! (object key, string or number) for JSON values. A stream codes a value as a reference
//! to an equal value earlier in the block, or as a *shape* (its text with runs of decimal
//! digits and of lower-case hex cut out, itself a reference or new) plus the digit runs as
//! varints and the hex runs as bytes. Random ids become their entropy, repeated strings a
//! byte, and zstd then sees each kind of data apart.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use crate::varint;

/// Streams a block may have; values of keys past it share one overflow stream.
pub const STREAMS_MAX: usize = 1024;
/// Values a stream remembers for references (the first this many distinct ones).
pub const DICT_ENTRIES_MAX: usize = 4096;
/// A stream that has remembered this many values stops remembering unless at least one
/// value in [`REMEMBER_HITS_PER`] was referenced: random ids are not looked up in vain.
pub const REMEMBER_TRIAL: usize = 256;
pub const REMEMBER_HITS_PER: usize = 16;

/// Whether a stream that remembers `n` values and was referenced `hits` times remembers its
/// next new value. Encoder and decoder both follow it.
fn remembers(n: usize, hits: usize) -> bool {
    n < DICT_ENTRIES_MAX && (n < REMEMBER_TRIAL || hits * REMEMBER_HITS_PER >= n)
}
/// Shapes a stream remembers for references.
pub const SHAPES_MAX: usize = 4096;
/// The largest decoded section (a block's lanes of one group).
pub const SECTION_BYTES_MAX: usize = 32 << 20;

const FIXED_LANES: usize = 3;
const STREAM_LANES: usize = 5;
const GROUPS: usize = 4;
/// Every named stream and the overflow stream.
const LANES_MAX: usize = FIXED_LANES + STREAM_LANES * (STREAMS_MAX + 1);

// Lanes: kind, time, opaque; then per stream: ref, shape ref, shapes, digits, hex.
const LANE_KIND: usize = 0;
const LANE_TIME: usize = 1;
const LANE_OPAQUE: usize = 2;
const L_REF: usize = 0;
const L_SHAPE_REF: usize = 1;
const L_SHAPES: usize = 2;
const L_DIGITS: usize = 3;
const L_HEX: usize = 4;

/// The section (group) each lane is stored in.
fn group_of(lane: usize) -> usize {
    match lane {
        LANE_KIND | LANE_TIME => 0,
        LANE_OPAQUE => 1,
        _ => match (lane - FIXED_LANES) % STREAM_LANES {
            L_REF | L_SHAPE_REF => 0,
            L_SHAPES => 1,
            L_DIGITS => 2,
            _ => 3,
        },
    }
}

// Record kinds (the kind lane): 0 stored whole, else the record version.
const KIND_OPAQUE: u8 = 0;

// Template bytes.
const T_STRING: u8 = 0;
const T_NUMBER: u8 = 1;
const T_ESCAPE: u8 = 2;
const T_KEY: u8 = 3;
// Shape bytes.
const S_DIGITS: u8 = 0;
const S_HEX: u8 = 1;
const S_ESCAPE: u8 = 2;
const DIGIT_RUN_MAX: usize = 19;
const HEX_RUN_BYTES_MIN: usize = 4;
const HEX_RUN_BYTES_MAX: usize = 255;

/// What a stream holds: its tag and, for JSON values, the object key.
const TAG_SUBMITTER: u8 = 0;
const TAG_TEMPLATE: u8 = 1;
const TAG_MESSAGE: u8 = 2;
const TAG_STRING: u8 = 3;
const TAG_NUMBER: u8 = 4;
const TAG_OVERFLOW: u8 = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("columnar block: {0}")]
pub struct ColumnarError(pub String);

fn bad<T>(what: impl Into<String>) -> Result<T, ColumnarError> {
    Err(ColumnarError(what.into()))
}

// ---------------------------------------------------------------- shapes (pure helpers)

fn is_hex_lower(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// Splits `v` into its shape (appended to `shape`), digit runs and hex runs.
fn split_value(v: &[u8], shape: &mut Vec<u8>, digits: &mut Vec<u8>, hex: &mut Vec<u8>) {
    let mut i = 0;
    while i < v.len() {
        let c = v[i];
        if is_hex_lower(c) {
            let mut j = i;
            while j < v.len() && j - i < 2 * HEX_RUN_BYTES_MAX && is_hex_lower(v[j]) {
                j += 1;
            }
            let run = (j - i) & !1;
            if run >= 2 * HEX_RUN_BYTES_MIN && v[i..i + run].iter().any(|b| b.is_ascii_lowercase())
            {
                shape.extend_from_slice(&[S_HEX, (run / 2) as u8]);
                for pair in v[i..i + run].chunks_exact(2) {
                    hex.push(hex_nibble(pair[0]) << 4 | hex_nibble(pair[1]));
                }
                i += run;
                continue;
            }
        }
        if c.is_ascii_digit() {
            let mut j = i;
            let mut n = 0u64;
            while j < v.len() && j - i < DIGIT_RUN_MAX && v[j].is_ascii_digit() {
                n = n * 10 + u64::from(v[j] - b'0');
                j += 1;
            }
            shape.extend_from_slice(&[S_DIGITS, (j - i) as u8]);
            varint::put(digits, n);
            i = j;
            continue;
        }
        if c <= S_ESCAPE {
            shape.push(S_ESCAPE);
        }
        shape.push(c);
        i += 1;
    }
}

fn hex_nibble(c: u8) -> u8 {
    if c.is_ascii_digit() {
        c - b'0'
    } else {
        c - b'a' + 10
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

// ---------------------------------------------------------------- encoder

struct EncStream<'a> {
    dict: HashMap<&'a [u8], u32>,
    /// References written.
    hits: usize,
    shapes: HashMap<Vec<u8>, u32>,
    lanes: [Vec<u8>; STREAM_LANES],
}

impl<'a> EncStream<'a> {
    fn new() -> Self {
        EncStream {
            dict: HashMap::new(),
            hits: 0,
            shapes: HashMap::new(),
            lanes: Default::default(),
        }
    }

    fn put(&mut self, v: &'a [u8], scratch: &mut Vec<u8>) {
        let n = self.dict.len();
        if !remembers(n, self.hits) {
            // A stream of (nearly) unique values stops being looked up at all.
            return self.put_new(v, scratch);
        }
        match self.dict.entry(v) {
            Entry::Occupied(o) => {
                self.hits += 1;
                varint::put(&mut self.lanes[L_REF], u64::from(*o.get()) + 1);
            }
            Entry::Vacant(e) => {
                e.insert(n as u32);
                self.put_new(v, scratch);
            }
        }
    }

    /// Writes `v` as a new value (reference 0): its shape and runs.
    fn put_new(&mut self, v: &[u8], scratch: &mut Vec<u8>) {
        self.lanes[L_REF].push(0);
        scratch.clear();
        let [_, shape_ref, shapes, digits, hex] = &mut self.lanes;
        split_value(v, scratch, digits, hex);
        match self.shapes.get(scratch.as_slice()) {
            Some(&r) => varint::put(shape_ref, u64::from(r) + 1),
            None => {
                shape_ref.push(0);
                varint::put(shapes, scratch.len() as u64);
                shapes.extend_from_slice(scratch);
                if self.shapes.len() < SHAPES_MAX {
                    let n = self.shapes.len() as u32;
                    self.shapes.insert(scratch.clone(), n);
                }
            }
        }
    }
}

/// A template seen in the block: its entry in the template stream's dictionary (none once
/// that is full) and the streams of its holes.
struct Template {
    entry: Option<u32>,
    holes: Vec<usize>,
}

struct Encoder<'a> {
    fixed: [Vec<u8>; FIXED_LANES],
    streams: Vec<EncStream<'a>>,
    ids: HashMap<(u8, &'a [u8]), usize>,
    fixed_ids: [Option<usize>; 3],
    /// The template stream's dictionary (its own is unused), with each template's holes.
    templates: HashMap<Vec<u8>, Template>,
    /// Templates remembered (given an entry) and references to them: [`remembers`].
    templates_remembered: usize,
    template_hits: usize,
    template: Vec<u8>,
    holes: Vec<(u8, &'a [u8], &'a [u8])>,
    scratch: Vec<u8>,
    previous_time: u64,
}

impl<'a> Encoder<'a> {
    fn stream(&mut self, tag: u8, key: &'a [u8]) -> usize {
        let (id, new) = stream_number(&mut self.ids, tag, key);
        if new {
            self.streams.push(EncStream::new());
        }
        id
    }

    /// The submitter, template or message stream (`tag` 0, 1, 2), its number kept: one
    /// lookup a block, not one a record.
    fn fixed_stream(&mut self, tag: u8) -> usize {
        if let Some(id) = self.fixed_ids[usize::from(tag)] {
            return id;
        }
        let id = self.stream(tag, b"");
        self.fixed_ids[usize::from(tag)] = Some(id);
        id
    }

    fn put_fixed(&mut self, tag: u8, v: &'a [u8]) {
        let s = self.fixed_stream(tag);
        self.streams[s].put(v, &mut self.scratch);
    }

    fn record(&mut self, record: &'a [u8]) {
        let Some(parts) = Parts::of(record) else {
            self.fixed[LANE_KIND].push(KIND_OPAQUE);
            varint::put(&mut self.fixed[LANE_OPAQUE], record.len() as u64);
            self.fixed[LANE_OPAQUE].extend_from_slice(record);
            return;
        };
        self.fixed[LANE_KIND].push(parts.version);
        let delta = parts.received_at.wrapping_sub(self.previous_time) as i64;
        self.previous_time = parts.received_at;
        varint::put(&mut self.fixed[LANE_TIME], varint::zigzag(delta));
        if let Some(submitter) = parts.submitter {
            self.put_fixed(TAG_SUBMITTER, submitter);
        }
        if parts.version == 3 {
            self.put_fixed(TAG_MESSAGE, parts.body);
            return;
        }
        let ts = self.fixed_stream(TAG_TEMPLATE);
        let mut template = std::mem::take(&mut self.template);
        let mut holes = std::mem::take(&mut self.holes);
        template.clear();
        holes.clear();
        cut_template(parts.body, &mut template, &mut holes);
        match self.templates.get(template.as_slice()) {
            Some(t) => {
                match t.entry {
                    Some(e) => {
                        self.template_hits += 1;
                        varint::put(&mut self.streams[ts].lanes[L_REF], u64::from(e) + 1);
                    }
                    None => self.streams[ts].put_new(&template, &mut self.scratch),
                }
                for (&(_, _, v), &s) in holes.iter().zip(&t.holes) {
                    self.streams[s].put(v, &mut self.scratch);
                }
            }
            None => {
                self.streams[ts].put_new(&template, &mut self.scratch);
                let ids: Vec<usize> = holes.iter().map(|&(t, k, _)| self.stream(t, k)).collect();
                for (&(_, _, v), &s) in holes.iter().zip(&ids) {
                    self.streams[s].put(v, &mut self.scratch);
                }
                let n = self.templates_remembered;
                let entry = remembers(n, self.template_hits).then_some(n as u32);
                self.templates_remembered += usize::from(entry.is_some());
                self.templates
                    .insert(template.clone(), Template { entry, holes: ids });
            }
        }
        self.template = template;
        self.holes = holes;
    }
}

/// The number of stream `(tag, key)` and whether it is new: numbers are handed out in order
/// of first use, and names past [`STREAMS_MAX`] share the overflow stream. The one naming
/// rule of encoder and decoder (which call it in the same order).
fn stream_number<K>(ids: &mut HashMap<(u8, K), usize>, tag: u8, key: K) -> (usize, bool)
where
    K: std::hash::Hash + Eq + Default,
{
    // Each stream has exactly one name in the map, so the next number is its size.
    let next = ids.len();
    let key = match ids.entry((tag, key)) {
        Entry::Occupied(o) => return (*o.get(), false),
        Entry::Vacant(v) if next < STREAMS_MAX => {
            v.insert(next);
            return (next, true);
        }
        Entry::Vacant(_) => (TAG_OVERFLOW, K::default()),
    };
    match ids.entry(key) {
        Entry::Occupied(o) => (*o.get(), false),
        Entry::Vacant(v) => {
            v.insert(next);
            (next, true)
        }
    }
}

/// A record's parts when its version is known and its header whole.
struct Parts<'a> {
    version: u8,
    received_at: u64,
    submitter: Option<&'a [u8]>,
    body: &'a [u8],
}

impl<'a> Parts<'a> {
    fn of(r: &'a [u8]) -> Option<Parts<'a>> {
        let version = *r.first()?;
        let received_at = u64::from_be_bytes(r.get(1..9)?.try_into().ok()?);
        match version {
            1 => Some(Parts {
                version,
                received_at,
                submitter: None,
                body: &r[9..],
            }),
            2 | 3 => {
                let len = usize::from(u16::from_be_bytes(r.get(9..11)?.try_into().ok()?));
                Some(Parts {
                    version,
                    received_at,
                    submitter: Some(r.get(11..11 + len)?),
                    body: &r[11 + len..],
                })
            }
            _ => None,
        }
    }
}

/// Cuts a JSON-looking payload into its template and holes `(tag, key, value)`. Total:
/// any bytes give a template that [`fill_template`] turns back into exactly them.
fn cut_template<'a>(
    p: &'a [u8],
    template: &mut Vec<u8>,
    holes: &mut Vec<(u8, &'a [u8], &'a [u8])>,
) {
    let mut key: &[u8] = b"";
    let mut i = 0;
    while i < p.len() {
        let c = p[i];
        if c == b'"' {
            let mut j = i + 1;
            while j < p.len() && p[j] != b'"' {
                j += if p[j] == b'\\' { 2 } else { 1 };
            }
            if j < p.len() {
                let content = &p[i + 1..j];
                let after = p[j + 1..]
                    .iter()
                    .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
                if after.map(|a| p[j + 1 + a]) == Some(b':') {
                    template.extend_from_slice(&[b'"', T_KEY]);
                    varint::put(template, content.len() as u64);
                    template.extend_from_slice(content);
                    template.push(b'"');
                    key = content;
                } else {
                    template.extend_from_slice(&[b'"', T_STRING, b'"']);
                    holes.push((TAG_STRING, key, content));
                }
                i = j + 1;
                continue;
            }
        } else if c == b'-' || c.is_ascii_digit() {
            let mut j = i + 1;
            while j < p.len() && matches!(p[j], b'0'..=b'9' | b'+' | b'-' | b'.' | b'e' | b'E') {
                j += 1;
            }
            template.push(T_NUMBER);
            holes.push((TAG_NUMBER, key, &p[i..j]));
            i = j;
            continue;
        }
        if c <= T_KEY {
            template.push(T_ESCAPE);
        }
        template.push(c);
        i += 1;
    }
}

/// Encodes a raw block (entry-framed records) into the columnar form, its sections
/// compressed by `compressor`.
pub fn encode(
    raw: &[u8],
    compressor: &mut zstd::bulk::Compressor<'_>,
) -> Result<Vec<u8>, ColumnarError> {
    let mut e = Encoder {
        fixed: Default::default(),
        streams: Vec::new(),
        ids: HashMap::new(),
        fixed_ids: [None; 3],
        templates: HashMap::new(),
        templates_remembered: 0,
        template_hits: 0,
        template: Vec::new(),
        holes: Vec::new(),
        scratch: Vec::new(),
        previous_time: 0,
    };
    let mut rest = raw;
    while !rest.is_empty() {
        let Some(len) = rest.get(..4).map(crate::be_u32) else {
            return bad("stray bytes after the last entry");
        };
        let Some(record) = rest.get(4..4 + len as usize) else {
            return bad("an entry runs past the end");
        };
        e.record(record);
        rest = &rest[4 + len as usize..];
    }
    let mut lanes: Vec<&[u8]> = e.fixed.iter().map(Vec::as_slice).collect();
    for s in &e.streams {
        lanes.extend(s.lanes.iter().map(Vec::as_slice));
    }
    let mut sections: [Vec<u8>; GROUPS] = Default::default();
    varint::put(&mut sections[0], lanes.len() as u64);
    for l in &lanes {
        varint::put(&mut sections[0], l.len() as u64);
    }
    for (n, l) in lanes.iter().enumerate() {
        sections[group_of(n)].extend_from_slice(l);
    }
    let mut out = Vec::new();
    let mut bodies = Vec::with_capacity(GROUPS);
    for s in sections {
        let packed = compressor
            .compress(&s)
            .map_err(|e| ColumnarError(format!("zstd: {e}")))?;
        let raw_len = s.len();
        let (mode, body) = if packed.len() < raw_len {
            (1u8, packed)
        } else {
            (0u8, s)
        };
        out.push(mode);
        varint::put(&mut out, body.len() as u64);
        varint::put(&mut out, raw_len as u64);
        bodies.push(body);
    }
    for b in bodies {
        out.extend_from_slice(&b);
    }
    Ok(out)
}

// ---------------------------------------------------------------- decoder

/// A lane being read.
struct Lane<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Lane<'a> {
    #[inline(always)]
    fn varint(&mut self) -> Result<u64, ColumnarError> {
        if let Some(&b) = self.bytes.get(self.at) {
            if b < 0x80 {
                self.at += 1;
                return Ok(u64::from(b));
            }
        }
        self.varint_long()
    }

    #[cold]
    fn varint_long(&mut self) -> Result<u64, ColumnarError> {
        match varint::get(&self.bytes[self.at..], varint::U64_BYTES_MAX) {
            Some((v, used)) => {
                self.at += used;
                Ok(v)
            }
            None => bad("a lane's varint is cut or malformed"),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ColumnarError> {
        match self.bytes.get(self.at..self.at.saturating_add(n)) {
            Some(b) => {
                self.at += n;
                Ok(b)
            }
            None => bad("a lane ends early"),
        }
    }

    fn byte(&mut self) -> Result<u8, ColumnarError> {
        Ok(self.take(1)?[0])
    }
}

struct DecStream {
    /// Ranges of earlier values in the stream's target (the output or the template arena).
    dict: Vec<(usize, usize)>,
    /// References read.
    hits: usize,
    /// Ranges of shapes in the stream's shapes lane.
    shapes: Vec<(usize, usize)>,
    /// Index of the stream's first lane.
    lane: usize,
}

struct Decoder<'a> {
    lanes: Vec<Lane<'a>>,
    streams: Vec<DecStream>,
    ids: HashMap<(u8, Vec<u8>), usize>,
    /// Each remembered template's pieces, by its dictionary entry.
    templates: Vec<Vec<Piece>>,
    /// The submitter, template and message streams' ids, once they have them.
    fixed: [Option<usize>; 3],
    capacity: usize,
}

impl<'a> Decoder<'a> {
    fn stream(&mut self, tag: u8, key: &[u8]) -> Result<usize, ColumnarError> {
        let (id, new) = stream_number(&mut self.ids, tag, key.to_vec());
        if !new {
            return Ok(id);
        }
        let lane = FIXED_LANES + STREAM_LANES * id;
        if lane + STREAM_LANES > self.lanes.len() {
            return bad("a stream has no lanes");
        }
        self.streams.push(DecStream {
            dict: Vec::new(),
            hits: 0,
            shapes: Vec::new(),
            lane,
        });
        Ok(id)
    }

    /// The submitter, template or message stream (`tag` 0, 1, 2), its id kept.
    fn fixed_stream(&mut self, tag: u8) -> Result<usize, ColumnarError> {
        if let Some(id) = self.fixed[usize::from(tag)] {
            return Ok(id);
        }
        let id = self.stream(tag, b"")?;
        self.fixed[usize::from(tag)] = Some(id);
        Ok(id)
    }

    /// Decodes stream `s`'s next value onto `target`; returns its range there and its
    /// dictionary entry, if it has one. A reference to an earlier value is copied to the
    /// end of `target` only with `copy`; else its earlier range is returned.
    fn value(
        &mut self,
        s: usize,
        target: &mut Vec<u8>,
        copy: bool,
    ) -> Result<(usize, usize, Option<usize>), ColumnarError> {
        let lane = self.streams[s].lane;
        let r = self.lanes[lane + L_REF].varint()?;
        if r > 0 {
            let Some(&(start, len)) = self.streams[s].dict.get(r as usize - 1) else {
                return bad("a reference to no earlier value");
            };
            self.streams[s].hits += 1;
            if !copy {
                return Ok((start, len, Some(r as usize - 1)));
            }
            let at = target.len();
            target.extend_from_within(start..start + len);
            self.check_size(target)?;
            return Ok((at, len, Some(r as usize - 1)));
        }
        let sr = self.lanes[lane + L_SHAPE_REF].varint()?;
        let (shape_at, shape_len) = if sr == 0 {
            let shapes = &mut self.lanes[lane + L_SHAPES];
            let len = usize::try_from(shapes.varint()?).unwrap_or(usize::MAX);
            let at = shapes.at;
            shapes.take(len)?;
            if self.streams[s].shapes.len() < SHAPES_MAX {
                self.streams[s].shapes.push((at, len));
            }
            (at, len)
        } else {
            match self.streams[s].shapes.get(sr as usize - 1) {
                Some(&x) => x,
                None => return bad("a reference to no earlier shape"),
            }
        };
        let shapes: &'a [u8] = self.lanes[lane + L_SHAPES].bytes;
        let shape = &shapes[shape_at..shape_at + shape_len];
        let start = target.len();
        let mut i = 0;
        while i < shape.len() {
            let (c, arg) = (shape[i], shape.get(i + 1).copied());
            match (c, arg) {
                (S_DIGITS, Some(n)) if (1..=DIGIT_RUN_MAX as u8).contains(&n) => {
                    let v = self.lanes[lane + L_DIGITS].varint()?;
                    push_digits(target, v, usize::from(n))?;
                }
                (S_HEX, Some(n)) if usize::from(n) >= HEX_RUN_BYTES_MIN => {
                    let bytes = self.lanes[lane + L_HEX].take(usize::from(n))?;
                    target.extend(bytes.iter().flat_map(|&b| {
                        [
                            HEX_DIGITS[usize::from(b >> 4)],
                            HEX_DIGITS[usize::from(b & 15)],
                        ]
                    }));
                }
                (S_ESCAPE, Some(b)) => target.push(b),
                (S_DIGITS | S_HEX | S_ESCAPE, _) => return bad("a shape is malformed"),
                _ => {
                    let run = shape[i..].iter().position(|&b| b <= S_ESCAPE);
                    let end = run.map_or(shape.len(), |r| i + r);
                    target.extend_from_slice(&shape[i..end]);
                    i = end;
                    continue;
                }
            }
            i += 2;
            self.check_size(target)?;
        }
        self.check_size(target)?;
        let len = target.len() - start;
        let stream = &mut self.streams[s];
        if remembers(stream.dict.len(), stream.hits) {
            stream.dict.push((start, len));
            return Ok((start, len, Some(stream.dict.len() - 1)));
        }
        Ok((start, len, None))
    }

    /// Bounds the memory a block takes while decoding: the output (checked exactly per
    /// record) and the templates, which can be up to twice their payloads (escapes).
    fn check_size(&self, target: &[u8]) -> Result<(), ColumnarError> {
        if target.len() > 2 * self.capacity + 64 {
            return bad(format!("decodes to more than {} bytes", self.capacity));
        }
        Ok(())
    }
}

/// Decodes a block of the columnar form back to its raw block, which must come to
/// `capacity` bytes at most. Every lane must be read to its end.
pub fn decode(
    data: &[u8],
    capacity: usize,
    decompressor: &mut zstd::bulk::Decompressor<'_>,
) -> Result<Vec<u8>, ColumnarError> {
    decode_records(data, capacity, usize::MAX, decompressor)
}

/// The first `records_max` records of a block (all of them if it holds fewer), framed as
/// in the raw block: what a read of a few records near a block's start costs, instead of
/// the whole block (a record's values may refer to earlier ones, so never fewer). Only a
/// whole block is checked to use every lane to its end; a prefix is checked as far as it
/// goes (the block's CRC-32C covers the rest).
pub fn decode_records(
    data: &[u8],
    capacity: usize,
    records_max: usize,
    decompressor: &mut zstd::bulk::Decompressor<'_>,
) -> Result<Vec<u8>, ColumnarError> {
    let sections = sections(data, decompressor)?;
    let mut head = Lane {
        bytes: &sections[0],
        at: 0,
    };
    let count = usize::try_from(head.varint()?).unwrap_or(usize::MAX);
    if !(FIXED_LANES..=LANES_MAX).contains(&count)
        || !(count - FIXED_LANES).is_multiple_of(STREAM_LANES)
    {
        return bad(format!("{count} lanes"));
    }
    let mut lens = Vec::with_capacity(count);
    for _ in 0..count {
        lens.push(usize::try_from(head.varint()?).unwrap_or(usize::MAX));
    }
    let mut at = [head.at, 0, 0, 0];
    let mut lanes = Vec::with_capacity(count);
    for (n, &len) in lens.iter().enumerate() {
        let g = group_of(n);
        let Some(bytes) = sections[g].get(at[g]..at[g].saturating_add(len)) else {
            return bad("lanes run past their section");
        };
        at[g] += len;
        lanes.push(Lane { bytes, at: 0 });
    }
    if (0..GROUPS).any(|g| at[g] != sections[g].len()) {
        return bad("a section has bytes no lane holds");
    }
    let mut d = Decoder {
        lanes,
        streams: Vec::new(),
        ids: HashMap::new(),
        templates: Vec::new(),
        fixed: [None; 3],
        capacity,
    };
    let mut out = Vec::with_capacity(capacity);
    let mut arena = Vec::new();
    let mut previous_time = 0u64;
    let records = d.lanes[LANE_KIND].bytes.len();
    for _ in 0..records.min(records_max) {
        let kind = d.lanes[LANE_KIND].byte()?;
        let entry_at = out.len();
        out.extend_from_slice(&[0; 4]);
        if kind == KIND_OPAQUE {
            let len = usize::try_from(d.lanes[LANE_OPAQUE].varint()?).unwrap_or(usize::MAX);
            out.extend_from_slice(d.lanes[LANE_OPAQUE].take(len)?);
        } else {
            record(&mut d, kind, &mut previous_time, &mut out, &mut arena)?;
        }
        if out.len() > capacity {
            return bad(format!("decodes to more than {capacity} bytes"));
        }
        let len =
            u32::try_from(out.len() - entry_at - 4).or_else(|_| bad("a record over 4 GiB"))?;
        out[entry_at..entry_at + 4].copy_from_slice(&len.to_be_bytes());
    }
    if records_max >= records && d.lanes.iter().any(|l| l.at != l.bytes.len()) {
        return bad("a lane has bytes no record used");
    }
    Ok(out)
}

/// Decodes one record of `kind` (its version) onto `out`, after its entry prefix.
fn record(
    d: &mut Decoder<'_>,
    kind: u8,
    previous_time: &mut u64,
    out: &mut Vec<u8>,
    arena: &mut Vec<u8>,
) -> Result<(), ColumnarError> {
    if !(1..=3).contains(&kind) {
        return bad(format!("record kind {kind}"));
    }
    let delta = varint::unzigzag(d.lanes[LANE_TIME].varint()?);
    *previous_time = previous_time.wrapping_add(delta as u64);
    out.push(kind);
    out.extend_from_slice(&previous_time.to_be_bytes());
    if kind != 1 {
        let len_at = out.len();
        out.extend_from_slice(&[0, 0]);
        let s = d.fixed_stream(TAG_SUBMITTER)?;
        let (_, len, _) = d.value(s, out, true)?;
        let len = u16::try_from(len).or_else(|_| bad("a submitter over 65535 bytes"))?;
        out[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
    }
    if kind == 3 {
        let s = d.fixed_stream(TAG_MESSAGE)?;
        d.value(s, out, true)?;
        return Ok(());
    }
    let s = d.fixed_stream(TAG_TEMPLATE)?;
    let (t_at, t_len, entry) = d.value(s, arena, false)?;
    // A remembered template's pieces are kept by its dictionary entry.
    if let Some(e) = entry.filter(|&e| e < d.templates.len()) {
        let pieces = std::mem::take(&mut d.templates[e]);
        let filled = fill(d, &pieces, arena, out);
        d.templates[e] = pieces;
        return filled;
    }
    let pieces = pieces_of(d, &arena[t_at..t_at + t_len], t_at)?;
    fill(d, &pieces, arena, out)?;
    if entry == Some(d.templates.len()) {
        d.templates.push(pieces);
    }
    Ok(())
}

/// A piece of a template: bytes of the template arena, or the next value of a stream.
#[derive(Clone, Copy)]
enum Piece {
    Bytes(usize, usize),
    Value(usize),
}

/// Writes a template's pieces onto `out`.
fn fill(
    d: &mut Decoder<'_>,
    pieces: &[Piece],
    arena: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ColumnarError> {
    for &p in pieces {
        match p {
            Piece::Bytes(a, b) => out.extend_from_slice(&arena[a..b]),
            Piece::Value(s) => {
                d.value(s, out, true)?;
            }
        }
    }
    Ok(())
}

/// Reads a template (at `at` in the arena) into pieces, naming the stream of each hole in
/// order (a new name gets the next stream number, as the encoder numbered it).
fn pieces_of(d: &mut Decoder<'_>, t: &[u8], at: usize) -> Result<Vec<Piece>, ColumnarError> {
    let mut pieces = Vec::new();
    let mut key: &[u8] = b"";
    let mut lane = Lane { bytes: t, at: 0 };
    let bytes = |from: usize, to: usize| Piece::Bytes(at + from, at + to);
    while lane.at < t.len() {
        match lane.byte()? {
            c @ (T_STRING | T_NUMBER) => {
                let tag = if c == T_STRING {
                    TAG_STRING
                } else {
                    TAG_NUMBER
                };
                pieces.push(Piece::Value(d.stream(tag, key)?));
            }
            T_ESCAPE => {
                lane.byte()?;
                pieces.push(bytes(lane.at - 1, lane.at));
            }
            T_KEY => {
                let len = usize::try_from(lane.varint()?).unwrap_or(usize::MAX);
                let from = lane.at;
                key = lane.take(len)?;
                pieces.push(bytes(from, lane.at));
            }
            _ => {
                let from = lane.at - 1;
                let run = t[lane.at..].iter().position(|&b| b <= T_KEY);
                lane.at = run.map_or(t.len(), |r| lane.at + r);
                pieces.push(bytes(from, lane.at));
            }
        }
    }
    Ok(pieces)
}

/// Writes `v` as exactly `n` decimal digits, zero-padded.
fn push_digits(target: &mut Vec<u8>, mut v: u64, n: usize) -> Result<(), ColumnarError> {
    // Two digits a step from a table of "00".."99" (a division by 100 instead of two by 10).
    const PAIRS: [u8; 200] = {
        let mut t = [0u8; 200];
        let mut i = 0;
        while i < 100 {
            t[2 * i] = b'0' + (i / 10) as u8;
            t[2 * i + 1] = b'0' + (i % 10) as u8;
            i += 1;
        }
        t
    };
    let mut buf = [b'0'; DIGIT_RUN_MAX];
    let mut at = n;
    while at >= 2 && v > 0 {
        let pair = (v % 100) as usize;
        v /= 100;
        buf[at - 2..at].copy_from_slice(&PAIRS[2 * pair..2 * pair + 2]);
        at -= 2;
    }
    if at == 1 {
        buf[0] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    if v != 0 {
        return bad("a digit run longer than its shape says");
    }
    target.extend_from_slice(&buf[..n]);
    Ok(())
}

/// The four sections of `data`, decompressed.
fn sections(
    data: &[u8],
    decompressor: &mut zstd::bulk::Decompressor<'_>,
) -> Result<[Vec<u8>; GROUPS], ColumnarError> {
    let mut head = Lane { bytes: data, at: 0 };
    let mut sizes = [(0u8, 0usize, 0usize); GROUPS];
    for s in &mut sizes {
        let mode = head.byte()?;
        let stored = usize::try_from(head.varint()?).unwrap_or(usize::MAX);
        let raw = usize::try_from(head.varint()?).unwrap_or(usize::MAX);
        if raw > SECTION_BYTES_MAX || mode > 1 || (mode == 0 && stored != raw) {
            return bad(format!("section of mode {mode}, {stored} bytes for {raw}"));
        }
        *s = (mode, stored, raw);
    }
    let mut out: [Vec<u8>; GROUPS] = Default::default();
    for (o, &(mode, stored, raw)) in out.iter_mut().zip(&sizes) {
        let body = head.take(stored)?;
        *o = if mode == 0 {
            body.to_vec()
        } else {
            let v = decompressor
                .decompress(body, raw)
                .map_err(|e| ColumnarError(format!("zstd: {e}")))?;
            if v.len() != raw {
                return bad("a section decompresses to another size");
            }
            v
        };
    }
    if head.at != data.len() {
        return bad("bytes after the last section");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Digit runs come back with their leading zeros, at every length and parity; a
    /// value longer than its run is refused.
    #[test]
    fn digit_runs_known_answers() {
        for (v, n, want) in [
            (0u64, 1usize, "0"),
            (7, 3, "007"),
            (42, 2, "42"),
            (1234567, 7, "1234567"),
            (1234567, 10, "0001234567"),
            (
                9_999_999_999_999_999_999,
                DIGIT_RUN_MAX,
                "9999999999999999999",
            ),
            (5, DIGIT_RUN_MAX, "0000000000000000005"),
        ] {
            let mut out = b"x".to_vec();
            push_digits(&mut out, v, n).expect("fits");
            assert_eq!(out, [b"x", want.as_bytes()].concat(), "{v} in {n}");
        }
        for (v, n) in [(10u64, 1usize), (100, 2), (12345, 4), (u64::MAX, 19)] {
            assert!(push_digits(&mut Vec::new(), v, n).is_err(), "{v} in {n}");
        }
    }
    use crate::batch::push_entry;
    use crate::record::{PayloadKind, Record};
    use proptest::prelude::*;

    fn block(records: &[Vec<u8>]) -> Vec<u8> {
        let mut raw = Vec::new();
        for r in records {
            raw.extend_from_slice(&(r.len() as u32).to_be_bytes());
            raw.extend_from_slice(r);
        }
        raw
    }

    fn round_trip(raw: &[u8]) -> Vec<u8> {
        let mut c = zstd::bulk::Compressor::new(3).expect("compressor");
        let mut d = zstd::bulk::Decompressor::new().expect("decompressor");
        let coded = encode(raw, &mut c).expect("encode");
        let back = decode(&coded, raw.len(), &mut d).expect("decode");
        assert_eq!(back, raw, "a block decodes to exactly its bytes");
        if !raw.is_empty() {
            assert!(
                decode(&coded, raw.len() - 1, &mut d).is_err(),
                "capacity is held"
            );
        }
        coded
    }

    fn event(i: u64, submitter: Option<&str>, payload: &str) -> Vec<u8> {
        Record {
            received_at_unix_ns: 1_767_225_600_000_000_000 + i * 1000,
            submitter,
            kind: PayloadKind::Event,
            payload: payload.as_bytes(),
        }
        .to_bytes()
    }

    /// Awkward records of every kind: versions 1 to 3, an unknown version, cut headers,
    /// JSON with escapes, nesting, numbers of every form, marker bytes, unterminated
    /// strings, long hex and digit runs, upper-case hex, an empty payload.
    fn awkward() -> Vec<Vec<u8>> {
        let mut v = vec![
            event(0, Some("token:a"), r#"{"actor":"alice","n":1}"#),
            event(1, Some("token:a"), r#"{"actor":"alice","n":-1.5e+3}"#),
            event(2, None, r#"{"k":"a\"b\\","x":[1,2,{"y":"z"}],"e":{}}"#),
            event(3, Some("t"), "{\"\u{1}\":\"\u{0}\u{2}\u{3}\",\"\u{3}\":3}"),
            event(
                4,
                Some("t"),
                r#"{"id":"0123456789abcdef0123456789abcdef0123","up":"DEADBEEF00"}"#,
            ),
            event(
                5,
                Some("t"),
                r#"{"big":123456789012345678901234567890,"z":"007","h":"abcdef1"}"#,
            ),
            event(6, Some("t"), r#"{"open":"never closed"#),
            event(7, Some("t"), r#"{"bs":"ends with \"#),
            event(8, Some("t"), r#"  "lone" : - 12 ,"#),
            event(9, Some("t"), "x"),
            vec![0x09, 1, 2, 3],
            vec![0x02, 0, 0],
            vec![],
            vec![0x01, 0, 0, 0, 0, 0, 0, 0, 0],
            vec![
                0x03, 0, 0, 0, 0, 0, 0, 0, 5, 0, 3, b'a', b'b', b'c', b'<', b'1', b'>',
            ],
            vec![0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0],
        ];
        let hex: String = (0..600)
            .map(|i| b"0123456789abcdef"[i % 16] as char)
            .collect();
        v.push(event(10, Some("t"), &format!(r#"{{"long":"{hex}"}}"#)));
        v.push(event(
            11,
            Some("t"),
            &format!(r#"{{"digits":"{}"}}"#, "9".repeat(50)),
        ));
        v
    }

    #[test]
    fn awkward_records_round_trip() {
        let records = awkward();
        round_trip(&block(&records));
        for r in &records {
            round_trip(&block(std::slice::from_ref(r)));
        }
        round_trip(&[]);
    }

    #[test]
    fn templates_larger_than_their_payloads_round_trip() {
        // Escaped marker bytes make a template up to twice its payload.
        let records: Vec<Vec<u8>> = (0..50u8)
            .map(|i| {
                event(
                    u64::from(i),
                    Some("t"),
                    &"\u{0}\u{1}\u{2}\u{3}".repeat(20 + usize::from(i)),
                )
            })
            .collect();
        round_trip(&block(&records));
    }

    #[test]
    fn streams_past_the_limit_share_the_overflow_stream() {
        let records: Vec<Vec<u8>> = (0..STREAMS_MAX as u64 + 50)
            .map(|i| event(i, Some("t"), &format!(r#"{{"key{i}":"v{i}","n{i}":{i}}}"#)))
            .collect();
        round_trip(&block(&records));
    }

    #[test]
    fn dictionaries_past_the_limit_still_round_trip() {
        let records: Vec<Vec<u8>> = (0..DICT_ENTRIES_MAX as u64 * 2 + 7)
            .map(|i| {
                event(
                    i,
                    Some("t"),
                    &format!(r#"{{"a":"x{}","s{}":"y"}}"#, i % 5000, i % 4500),
                )
            })
            .collect();
        round_trip(&block(&records));
    }

    #[test]
    fn random_ids_cost_their_entropy() {
        // 1000 events whose only varying field is a 24-hex-digit id: 12 bytes of entropy.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let records: Vec<Vec<u8>> = (0..1000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let id = format!("{:016x}{:08x}", x, x >> 32);
                event(
                    i,
                    Some("token:p"),
                    &format!(r#"{{"request_id":"r-{id}","outcome":"success"}}"#),
                )
            })
            .collect();
        let coded = round_trip(&block(&records));
        let per = coded.len() as f64 / 1000.0;
        assert!(per < 14.5, "{per} bytes per event");
    }

    #[test]
    fn damaged_or_cut_blocks_fail_cleanly() {
        let raw = block(&awkward());
        let mut c = zstd::bulk::Compressor::new(3).expect("compressor");
        let mut d = zstd::bulk::Decompressor::new().expect("decompressor");
        let coded = encode(&raw, &mut c).expect("encode");
        for cut in 0..coded.len() {
            assert!(
                decode(&coded[..cut], raw.len(), &mut d).is_err(),
                "cut at {cut}"
            );
        }
        // A flipped byte may decode to other bytes (the block's CRC-32C catches it in a
        // segment); it must never panic or exceed the capacity.
        for at in 0..coded.len() {
            for bit in [0x01, 0x80] {
                let mut t = coded.clone();
                t[at] ^= bit;
                if let Ok(out) = decode(&t, raw.len(), &mut d) {
                    assert!(out.len() <= raw.len());
                }
            }
        }
    }

    fn arb_payload() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            Just(b"{".to_vec()),
            Just(b"}".to_vec()),
            Just(b"\"".to_vec()),
            Just(b":".to_vec()),
            Just(b",".to_vec()),
            Just(b"\\".to_vec()),
            Just(b" ".to_vec()),
            Just(b"\"actor\":".to_vec()),
            Just(b"\"id\":\"".to_vec()),
            "[a-f0-9]{0,40}".prop_map(String::into_bytes),
            "-?[0-9]{1,25}(\\.[0-9]+)?".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..6),
        ];
        prop::collection::vec(token, 0..30).prop_map(|t| t.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn any_records_round_trip(
            records in prop::collection::vec(
                (0u8..5, any::<u64>(), "[a-z:]{0,8}", arb_payload(), any::<bool>()),
                0..40,
            )
        ) {
            let records: Vec<Vec<u8>> = records
                .into_iter()
                .map(|(v, t, sub, p, raw)| {
                    if raw {
                        return p;
                    }
                    let mut r = vec![v];
                    r.extend_from_slice(&t.to_be_bytes());
                    if v >= 2 {
                        r.extend_from_slice(&(sub.len() as u16).to_be_bytes());
                        r.extend_from_slice(sub.as_bytes());
                    }
                    r.extend_from_slice(&p);
                    r
                })
                .collect();
            round_trip(&block(&records));
        }
    }

    #[test]
    fn batch_entries_are_the_raw_block() {
        // The sealer's raw block is a batch body: the codec reads it with the batch reader.
        let mut raw = Vec::new();
        let r = event(1, Some("x"), r#"{"a":1}"#);
        push_entry(&mut raw, &Record::parse(&r).expect("record"));
        assert_eq!(raw, block(&[r]));
        round_trip(&raw);
    }
}
