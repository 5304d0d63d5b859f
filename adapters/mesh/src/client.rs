//! The MESH API client: the `NHSMESH` authorisation header, sending (in chunks when the message
//! is large), listing and downloading the inbox (chunked messages too), and acknowledging.
//!
//! It owns the HTTP conversation with a MESH server and nothing else: what is sent is the ITK3
//! module's, and what a message means is the adapter's. Mailbox passwords and the shared key are
//! [`Secret`]s, never printed. MESH metadata (`Mex-Subject`, `Mex-To`) can carry patient
//! demographics, so no header value is ever logged.

use std::collections::BTreeMap;

use aws_lc_rs::hmac;
use http::Method;
use serde::Deserialize;
use signpost_bus::http::{Answer, Failure, HttpClient};
pub use signpost_bus::Secret;

/// MESH's versioned media type for API answers.
pub const ACCEPT: &str = "application/vnd.mesh.v2+json";

/// Largest message accepted when downloading (MESH's own limit is 100 MB per message).
pub const MAX_DOWNLOAD_CHUNK: usize = 100 << 20;

/// What identifies Signpost to a MESH server.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Signpost's own mailbox id (`Mex-From`, and `source.endpoint` in ITK3 headers).
    pub mailbox: String,
    pub password: Secret,
    /// The environment's shared HMAC key.
    pub shared_key: Secret,
}

/// The `Authorization` value: `NHSMESH <mailbox>:<nonce>:<nonce count>:<timestamp>:<hmac>`,
/// where the HMAC-SHA256 (key: the shared key) is over
/// `<mailbox>:<nonce>:<nonce count>:<password>:<timestamp>` and the timestamp is
/// `YYYYMMDDHHMM` in UTC.
pub fn authorization(credentials: &Credentials, nonce: &str, timestamp: &str) -> String {
    let count = 0;
    let key = hmac::Key::new(
        hmac::HMAC_SHA256,
        credentials.shared_key.expose().as_bytes(),
    );
    let signed = format!(
        "{}:{nonce}:{count}:{}:{timestamp}",
        credentials.mailbox,
        credentials.password.expose()
    );
    let tag = hmac::sign(&key, signed.as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "NHSMESH {}:{nonce}:{count}:{timestamp}:{hex}",
        credentials.mailbox
    )
}

fn timestamp_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute()
    )
}

/// Why a MESH call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// No answer: the server is down, unreachable or slow. Worth retrying.
    #[error("MESH server unreachable: {0}")]
    Unreachable(#[from] Failure),
    /// The server answered with an error status. 5xx, 408 and 429 are worth retrying.
    #[error("MESH answered HTTP {status}{}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Status { status: u16, code: Option<String> },
    /// The answer was not what the MESH API documents.
    #[error("MESH answer not understood: {0}")]
    Protocol(String),
}

impl MeshError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            MeshError::Unreachable(_) => true,
            MeshError::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            MeshError::Protocol(_) => false,
        }
    }
}

/// What goes into an outbox POST besides the body.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub to: &'a str,
    pub workflow: &'a str,
    pub subject: &'a str,
    pub local_id: &'a str,
    pub filename: &'a str,
    pub content_type: &'a str,
}

