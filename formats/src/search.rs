//! Search by field: which fields of an event are searchable, the index terms an event
//! gives, and whether an event matches a filter. The one place that reads an event's
//! fields for search: the index builder and every re-check go through [`EventFields`], so
//! an index answer and a brute-force scan agree by construction.
//!
//! A term is a 64-bit hash of (field, value) (FNV-1a, FORMATS.md §5.7): the index keeps
//! hashes, not values, and every candidate is re-checked against the record, so a
//! collision costs a read, never a wrong answer. The fields whose values are nearly unique
//! (`SearchField::bucketed`: resource, session and request ids) are folded further: the
//! top `bucket_bits` of the hash pick one of `2^bucket_bits` buckets per field, and the
//! bucket is the term. A term table entry then serves many values instead of one (the
//! index's bytes per event stay small), at the price of re-checking the bucket's other
//! values' blocks.

use std::borrow::Cow;

use serde::Deserialize;

/// The fields an index is kept for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SearchField {
    Actor,
    EventType,
    Action,
    Outcome,
    Resource,
    Classification,
    SessionId,
    RequestId,
    SourceIp,
}

impl SearchField {
    pub const ALL: [SearchField; 9] = [
        SearchField::Actor,
        SearchField::EventType,
        SearchField::Action,
        SearchField::Outcome,
        SearchField::Resource,
        SearchField::Classification,
        SearchField::SessionId,
        SearchField::RequestId,
        SearchField::SourceIp,
    ];

    /// The field's name in events and in queries.
    pub fn name(self) -> &'static str {
        match self {
            SearchField::Actor => "actor",
            SearchField::EventType => "event_type",
            SearchField::Action => "action",
            SearchField::Outcome => "outcome",
            SearchField::Resource => "resource",
            SearchField::Classification => "classification",
            SearchField::SessionId => "session_id",
            SearchField::RequestId => "request_id",
            SearchField::SourceIp => "source_ip",
        }
    }

    pub fn parse(name: &str) -> Option<SearchField> {
        SearchField::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether the field's terms are buckets of values rather than values: the fields
    /// whose values are nearly unique per event (never changes: terms are on disk).
    pub fn bucketed(self) -> bool {
        matches!(
            self,
            SearchField::Resource | SearchField::SessionId | SearchField::RequestId
        )
    }

    /// The byte that starts the field's terms (never changes: terms are on disk).
    fn tag(self) -> u8 {
        match self {
            SearchField::Actor => 1,
            SearchField::EventType => 2,
            SearchField::Action => 3,
            SearchField::Outcome => 4,
            SearchField::Resource => 5,
            SearchField::Classification => 6,
            SearchField::SessionId => 7,
            SearchField::RequestId => 8,
            SearchField::SourceIp => 9,
        }
    }
}

/// The tag of a resource prefix's term.
const RESOURCE_PREFIX_TAG: u8 = 0x85;
/// Set in the tag of a bucket's term (`tag | BUCKET_TAG`, then the bucket number).
const BUCKET_TAG: u8 = 0x40;
/// Resource prefixes indexed per event: the value cut after each of its first separators.
pub const RESOURCE_PREFIX_LEVELS_MAX: usize = 4;
/// Where a resource is cut into indexed prefixes (just after the separator).
const RESOURCE_SEPARATORS: [u8; 2] = [b'/', b':'];

