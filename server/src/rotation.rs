//! Key rotation on a schedule (the daemon's side; the policy and key making are the
//! engine's `rotation.rs`). Every `admin.rotation_check_interval_ms` the scheduler looks at
//! the newest signing key's age:
//! - under an approved rotation policy (`set_rotation_policy`, two-person rule), a key of
//!   `rotation_days` gets a successor made in the policy's backend and added to the key
//!   history; once the successor has signed beside it for `overlap_days`, the old key is
//!   retired. Each step is an `admin` event in the log, by `auditlogd`, naming the policy.
//! - without one, a key older than `admin.rotation_days_default` is overdue: `/ready`'s
//!   detail and `auditlog_signing_key_rotation_overdue` say so, and the daemon makes the
//!   next key beside the current one and files the `rotate_key` request itself, for admins
//!   to approve as any other (it never approves its own).
//!
//! Nothing here adds a key the two-person rule did not allow: either the admins approved
//! the policy, or they approve the request.

use std::sync::Mutex;
use std::time::Duration;

use auditlog_engine::rotation::{self, NextKey, RotationPolicy, NANOS_PER_DAY};
use auditlog_engine::{Engine, KeyEntry};
use serde_json::json;

use crate::admin::{self, Operation, RequestState};
use crate::http::St;

/// Who files and performs scheduled steps, in the log and in the request file.
pub const SCHEDULER: &str = "auditlogd";

/// What the last check found, for `/ready` and `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct RotationStatus {
    /// The newest signing key's age in whole days.
    pub key_age_days: u64,
    /// Older than the policy's (or the default) rotation age and not rotated yet.
    pub overdue: bool,
    /// Said in `/ready`'s detail: an overdue key, a failed step.
    pub warning: Option<String>,
    /// Checks made since the start (the scheduler's heartbeat).
    pub checks: u64,
}

#[derive(Default)]
pub struct Rotation {
    status: Mutex<RotationStatus>,
}

impl Rotation {
    pub fn status(&self) -> RotationStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, s: RotationStatus) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }
}

/// The scheduler: one check at start, then one per interval, each on a blocking thread.
pub async fn run(st: St) {
    let every = Duration::from_millis(st.admin.cfg.rotation_check_interval_ms);
    loop {
        let st2 = st.clone();
        match tokio::task::spawn_blocking(move || check(&st2, auditlog_engine::now_unix_ns())).await
        {
            Ok(s) => st.rotation.set(RotationStatus {
                checks: st.rotation.status().checks + 1,
                ..s
            }),
            Err(e) => tracing::error!("key rotation check failed: {e}"),
        }
        tokio::time::sleep(every).await;
    }
}

/// One look at the keys at `now` (Unix ns): rotate, retire or file what is due.
pub fn check(st: &St, now: u64) -> RotationStatus {
    let history = st.engine.key_history();
    let Some(newest) = rotation::newest_signing_key(&history).cloned() else {
        return RotationStatus::default();
    };
    let age = rotation::age_days(&newest, now);
    let policy = match st.engine.rotation_policy() {
        Ok(p) => p,
        Err(e) => {
            return RotationStatus {
                key_age_days: age,
                overdue: false,
                warning: Some(format!("key rotation: reading the policy: {e}")),
                checks: 0,
            };
        }
    };
    let due_days = policy
        .as_ref()
        .map_or(st.admin.cfg.rotation_days_default, |p| p.rotation_days);
    let mut status = RotationStatus {
        key_age_days: age,
        overdue: age >= u64::from(due_days),
        warning: None,
        checks: 0,
    };
    let step = match &policy {
        Some(p) => scheduled(st, p, &history.keys, &newest, now),
        None if status.overdue => file_request(st, &newest, age, due_days),
        None => Ok(None),
    };
    match step {
        Ok(Some(done)) => {
            tracing::info!("key rotation: {done}");
            status = RotationStatus {
                overdue: false,
                ..status
            };
        }
        Ok(None) if status.overdue => {
            status.warning = Some(format!(
                "signing key {} is {age} days old, over the {due_days} days of {}; a rotate_key request by {SCHEDULER} waits for approval",
                newest.verifier_key,
                if policy.is_some() { "the rotation policy" } else { "admin.rotation_days_default (no rotation policy approved)" },
            ));
        }
        Ok(None) => {}
        Err(e) => status.warning = Some(format!("key rotation: {e}")),
    }
    status
}