/// A message downloaded from the inbox: its `mex-*` headers (names in lower case) and body.
#[derive(Debug, Clone)]
pub struct InboxMessage {
    pub id: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl InboxMessage {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

#[derive(Clone)]
pub struct MeshClient {
    base: String,
    credentials: Credentials,
    http: HttpClient,
    /// Messages larger than this are sent in chunks of this size.
    chunk_bytes: usize,
}

#[derive(Deserialize)]
struct SentAnswer {
    message_id: String,
}

#[derive(Deserialize)]
struct InboxList {
    messages: Vec<String>,
}

impl MeshClient {
    /// `base` is the server's root URL (`https://msg.int.spine2.ncrs.nhs.uk`); requests go to
    /// `{base}/messageexchange/...`.
    pub fn new(base: &str, credentials: Credentials, http: HttpClient, chunk_bytes: usize) -> Self {
        MeshClient {
            base: base.trim_end_matches('/').to_owned(),
            credentials,
            http,
            chunk_bytes: chunk_bytes.max(1),
        }
    }

    pub fn mailbox(&self) -> &str {
        &self.credentials.mailbox
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/messageexchange/{}{path}",
            self.base, self.credentials.mailbox
        )
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        let nonce = uuid::Uuid::new_v4().to_string();
        vec![
            (
                "authorization",
                authorization(&self.credentials, &nonce, &timestamp_now()),
            ),
            ("accept", ACCEPT.to_owned()),
            (
                "mex-clientversion",
                concat!("Signpost/", env!("CARGO_PKG_VERSION")).to_owned(),
            ),
            ("mex-osname", std::env::consts::OS.to_owned()),
            ("mex-osversion", "unknown".to_owned()),
            ("mex-osarchitecture", std::env::consts::ARCH.to_owned()),
        ]
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        extra: Vec<(&'static str, String)>,
        body: Vec<u8>,
        max_answer: usize,
    ) -> Result<Answer, MeshError> {
        let mut headers = self.headers();
        headers.extend(extra);
        let headers: Vec<(&str, String)> = headers.into_iter().collect();
        let answer = self
            .http
            .send(method, &self.url(path), &headers, body, max_answer)
            .await?;
        if answer.status.is_success() {
            Ok(answer)
        } else {
            Err(MeshError::Status {
                status: answer.status.as_u16(),
                code: error_code(&answer.body),
            })
        }
    }

    /// Check the mailbox and credentials (the MESH handshake, `POST /messageexchange/{mailbox}`).
    pub async fn handshake(&self) -> Result<(), MeshError> {
        self.call(Method::POST, "", Vec::new(), Vec::new(), 1 << 16)
            .await
            .map(|_| ())
    }

    /// Send `body` and return MESH's message id. A body larger than the chunk size goes as
    /// chunk 1 with the headers, then chunks 2..N to `outbox/{id}/{n}`.
    pub async fn send(&self, out: &Outgoing<'_>, body: &[u8]) -> Result<String, MeshError> {
        let chunks: Vec<&[u8]> = if body.is_empty() {
            vec![body]
        } else {
            body.chunks(self.chunk_bytes).collect()
        };
        let total = chunks.len();
        let mut headers = vec![
            ("mex-from", self.credentials.mailbox.clone()),
            ("mex-to", out.to.to_owned()),
            ("mex-workflowid", out.workflow.to_owned()),
            ("mex-subject", out.subject.to_owned()),
            ("mex-localid", out.local_id.to_owned()),
            ("mex-filename", out.filename.to_owned()),
            ("mex-content-compressed", "N".to_owned()),
            ("mex-content-encrypted", "N".to_owned()),
            ("content-type", out.content_type.to_owned()),
        ];
        if total > 1 {
            headers.push(("mex-chunk-range", format!("1:{total}")));
        }
        let answer = self
            .call(
                Method::POST,
                "/outbox",
                headers,
                chunks[0].to_vec(),
                1 << 16,
            )
            .await?;
        let sent: SentAnswer = serde_json::from_slice(&answer.body)
            .map_err(|e| MeshError::Protocol(format!("outbox answer: {e}")))?;
        for (i, chunk) in chunks.iter().enumerate().skip(1) {
            let n = i + 1;
            let headers = vec![
                ("mex-chunk-range", format!("{n}:{total}")),
                ("content-type", out.content_type.to_owned()),
            ];
            self.call(
                Method::POST,
                &format!("/outbox/{}/{n}", sent.message_id),
                headers,
                chunk.to_vec(),
                1 << 16,
            )
            .await?;
        }
        Ok(sent.message_id)
    }

    /// The ids of the messages waiting in the inbox (MESH lists up to 500 at a time).
    pub async fn inbox(&self) -> Result<Vec<String>, MeshError> {
        let answer = self
            .call(Method::GET, "/inbox", Vec::new(), Vec::new(), 1 << 20)
            .await?;
        let list: InboxList = serde_json::from_slice(&answer.body)
            .map_err(|e| MeshError::Protocol(format!("inbox list: {e}")))?;
        Ok(list.messages)
    }

    /// Download one message, all of its chunks.
    pub async fn download(&self, id: &str) -> Result<InboxMessage, MeshError> {
        check_id(id)?;
        let first = self
            .call(
                Method::GET,
                &format!("/inbox/{id}"),
                Vec::new(),
                Vec::new(),
                MAX_DOWNLOAD_CHUNK,
            )
            .await?;
        let headers: BTreeMap<String, String> = first
            .headers
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("mex-"))
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect();
        let mut body = first.body.to_vec();
        if first.status.as_u16() == 206 {
            let total = headers
                .get("mex-chunk-range")
                .and_then(|r| r.split_once(':'))
                .and_then(|(_, n)| n.parse::<usize>().ok())
                .ok_or_else(|| MeshError::Protocol("206 without a Mex-Chunk-Range".into()))?;
            for n in 2..=total.min(10_000) {
                let part = self
                    .call(
                        Method::GET,
                        &format!("/inbox/{id}/{n}"),
                        Vec::new(),
                        Vec::new(),
                        MAX_DOWNLOAD_CHUNK,
                    )
                    .await?;
                body.extend_from_slice(&part.body);
            }
        }
        Ok(InboxMessage {
            id: id.to_owned(),
            headers,
            body,
        })
    }

    /// Acknowledge a downloaded message: MESH then removes it from the inbox.
    pub async fn acknowledge(&self, id: &str) -> Result<(), MeshError> {
        check_id(id)?;
        self.call(
            Method::PUT,
            &format!("/inbox/{id}/status/acknowledged"),
            Vec::new(),
            Vec::new(),
            1 << 16,
        )
        .await
        .map(|_| ())
    }
}

/// MESH message ids go into URL paths: letters, digits, `-` and `_` only.
fn check_id(id: &str) -> Result<(), MeshError> {
    let ok = !id.is_empty()
        && id.len() <= 100
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(MeshError::Protocol(
            "a message id with unexpected characters".into(),
        ))
    }
}