/// FNV-1a, 64-bit, of the tag byte then the value's bytes.
fn fnv1a(tag: u8, value: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = (OFFSET ^ u64::from(tag)).wrapping_mul(PRIME);
    for &b in value {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    h
}

/// MurmurHash3's 64-bit finalizer (`fmix64`).
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The term of `field` = `value` in an index of `bucket_bits` (at most 32): the value's
/// hash, or for a bucketed field, the hash of the field's bucket that the hash's top
/// `bucket_bits` bits pick (bucket 0 when 0).
pub fn term(field: SearchField, value: &str, bucket_bits: u32) -> u64 {
    assert!(bucket_bits <= 32, "bucket_bits");
    let h = fnv1a(field.tag(), value.as_bytes());
    if !field.bucketed() {
        return h;
    }
    // FNV-1a's top bits mix poorly over short values that differ in their last bytes
    // (`r-1`, `r-2`): MurmurHash3's 64-bit finalizer spreads them first.
    let bucket = fmix64(h).checked_shr(64 - bucket_bits).unwrap_or(0) as u32;
    fnv1a(field.tag() | BUCKET_TAG, &bucket.to_be_bytes())
}

/// The term of "resource starts with `prefix`", for a prefix that ends just after a
/// separator (one [`resource_prefixes`] gives).
pub fn resource_prefix_term(prefix: &str) -> u64 {
    fnv1a(RESOURCE_PREFIX_TAG, prefix.as_bytes())
}

/// The prefixes of a resource that are indexed: cut just after each of its first
/// `RESOURCE_PREFIX_LEVELS_MAX` separators (`/` or `:`), shortest first. A prefix query
/// is answered from the longest of these that the asked prefix starts with.
pub fn resource_prefixes(resource: &str) -> impl Iterator<Item = &str> {
    resource
        .bytes()
        .enumerate()
        .filter(|(_, b)| RESOURCE_SEPARATORS.contains(b))
        .take(RESOURCE_PREFIX_LEVELS_MAX)
        .map(move |(i, _)| &resource[..=i])
}

/// The searchable fields of one event, borrowed from its payload where it has no escapes.
#[derive(Debug, Default, Deserialize)]
pub struct EventFields<'a> {
    #[serde(borrow, default)]
    actor: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    event_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    action: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    outcome: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    resource: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    classification: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    session_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    request_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    source_ip: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
}

impl<'a> EventFields<'a> {
    /// Reads an event payload. A payload that is not a JSON object with string values for
    /// these fields (a raw-mode log's own schema) has no searchable fields: it matches only
    /// a filter without field conditions.
    pub fn of(payload: &'a [u8]) -> EventFields<'a> {
        serde_json::from_slice(payload).unwrap_or_default()
    }

    pub fn get(&self, field: SearchField) -> Option<&str> {
        let v = match field {
            SearchField::Actor => &self.actor,
            SearchField::EventType => &self.event_type,
            SearchField::Action => &self.action,
            SearchField::Outcome => &self.outcome,
            SearchField::Resource => &self.resource,
            SearchField::Classification => &self.classification,
            SearchField::SessionId => &self.session_id,
            SearchField::RequestId => &self.request_id,
            SearchField::SourceIp => &self.source_ip,
        };
        v.as_deref()
    }

    /// The event's own `timestamp` (the client's clock) in Unix nanoseconds.
    pub fn timestamp_unix_ns(&self) -> Option<u64> {
        let ms = crate::time::rfc3339_to_unix_ms(self.timestamp.as_deref()?)?;
        u64::try_from(ms).ok()?.checked_mul(1_000_000)
    }

    /// Every index term of the event, appended to `out` (duplicates possible).
    pub fn terms(&self, bucket_bits: u32, out: &mut Vec<u64>) {
        for f in SearchField::ALL {
            if let Some(v) = self.get(f) {
                out.push(term(f, v, bucket_bits));
            }
        }
        if let Some(r) = self.get(SearchField::Resource) {
            out.extend(resource_prefixes(r).map(resource_prefix_term));
        }
    }
}

/// A filter's quick refusal: false only when an event's bytes show that it cannot match
/// (so a block of candidates is re-checked at the speed of a substring search). An event
/// with no backslash has every string as its raw bytes, so a field equal to `v` puts `"v"`
/// in it, and a resource starting with `p` puts `"p`.
pub struct Prefilter {
    equals: Vec<memchr::memmem::Finder<'static>>,
    prefix: Option<memchr::memmem::Finder<'static>>,
}

impl Prefilter {
    pub fn may_match(&self, event: &[u8]) -> bool {
        if memchr::memchr(b'\\', event).is_some() {
            return true;
        }
        let quoted = |f: &memchr::memmem::Finder<'_>, closed: bool| {
            let len = f.needle().len();
            f.find_iter(event).any(|i| {
                i > 0 && event[i - 1] == b'"' && (!closed || event.get(i + len) == Some(&b'"'))
            })
        };
        self.equals.iter().all(|f| quoted(f, true))
            && self.prefix.as_ref().is_none_or(|f| quoted(f, false))
    }
}

