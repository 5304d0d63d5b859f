//! Operator actions on parked messages: list them and replay them, for the admin API
//! (`/admin/parked`) and the `signpost parked` command alike.
//!
//! A replay puts the parked envelope back in the outbox, addressed straight to the work queue it
//! was parked from, with its original message id (so a downstream that already has it answers
//! `duplicate` and nothing is doubled) and a fresh attempt count. Each parked message is replayed
//! at most once; the replay is written on the referral's timeline.

use serde_json::{json, Value};
use signpost_bus::Directory;

use crate::fhir::instant;
use crate::store::{OutboxRow, ParkedFilter, ParkedRow, Store, StoreError};

/// What to select: one id, or everything of a scheme (HealthcareService or Endpoint id)
/// parked since a time.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub id: Option<String>,
    pub scheme: Option<String>,
    pub since_ms: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no scheme or endpoint {0:?} in the directory")]
    UnknownScheme(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn filter(
    directory: &Directory,
    s: &Selector,
    include_replayed: bool,
) -> Result<ParkedFilter, AdminError> {
    let target = match &s.scheme {
        None => None,
        Some(name) => match (directory.scheme(name), directory.endpoint(name)) {
            (Some(scheme), _) => Some(scheme.endpoint.clone()),
            (None, Some(endpoint)) => Some(endpoint.id.clone()),
            (None, None) => return Err(AdminError::UnknownScheme(name.clone())),
        },
    };
    Ok(ParkedFilter {
        id: s.id.clone(),
        target,
        since_ms: s.since_ms,
        include_replayed,
    })
}

pub async fn list(
    store: &Store,
    directory: &Directory,
    s: &Selector,
) -> Result<Vec<ParkedRow>, AdminError> {
    Ok(store.parked(&filter(directory, s, true)?).await?)
}

/// Replay the selected parked messages that were not replayed yet; returns those replayed now.
pub async fn replay(
    store: &Store,
    directory: &Directory,
    s: &Selector,
) -> Result<Vec<ParkedRow>, AdminError> {
    let rows = store.parked(&filter(directory, s, false)?).await?;
    let mut replayed = Vec::new();
    for row in rows {
        let mut tx = store.begin().await?;
        if !tx.mark_replayed(&row.id).await? {
            continue;
        }
        tx.add_outbox(&OutboxRow {
            id: format!("{}:replay:{}", row.message_id, row.id),
            exchange: String::new(),
            routing_key: row.origin_queue.clone(),
            referral_id: row.referral_id.clone(),
            label: row.label.clone(),
            envelope: row.envelope.clone(),
        })
        .await?;
        tx.add_step(
            &row.referral_id,
            &format!("{}-replayed", row.label),
            &format!(
                "Replayed by an operator to {}; delivery starts again from attempt 1",
                row.target
            ),
        )
        .await?;
        tx.commit().await?;
        replayed.push(row);
    }
    Ok(replayed)
}

/// A parked message as the admin API shows it (no payload: it holds patient data).
pub fn describe(row: &ParkedRow) -> Value {
    json!({
        "id": row.id,
        "messageId": row.message_id,
        "referral": row.referral_id,
        "target": row.target,
        "kind": row.label,
        "reason": row.reason,
        "attempts": row.attempts,
        "parkedAt": instant(row.parked_ms),
        "replayedAt": row.replayed_ms.map(instant),
    })
}

/// `2h`, `30m`, `1d`, `45s` ago, or an RFC 3339 time, as unix milliseconds.
pub fn parse_since(text: &str, now_ms: i64) -> Option<i64> {
    let t = text.trim();
    let (n, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    if let (Ok(n), Some(ms)) = (
        n.parse::<i64>(),
        match unit {
            "s" => Some(1_000),
            "m" => Some(60_000),
            "h" => Some(3_600_000),
            "d" => Some(86_400_000),
            _ => None,
        },
    ) {
        return Some(now_ms - n * ms);
    }
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|d| (d.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_ago_and_times() {
        assert_eq!(parse_since("2h", 10_000_000), Some(10_000_000 - 7_200_000));
        assert_eq!(parse_since("30m", 3_600_000), Some(1_800_000));
        assert_eq!(parse_since("1970-01-01T00:00:01Z", 0), Some(1_000));
        assert_eq!(parse_since("yesterday", 0), None);
    }
}