/// The error code of a MESH error answer (`errorCode`, or v2's `detail[0].code`), never its
/// description text.
fn error_code(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("errorCode")
        .or_else(|| v.pointer("/detail/0/code"))
        .and_then(|c| {
            c.as_str()
                .map(str::to_owned)
                .or_else(|| Some(c.to_string()))
        })
        .filter(|c| c.len() <= 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials() -> Credentials {
        Credentials {
            mailbox: "X26ABC001".into(),
            password: Secret::new("password"),
            shared_key: Secret::new("TestKey"),
        }
    }

    #[test]
    fn the_authorization_header_is_the_hmac_of_the_documented_string() {
        let header = authorization(&credentials(), "nonce-1", "202612021000");
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"TestKey");
        let tag = hmac::sign(&key, b"X26ABC001:nonce-1:0:password:202612021000");
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            header,
            format!("NHSMESH X26ABC001:nonce-1:0:202612021000:{hex}")
        );
        assert!(!header.contains("password"));
    }

    #[test]
    fn secrets_do_not_print() {
        let c = Credentials {
            password: Secret::new("s3cret-pw"),
            ..credentials()
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret-pw") && !shown.contains("TestKey"),
            "{shown}"
        );
        assert!(shown.contains("***"), "{shown}");
    }

    #[test]
    fn message_ids_with_path_characters_are_refused() {
        assert!(check_id("20261202100000000000_ABCDEF").is_ok());
        assert!(check_id("../x").is_err());
        assert!(check_id("").is_err());
    }

    #[test]
    fn error_codes_are_read_but_descriptions_are_not() {
        assert_eq!(
            error_code(br#"{"errorCode":"EPL-151","errorDescription":"Jane 9434765919"}"#),
            Some("EPL-151".into())
        );
        assert_eq!(
            error_code(br#"{"detail":[{"code":"02","msg":"x"}]}"#),
            Some("02".into())
        );
        assert_eq!(error_code(b"not json"), None);
    }
}
