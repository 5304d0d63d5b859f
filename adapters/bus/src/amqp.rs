//! Connecting to RabbitMQ, with backoff while it is away.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

use crate::BusError;

/// Connect once. `name` shows in the broker's management UI.
pub async fn connect(url: &str, name: &str) -> Result<Connection, BusError> {
    let props = ConnectionProperties::default().with_connection_name(name.as_bytes().into());
    Ok(Connection::connect(url, props).await?)
}

/// Connect, retrying with exponential backoff (100 ms doubling to 5 s) until it works or
/// `shutdown` is cancelled (then `None`).
pub async fn connect_with_backoff(
    url: &str,
    name: &str,
    shutdown: &CancellationToken,
) -> Option<Connection> {
    let mut delay = Duration::from_millis(100);
    loop {
        if shutdown.is_cancelled() {
            return None;
        }
        match connect(url, name).await {
            Ok(conn) => return Some(conn),
            Err(error) => {
                tracing::warn!(%error, ?delay, connection = name, "broker unreachable, will retry");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// How long a polite close may take before we stop waiting for the broker's close-ok.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Close a connection, waiting at most a moment for the broker (it may be gone).
pub async fn close(conn: &Connection, reason: &str) {
    let _ = tokio::time::timeout(CLOSE_WAIT, conn.close(200, reason.into())).await;
}

/// Close a channel, waiting at most a moment for the broker.
pub async fn close_channel(channel: &lapin::Channel, reason: &str) {
    let _ = tokio::time::timeout(CLOSE_WAIT, channel.close(200, reason.into())).await;
}