/// A search's conditions, all of which must hold (AND).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Exact matches, at most one per field.
    pub equals: Vec<(SearchField, String)>,
    /// `resource` starts with this (`resource=prefix*` in a query).
    pub resource_prefix: Option<String>,
    /// The event's own `timestamp` in `[since, until)`, Unix ns.
    pub timestamp_since_unix_ns: Option<u64>,
    pub timestamp_until_unix_ns: Option<u64>,
}

impl Filter {
    pub fn matches(&self, e: &EventFields<'_>) -> bool {
        let equal = self
            .equals
            .iter()
            .all(|(f, want)| e.get(*f) == Some(want.as_str()));
        let prefix = self.resource_prefix.as_deref().is_none_or(|p| {
            e.get(SearchField::Resource)
                .is_some_and(|r| r.starts_with(p))
        });
        let timed =
            self.timestamp_since_unix_ns.is_some() || self.timestamp_until_unix_ns.is_some();
        let time = !timed
            || e.timestamp_unix_ns().is_some_and(|t| {
                self.timestamp_since_unix_ns.is_none_or(|s| t >= s)
                    && self.timestamp_until_unix_ns.is_none_or(|u| t < u)
            });
        equal && prefix && time
    }

    /// Whether an event's JSON can match, judged from its bytes without parsing them
    /// (`Prefilter::may_match`).
    pub fn may_match(&self, event: &[u8]) -> bool {
        self.prefilter().may_match(event)
    }

    /// The filter's substring searchers, built once for a search's many records.
    pub fn prefilter(&self) -> Prefilter {
        let finder = |v: &str| memchr::memmem::Finder::new(v.as_bytes()).into_owned();
        Prefilter {
            equals: self.equals.iter().map(|(_, v)| finder(v)).collect(),
            prefix: self.resource_prefix.as_deref().map(finder),
        }
    }

    /// Index terms every matching event has, in an index of `bucket_bits`: one per exact
    /// condition, and for a resource prefix the longest indexed prefix it starts with (if
    /// any). Empty: the filter cannot use the index (records are scanned).
    pub fn terms(&self, bucket_bits: u32) -> Vec<u64> {
        let mut out: Vec<u64> = self
            .equals
            .iter()
            .map(|(f, v)| term(*f, v, bucket_bits))
            .collect();
        if let Some(p) = &self.resource_prefix {
            if let Some(longest) = resource_prefixes(p).last() {
                out.push(resource_prefix_term(longest));
            }
        }
        out
    }

