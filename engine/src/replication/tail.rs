//! The tail shipper: the open segment's durable batches go to the store as tail objects
//! (`tail/{segment:020}/{first:020}`, FORMATS.md §15.1), byte for byte, every
//! `tail_interval_ms` — or, in `remote` durability, as soon as there is something to ship,
//! all of it in one upload (group commit across the PUT: what arrives while one upload is
//! in flight goes in the next). So a lost machine loses at most the interval plus one
//! upload, or, in remote mode, nothing that was acknowledged.
//!
//! Its own thread and its own target, so a sealed segment's long upload never delays a
//! tail. It reads batches where the segment set says they are (the open views), checks
//! them (CRC, continuity) before upload, and reports what the store holds to `StoreAcks`.
//! It holds each open segment's file until all its batches are in tails, so one sealed
//! meanwhile is still shipped from it (the preallocator reuses no file anyone holds); only
//! past `HELD_SEALED_MAX` such segments (a store down for long) does it let the oldest go,
//! to the sealed segment's own upload.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auditlog_formats::batch::{check_run, check_run_headers};
use auditlog_worm::{tail_key, tail_prefix, Lock, PutOutcome, WormError, WormTarget};

use super::config::{Durability, ReplicationConfig};
use super::Monitor;
use crate::error::{EngineError, Result};
use crate::segments::BatchLoc;
use crate::Shared;

/// The store's tails of one open segment: `[segment first, end)` is there, and `end`
/// starts at byte `offset` of the segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    end: u64,
    offset: u64,
}

/// The next tail of one open segment: leaves `[first, end)` at bytes `[from, to)`.
struct Next {
    segment: u64,
    first: u64,
    end: u64,
    from: u64,
    to: u64,
    file: Arc<std::fs::File>,
}

pub(crate) struct TailShipper {
    target: Box<dyn WormTarget>,
    cfg: ReplicationConfig,
    monitor: Arc<Monitor>,
    /// Open segment first → its tails on the store.
    positions: BTreeMap<u64, Position>,
    /// Open segments whose tails on the store were looked up (at start, or when first seen).
    looked_up: std::collections::BTreeSet<u64>,
    /// Every open segment with batches not yet in a tail, as last seen, its file held open.
    held: BTreeMap<u64, Held>,
}

/// An open segment's batches as the shipper last saw them, with its file held open: one
/// sealed before its last tails went out is still read from it (the preallocator reuses no
/// file anyone holds), so rotation does not widen the recovery point.
struct Held {
    file: Arc<std::fs::File>,
    batches: Vec<BatchLoc>,
    end: u64,
    /// Still an open segment of the set (not yet sealed).
    open: bool,
}

/// Sealed segments whose last tails are still held for (a store that stays down): past
/// this, the oldest is let go and its sealed segment's upload covers it.
const HELD_SEALED_MAX: usize = 4;

/// A target for tails: the replication target, with uploads capped at
/// `tail_request_timeout_ms`.
pub(crate) fn prepare(
    cfg: &ReplicationConfig,
    url: &str,
    monitor: Arc<Monitor>,
) -> Result<Option<TailShipper>> {
    if cfg.tail_interval_ms == 0 {
        return Ok(None);
    }
    let mut options = cfg.options.clone();
    let t = options
        .request_timeout_ms
        .unwrap_or(auditlog_worm::REQUEST_TIMEOUT_MS_DEFAULT);
    options.request_timeout_ms = Some(t.min(cfg.tail_request_timeout_ms));
    let target = auditlog_worm::open(url, &options)
        .map_err(|e| EngineError::Config(format!("replication target {url}: {e}")))?;
    Ok(Some(TailShipper {
        target,
        cfg: cfg.clone(),
        monitor,
        positions: BTreeMap::new(),
        looked_up: Default::default(),
        held: BTreeMap::new(),
    }))
}

enum Round {
    Shipped,
    Nothing,
}

impl TailShipper {
    pub(crate) fn run(mut self, shared: Arc<Shared>) {
        let why = self.ship(&shared);
        shared.store_acks.close(&why);
        shared.health.tails_finished();
    }

