//! The run files of the engine's derived indexes (the leaf-hash index, `leafindex/`, and the
//! search index, `search/`): immutable files named `{first:020}-{end:020}.run`
//! (`layout::run_name`), each covering the records `[first, end)`, that together cover
//! `[0, indexed size)` contiguously. One way to open such a directory and to remove a run.

use std::path::Path;
use std::sync::Arc;

use auditlog_formats::layout;

use crate::error::{io_err, Result};

/// The runs of `dir` that continue the chain from 0, that `usable(first, end)` accepts and
/// that `load` reads whole, in order; everything else is deleted (other names, leftover
/// temporary files, gaps, runs past the tree, torn or altered runs), to be rebuilt later.
pub(crate) fn open_chain<R>(
    dir: &Path,
    what: &str,
    usable: impl Fn(u64, u64) -> bool,
    load: impl Fn(&Path, u64, u64) -> Result<R>,
) -> Result<Vec<Arc<R>>> {
    std::fs::create_dir_all(dir).map_err(io_err(dir, format!("create {what} directory")))?;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir, format!("list {what}")))? {
        let entry = entry.map_err(io_err(dir, format!("list {what}")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        match layout::parse_run_name(&name) {
            Some((first, end)) => found.push((first, end, entry.path())),
            None => remove(&entry.path())?,
        }
    }
    found.sort();
    let mut runs = Vec::new();
    let mut next = 0u64;
    for (first, end, path) in found {
        let continues = first == next && end > first && usable(first, end);
        match continues.then(|| load(&path, first, end)) {
            Some(Ok(run)) => {
                next = end;
                runs.push(Arc::new(run));
            }
            Some(Err(e)) => {
                tracing::warn!("{what}: dropping {}: {e}", path.display());
                remove(&path)?;
            }
            None => remove(&path)?,
        }
    }
    Ok(runs)
}

/// Removes a run file; one already gone is fine.
pub(crate) fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path, "remove")(e)),
    }
}