    /// A digest of the filter, so a cursor is only taken back with the filter it was
    /// given for.
    pub fn digest(&self) -> [u8; 16] {
        let mut h = blake3::Hasher::new();
        let mut equals = self.equals.clone();
        equals.sort_by_key(|(f, _)| f.tag());
        for (f, v) in &equals {
            h.update(&[f.tag()]);
            h.update(&(v.len() as u64).to_be_bytes());
            h.update(v.as_bytes());
        }
        match &self.resource_prefix {
            Some(p) => {
                h.update(&[1]);
                h.update(&(p.len() as u64).to_be_bytes());
                h.update(p.as_bytes());
            }
            None => {
                h.update(&[0]);
            }
        }
        for t in [self.timestamp_since_unix_ns, self.timestamp_until_unix_ns] {
            h.update(&t.map_or([0xff; 9], |t| {
                let mut b = [0u8; 9];
                b[1..].copy_from_slice(&t.to_be_bytes());
                b
            }));
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a 64's published vectors, through the tag byte: the empty string's hash is the
    /// offset basis, "a" is 0xaf63dc4c8601ec8c.
    #[test]
    fn fnv1a_matches_its_published_vectors() {
        let plain = |s: &[u8]| {
            let mut h = 0xcbf2_9ce4_8422_2325u64;
            for &b in s {
                h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
            h
        };
        assert_eq!(plain(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b'a', b""), plain(b"a"));
        assert_eq!(fnv1a(b'a', b"bc"), plain(b"abc"));
    }

    #[test]
    fn resource_prefixes_cut_after_separators() {
        let p: Vec<&str> = resource_prefixes("s3://bucket/a/b/c/d").collect();
        assert_eq!(p, ["s3:", "s3:/", "s3://", "s3://bucket/"]);
        assert_eq!(resource_prefixes("plain").count(), 0);
    }

    #[test]
    fn fields_are_read_with_escapes_and_other_types_ignored() {
        let e = EventFields::of(br#"{"actor":"a\"b","outcome":"success","x":{"y":1}}"#);
        assert_eq!(e.get(SearchField::Actor), Some("a\"b"));
        assert_eq!(e.get(SearchField::Outcome), Some("success"));
        let odd = EventFields::of(br#"{"actor":5}"#);
        assert_eq!(odd.get(SearchField::Actor), None);
    }

    #[test]
    fn filter_matches_and_terms() {
        let e = EventFields::of(
            br#"{"actor":"alice","resource":"db/users/7","timestamp":"2024-05-01T12:00:00Z"}"#,
        );
        let mut f = Filter {
            equals: vec![(SearchField::Actor, "alice".into())],
            resource_prefix: Some("db/us".into()),
            ..Filter::default()
        };
        assert!(f.matches(&e));
        assert_eq!(
            f.terms(16),
            [
                term(SearchField::Actor, "alice", 16),
                resource_prefix_term("db/")
            ]
        );
        f.timestamp_since_unix_ns = Some(1_714_564_800_000_000_001);
        assert!(!f.matches(&e));
        f.timestamp_since_unix_ns = Some(1_714_564_800_000_000_000);
        assert!(f.matches(&e));
    }

    /// Bucketed fields fold values into `2^bits` buckets (all into one at 0 bits), other
    /// fields never; a bucket's term is neither a value's term nor another field's bucket.
    #[test]
    fn bucketed_terms_fold_values_into_buckets() {
        let ids: Vec<String> = (0..1000).map(|i| format!("r-{i}")).collect();
        let distinct = |field: SearchField, bits: u32| {
            let mut t: Vec<u64> = ids.iter().map(|v| term(field, v, bits)).collect();
            t.sort_unstable();
            t.dedup();
            t.len()
        };
        assert_eq!(distinct(SearchField::RequestId, 0), 1);
        assert_eq!(distinct(SearchField::RequestId, 2), 4);
        assert!((200..=256).contains(&distinct(SearchField::SessionId, 8)));
        assert_eq!(distinct(SearchField::Actor, 0), 1000);
        assert_ne!(
            term(SearchField::RequestId, "x", 0),
            term(SearchField::SessionId, "x", 0)
        );
        assert_eq!(term(SearchField::Actor, "x", 0), fnv1a(1, b"x"));
        // fmix64's known value (MurmurHash3 reference: fmix64(1)).
        assert_eq!(fmix64(1), 0xb456_bcfc_34c2_cb2c);
    }

    /// The byte pre-check never refuses an event the parsed check accepts, escapes and
    /// near misses included.
    #[test]
    fn may_match_never_refuses_a_match() {
        let f = Filter {
            equals: vec![(SearchField::Actor, "al".into())],
            resource_prefix: Some("db/".into()),
            ..Filter::default()
        };
        let events: [&[u8]; 6] = [
            br#"{"actor":"al","resource":"db/x"}"#,
            br#"{"actor":"al","resource":"db/x"}"#,
            br#"{"actor":"alice","resource":"db/x"}"#,
            br#"{"actor":"al","resource":"xdb/"}"#,
            br#"{"actor":"xal","resource":"db/x"}"#,
            br#"{"resource":"db/x","actor":"al"}"#,
        ];
        let may: Vec<bool> = events.iter().map(|e| f.may_match(e)).collect();
        let does: Vec<bool> = events
            .iter()
            .map(|e| f.matches(&EventFields::of(e)))
            .collect();
        assert_eq!(does, [true, true, false, false, false, true]);
        assert_eq!(may, [true, true, false, false, false, true]);
    }
}