    /// The loop, until shutdown (after a last round that ships everything it can) or a
    /// failure; returns why nothing more will be shipped.
    fn ship(&mut self, shared: &Shared) -> String {
        let interval = Duration::from_millis(self.cfg.tail_interval_ms);
        let remote = self.cfg.durability == Durability::Remote;
        let mut backoff = Duration::from_millis(self.cfg.retry_ms_initial.max(1));
        loop {
            if let Some(f) = shared.health.failure() {
                return f.text();
            }
            // Read before the round: once the sequencer has stopped, a round that finds
            // nothing left means everything is out.
            let stopping = shared.health.shutting_down();
            if let Some(a) = self.monitor.snapshot().tail_alarm {
                shared.store_acks.close(&a);
                if stopping {
                    return a;
                }
                shared.store_acks.wait_for_commit(u64::MAX, interval);
                continue;
            }
            let round_started = Instant::now();
            match self.round(shared) {
                Ok(Round::Shipped) => {
                    backoff = Duration::from_millis(self.cfg.retry_ms_initial.max(1));
                    // More may be waiting (a backlog goes in several objects).
                    continue;
                }
                Ok(Round::Nothing) if stopping => {
                    return "engine shut down before the store confirmed".into()
                }
                Ok(Round::Nothing) => {}
                Err(e) => {
                    let alarm = matches!(e, WormError::Checksum { .. });
                    let text = e.to_string();
                    tracing::warn!("replication: tail: {text}");
                    self.monitor.update(|s| {
                        s.tail_failures += 1;
                        s.tail_last_error = Some(text.clone());
                        if alarm {
                            s.tail_alarm = Some(format!(
                                "a tail on the store holds other bytes (another writer?): {text}"
                            ));
                        }
                    });
                    if stopping {
                        return format!("engine shut down with the store failing: {text}");
                    }
                    sleep_unless_stopping(shared, backoff);
                    backoff = (backoff * 2)
                        .min(Duration::from_millis(self.cfg.retry_ms_max.max(1)))
                        .min(interval.max(Duration::from_millis(100)));
                    continue;
                }
            }
            if remote {
                shared
                    .store_acks
                    .wait_for_commit(shared.store_acks.end(), interval);
            } else {
                let due = round_started + interval;
                sleep_unless_stopping(shared, due.saturating_duration_since(Instant::now()));
            }
        }
    }

    /// Ships the next tail of the oldest open segment with unshipped batches.
    fn round(&mut self, shared: &Shared) -> Result<Round, WormError> {
        self.refresh(shared);
        self.look_up_new_segments(shared)?;
        let Some(next) = self.next() else {
            return Ok(Round::Nothing);
        };
        let mut bytes = vec![0u8; (next.to - next.from) as usize];
        let key = tail_key(next.segment, next.first);
        if let Err(e) = next.file.read_exact_at(&mut bytes, next.from) {
            return Err(WormError::Io {
                path: format!("open segment {}", next.segment),
                what: "read batches for a tail".into(),
                source: e,
            });
        }
        // The file is held (never recycled under us), and these are bytes this engine wrote
        // and synced: the headers must continue the log where the tail starts (a read at the
        // wrong place is caught); every checksum is checked by whoever reads the tail
        // (`check_run`: the verifier, a replica), not again here on the ingest machine.
        match check_run_headers(&bytes, next.first) {
            Ok(end) if end == next.end => {}
            _ => {
                // Not what was written there (cannot happen while the file is held): let
                // the segment go; its sealed segment's upload covers it.
                self.forget(next.segment);
                return Ok(Round::Nothing);
            }
        }
        let lock = Lock {
            retain_until_unix_s: crate::now_unix_ns() / 1_000_000_000
                + u64::from(self.cfg.tail_retention_days) * 86_400,
            legal_hold: false,
        };
        let fenced = |e: EngineError| WormError::Protocol {
            target: self.target.describe(),
            what: key.clone(),
            reason: e.to_string(),
        };
        shared.fence().map_err(fenced)?;
        let started = Instant::now();
        let outcome = self.target.put_create(&key, &bytes, Some(lock))?;
        // Stored; but its receipts are completed only by a writer that still holds the lease.
        shared.fence().map_err(fenced)?;
        self.positions.insert(
            next.segment,
            Position {
                end: next.end,
                offset: next.to,
            },
        );
        shared.store_acks.tail_shipped(next.segment, next.end);
        tracing::debug!(
            "tail {key}: {} events, {} bytes in {:?}",
            next.end - next.first,
            bytes.len(),
            started.elapsed()
        );
        self.monitor.update(|s| {
            s.tails_shipped += 1;
            s.tail_bytes_shipped += bytes.len() as u64;
            if outcome == PutOutcome::AlreadyThere {
                s.objects_already_there += 1;
            }
            s.tail_last_error = None;
        });
        Ok(Round::Shipped)
    }