/// Under an approved policy: add the successor of a key that is due, or retire the keys
/// its successor has overlapped long enough. Returns what it did.
fn scheduled(
    st: &St,
    policy: &RotationPolicy,
    keys: &[KeyEntry],
    newest: &KeyEntry,
    now: u64,
) -> Result<Option<String>, String> {
    let engine = &st.engine;
    if rotation::age_days(newest, now) >= u64::from(policy.rotation_days) {
        let backend = engine
            .create_key(&policy.backend, &label(now))
            .map_err(|e| format!("making the next key: {e}"))?;
        let added = engine
            .add_key(&backend, Some(&newest.name))
            .map_err(|e| format!("adding the next key: {e}"))?;
        let done = format!(
            "key {} added by the rotation policy (key {} reached {} days)",
            added.verifier_key, newest.verifier_key, policy.rotation_days
        );
        event(engine, "rotate_key", &added.verifier_key, &done, policy)?;
        return Ok(Some(done));
    }
    let overlap_ends = newest
        .added_at_unix_ns
        .saturating_add(u64::from(policy.overlap_days) * NANOS_PER_DAY);
    if now < overlap_ends {
        return Ok(None);
    }
    let mut done = Vec::new();
    for old in keys
        .iter()
        .filter(|k| k.until_size.is_none() && k.verifier_key != newest.verifier_key)
    {
        let retired = engine
            .retire_key(&old.verifier_key)
            .map_err(|e| format!("retiring {}: {e}", old.verifier_key))?;
        let text = format!(
            "key {} retired by the rotation policy ({} days after {} was added); signs sizes below {}",
            retired.verifier_key,
            policy.overlap_days,
            newest.verifier_key,
            retired.until_size.unwrap_or(0)
        );
        event(engine, "retire_key", &retired.verifier_key, &text, policy)?;
        done.push(text);
    }
    Ok((!done.is_empty()).then(|| done.join("; ")))
}

/// Without a policy: make the next key beside the overdue one and file the `rotate_key`
/// request, unless a request of the scheduler's for it is pending. Returns what it did.
fn file_request(
    st: &St,
    newest: &KeyEntry,
    age: u64,
    due_days: u32,
) -> Result<Option<String>, String> {
    let now_ms = auditlog_engine::now_unix_ns() / 1_000_000;
    let pending = st.admin.requests_where(|r| {
        r.requester == SCHEDULER
            && r.state == RequestState::Pending
            && r.expires_at_unix_ms > now_ms
            && matches!(r.op, Operation::RotateKey { .. })
    });
    if pending > 0 {
        return Ok(None);
    }
    let next = NextKey::beside(newest).ok_or_else(|| {
        format!(
            "signing key {} is {age} days old (over {due_days}) and was supplied by the embedding program: rotate it by hand",
            newest.verifier_key
        )
    })?;
    let backend = st
        .engine
        .create_key(&next, &label(auditlog_engine::now_unix_ns()))
        .map_err(|e| format!("making the next key: {e}"))?;
    let op = Operation::RotateKey {
        backend,
        name: Some(newest.name.clone()),
    };
    let req = admin::file_request(st, SCHEDULER, op).map_err(|e| e.message)?;
    // Filed, but still overdue until admins approve it: the caller keeps the warning.
    tracing::warn!(
        "signing key {} is {age} days old (over {due_days}); filed rotate_key request {} for admins to approve",
        newest.verifier_key,
        req.id
    );
    Ok(None)
}

/// A scheduled step's `admin` event, by the scheduler, naming the policy it follows.
fn event(
    engine: &Engine,
    action: &str,
    key: &str,
    text: &str,
    policy: &RotationPolicy,
) -> Result<(), String> {
    admin::admin_event(
        engine,
        SCHEDULER,
        action,
        &format!("keys/{key}"),
        "success",
        json!({"result": text, "rotation_policy": policy}),
    )
    .map_err(|e| format!("recording {action}: {e}"))
}

/// A new key's label: its making time, UTC, to the second (`20261207T235959Z`).
fn label(now: u64) -> String {
    let t = auditlog_formats::time::unix_ns_to_rfc3339(now);
    t.chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect::<String>()
        + "Z"
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_are_utc_seconds() {
        // 2026-12-07T23:59:59Z
        assert_eq!(super::label(1_796_687_999_000_000_000), "20261207T235959Z");
    }
}
