//! Local retention: which sealed segment may leave the local disk, and whether the store's
//! copy is the very bytes of the local file. Pure helpers; the replicator's loop decides
//! when to prune and does the durable steps (record, then unlink).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::manifest::{Shipped, ShippedSegment};
use super::plan::Sealed;
use crate::error::{io_err, Result};

/// The oldest sealed segment that may be pruned: it is in the manifest with the same
/// range, a signed checkpoint covers it (so the hash store, which stays local and serves
/// its proofs, is synced past it), and it was sealed at least `keep_ms` ago. The open
/// segment is never in `sealed`, so it is never a candidate.
pub(crate) fn pick<'a>(
    sealed: &'a [Sealed],
    shipped: &'a Shipped,
    checkpoint_size: u64,
    now_unix_ns: u64,
    keep_ms: u64,
) -> Option<(&'a Sealed, &'a ShippedSegment)> {
    let keep_ns = keep_ms.saturating_mul(1_000_000);
    sealed
        .iter()
        .filter(|s| s.end <= checkpoint_size)
        .filter(|s| now_unix_ns.saturating_sub(s.sealed_at_unix_ns) >= keep_ns)
        .filter_map(|s| {
            let sh = shipped.segments.get(&s.first)?;
            (sh.end == s.end).then_some((s, sh))
        })
        .min_by_key(|(s, _)| s.first)
}

/// What a read-back of a shipped segment found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Same,
    Missing,
    Differs(String),
}

/// Compares the store's copy with the manifest's record and with the local file (streamed,
/// BLAKE3 over the whole file): all three must agree before the local file may go.
pub(crate) fn compare(
    object: Option<&[u8]>,
    local: &File,
    path: &Path,
    shipped: &ShippedSegment,
) -> Result<Verdict> {
    let Some(object) = object else {
        return Ok(Verdict::Missing);
    };
    let theirs = blake3::hash(object).to_hex();
    if object.len() as u64 != shipped.bytes || theirs.as_str() != shipped.blake3 {
        return Ok(Verdict::Differs(format!(
            "store holds {} bytes with BLAKE3 {theirs}, the manifest recorded {} bytes with BLAKE3 {}",
            object.len(),
            shipped.bytes,
            shipped.blake3
        )));
    }
    let len = local.metadata().map_err(io_err(path, "stat"))?.len();
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        local
            .read_exact_at(&mut buf[..n], at)
            .map_err(io_err(path, "read for comparison"))?;
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    let ours = hasher.finalize().to_hex();
    if len != shipped.bytes || ours.as_str() != shipped.blake3 {
        return Ok(Verdict::Differs(format!(
            "local file has {len} bytes with BLAKE3 {ours}, the manifest recorded {} bytes with BLAKE3 {}",
            shipped.bytes, shipped.blake3
        )));
    }
    Ok(Verdict::Same)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn sealed(first: u64, end: u64, at_ms: u64, file: &Arc<File>) -> Sealed {
        Sealed {
            first,
            end,
            file: file.clone(),
            path: "x".into(),
            sealed_at_unix_ns: at_ms * 1_000_000,
            max_classification: 0,
        }
    }

    fn shipped(ranges: &[(u64, u64)]) -> Shipped {
        let mut s = Shipped::default();
        for &(first, end) in ranges {
            s.segments.insert(
                first,
                ShippedSegment {
                    end,
                    retain_until_unix_s: 0,
                    key: format!("segments/{first}"),
                    bytes: 3,
                    blake3: blake3::hash(b"abc").to_hex().to_string(),
                },
            );
        }
        s
    }

    fn ms(v: u64) -> u64 {
        v * 1_000_000
    }

    #[test]
    fn picks_only_shipped_old_checkpointed_segments() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("f");
        std::fs::write(&p, b"abc").expect("write");
        let f = Arc::new(File::open(&p).expect("open"));
        let segs = vec![
            sealed(0, 10, 1000, &f),
            sealed(10, 20, 1000, &f),
            sealed(20, 30, 5000, &f),
        ];
        // Nothing shipped: nothing to prune.
        assert!(pick(&segs, &shipped(&[]), 100, ms(10_000), 100).is_none());
        // Shipped but not old enough.
        assert!(pick(&segs, &shipped(&[(0, 10)]), 100, ms(1050), 100).is_none());
        // Shipped, old, but beyond the checkpoint.
        assert!(pick(&segs, &shipped(&[(0, 10)]), 5, ms(10_000), 100).is_none());
        // Shipped under another range: not the same segment.
        assert!(pick(&segs, &shipped(&[(0, 11)]), 100, ms(10_000), 100).is_none());
        let sh = shipped(&[(10, 20), (20, 30)]);
        assert_eq!(
            pick(&segs, &sh, 100, ms(10_000), 100).map(|x| x.0.first),
            Some(10)
        );
        assert_eq!(
            pick(&segs, &sh, 100, ms(5050), 100).map(|x| x.0.first),
            Some(10)
        );
        assert!(pick(&segs[2..], &sh, 100, ms(5050), 100).is_none());

        let s = &sh.segments[&10];
        assert_eq!(
            compare(Some(b"abc"), &f, &p, s).expect("cmp"),
            Verdict::Same
        );
        assert_eq!(compare(None, &f, &p, s).expect("cmp"), Verdict::Missing);
        assert!(matches!(
            compare(Some(b"abd"), &f, &p, s).expect("cmp"),
            Verdict::Differs(_)
        ));
        std::fs::write(&p, b"abd").expect("write");
        assert!(matches!(
            compare(Some(b"abc"), &f, &p, s).expect("cmp"),
            Verdict::Differs(_)
        ));
    }
}