    /// For each open segment not seen before, what its tails on the store already hold
    /// (a restart continues where the last run stopped, never re-cutting a tail).
    fn look_up_new_segments(&mut self, shared: &Shared) -> Result<(), WormError> {
        let views: Vec<(u64, u64, Vec<BatchLoc>)> = self
            .held
            .iter()
            .filter(|(first, _)| !self.looked_up.contains(first))
            .map(|(first, h)| (*first, h.end, h.batches.clone()))
            .collect();
        for (first, view_end, batches) in views {
            let listed = self.target.list(&tail_prefix(first))?;
            let mut end = first;
            if let Some(last) = listed.last() {
                let bytes = self.target.get(&last.key)?.unwrap_or_default();
                let start = auditlog_worm::parse_tail_key(&last.key).map_or(first, |k| k.1);
                end = check_run(&bytes, start)
                    .map_err(|e| WormError::Protocol {
                        target: self.target.describe(),
                        what: last.key.clone(),
                        reason: format!("not a run of batches: {e}"),
                    })?
                    .0;
            }
            // Where `end` starts in the local file: a batch's offset, or the end of the last.
            let offset = if end == first {
                Some(0)
            } else if end == view_end {
                batches.last().map(|b| b.offset + u64::from(b.total_bytes))
            } else {
                batches
                    .iter()
                    .find(|b| b.first_index == end)
                    .map(|b| b.offset)
            };
            let Some(offset) = offset else {
                return Err(WormError::Checksum {
                    target: self.target.describe(),
                    key: tail_prefix(first),
                    what: format!(
                        "the store's tails of this segment end at index {end}, which is not a batch boundary of the local segment (it ends at {view_end})"
                    ),
                });
            };
            self.positions.insert(first, Position { end, offset });
            if end > first {
                shared.store_acks.tail_shipped(first, end);
            }
            self.looked_up.insert(first);
        }
        Ok(())
    }

    /// The next tail to ship: the oldest held segment with durable batches past its tails.
    fn next(&self) -> Option<Next> {
        for (&seg, h) in &self.held {
            let pos = self.positions.get(&seg).copied().unwrap_or(Position {
                end: seg,
                offset: 0,
            });
            if pos.end >= h.end {
                continue;
            }
            let i = h.batches.partition_point(|b| b.first_index < pos.end);
            let first = h.batches.get(i)?;
            assert_eq!(
                (first.first_index, first.offset),
                (pos.end, pos.offset),
                "a tail ends inside a batch"
            );
            let mut to = first.offset + u64::from(first.total_bytes);
            let mut j = i + 1;
            while let Some(b) = h.batches.get(j) {
                if to - first.offset + u64::from(b.total_bytes) > self.cfg.tail_bytes_max {
                    break;
                }
                to += u64::from(b.total_bytes);
                j += 1;
            }
            let end = h.batches.get(j).map_or(h.end, |b| b.first_index);
            return Some(Next {
                segment: seg,
                first: pos.end,
                end,
                from: first.offset,
                to,
                file: h.file.clone(),
            });
        }
        None
    }

    /// Takes in what the set's open segments gained since the last look (new segments, new
    /// batches), marks those sealed since, and lets go of sealed ones whose tails are all
    /// out (or, past `HELD_SEALED_MAX`, the oldest: its sealed upload covers it).
    fn refresh(&mut self, shared: &Shared) {
        {
            let set = shared.segments.read();
            for h in self.held.values_mut() {
                h.open = false;
            }
            for v in &set.open {
                let h = self.held.entry(v.first).or_insert_with(|| Held {
                    file: v.file.clone(),
                    batches: Vec::new(),
                    end: v.first,
                    open: true,
                });
                h.open = true;
                let from = v.batches.partition_point(|b| b.first_index < h.end);
                h.batches.extend_from_slice(&v.batches[from..]);
                h.end = h.end.max(v.end);
            }
        }
        let done: Vec<u64> = self
            .held
            .iter()
            .filter(|(first, h)| {
                !h.open && self.positions.get(first).is_some_and(|p| p.end >= h.end)
            })
            .map(|(first, _)| *first)
            .collect();
        for first in done {
            self.forget(first);
        }
        while self.held.values().filter(|h| !h.open).count() > HELD_SEALED_MAX {
            let Some(oldest) = self.held.iter().find(|(_, h)| !h.open).map(|(f, _)| *f) else {
                break;
            };
            self.forget(oldest);
        }
    }

    /// Lets go of a segment (and its file).
    fn forget(&mut self, first: u64) {
        self.held.remove(&first);
        self.positions.remove(&first);
        self.looked_up.remove(&first);
    }
}

fn sleep_unless_stopping(shared: &Shared, d: Duration) {
    let until = Instant::now() + d;
    while !shared.health.shutting_down() && !shared.health.has_failed() {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(25)));
    }
}
