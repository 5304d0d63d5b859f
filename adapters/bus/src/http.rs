//! Outbound HTTP for adapters: one client (rustls with the Mozilla roots, HTTP/1.1 and HTTP/2),
//! a time-out per request, and the rule that turns an answer into a delivery [`Outcome`].

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::consume::Outcome;

/// The largest answer body read from a downstream system.
const MAX_ANSWER_BYTES: usize = 1 << 20;

#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

/// A downstream answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Why there was no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Transport(String),
    #[error("bad request address: {0}")]
    Address(String),
}

/// TLS for one kind of downstream system: a private CA instead of the public (Mozilla) roots,
/// and a client certificate for systems that identify their callers by one (MESH does). Files
/// are PEM. Certificates are always checked: there is no switch to accept any certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<std::path::PathBuf>,
    pub client_cert: Option<std::path::PathBuf>,
    pub client_key: Option<std::path::PathBuf>,
}

impl TlsFiles {
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client_cert.is_none() && self.client_key.is_none()
    }
}

/// Why TLS settings could not be used. Names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("a client certificate needs both client_cert and client_key")]
    HalfIdentity,
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The error for a file that cannot be used: its path and why, never its content.
pub fn file_error(path: &std::path::Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// The PEM certificates of a file (at least one).
pub fn read_certs(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The rustls client configuration for `files` (aws-lc-rs): the private CA when given, else the
/// Mozilla roots; the client certificate when given. Certificate and hostname checks are rustls's
/// own and are always on. Shared with the broker connection (`amqps://`, see [`crate::amqp`]).
pub fn client_config(files: &TlsFiles) -> Result<rustls::ClientConfig, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &files.ca {
        Some(path) => {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|e| file_error(path, e))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match (&files.client_cert, &files.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key)
                .map_err(|e| file_error(key, e))?;
            builder.with_client_auth_cert(chain, key)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::HalfIdentity),
    })
}

impl HttpClient {
    pub fn new(timeout: Duration) -> Self {
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .unwrap_or_else(|_| {
                // Only fails if the provider lacks safe defaults, which aws-lc-rs does not.
                hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots()
            })
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(https);
        HttpClient { client, timeout }
    }

    /// A client with its own trust anchors and, when given, a client certificate.
    pub fn with_tls(timeout: Duration, files: &TlsFiles) -> Result<Self, TlsError> {
        let config = client_config(files)?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(HttpClient { client, timeout })
    }

    /// POST `body` to `url` with `headers`, waiting at most the client's time-out for the whole
    /// answer.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<Answer, Failure> {
        self.send(http::Method::POST, url, headers, body, MAX_ANSWER_BYTES)
            .await
    }

    /// Any request, reading at most `max_answer` bytes of the answer, within the client's
    /// time-out for the whole exchange.
    pub async fn send(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
        max_answer: usize,
    ) -> Result<Answer, Failure> {
        let mut request = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure::Address(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| Failure::Transport(error_chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max_answer)
                .collect()
                .await
                .map_err(|e| Failure::Transport(e.to_string()))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Failure::Timeout(self.timeout))?
    }
}

/// An error with its sources, `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The `REC_*`/issue codes of an OperationOutcome answer, for a reason line. Diagnostics text is
/// left out: it is the downstream system's prose and could carry what we must not log.
fn outcome_codes(body: &[u8]) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    if v.get("resourceType")?.as_str()? != "OperationOutcome" {
        return None;
    }
    let issue = v.get("issue")?.get(0)?;
    let code = issue.get("code").and_then(|c| c.as_str()).unwrap_or("");
    let rec = issue
        .pointer("/details/coding/0/code")
        .and_then(|c| c.as_str())
        .unwrap_or("");
    Some((code.to_owned(), rec.to_owned()))
}

/// What a downstream answer means for the message:
/// 2xx delivered; 409 `duplicate` delivered (it already had this message id); 408, 429 and 5xx
/// retry; other 4xx park (resending the same thing will not help); no answer retries.
pub fn outcome(what: &str, result: &Result<Answer, Failure>) -> Outcome {
    match result {
        Ok(answer) => {
            let status = answer.status.as_u16();
            let codes = outcome_codes(&answer.body);
            let codes_text = codes
                .as_ref()
                .map(|(issue, rec)| format!(" {rec} ({issue})"))
                .unwrap_or_default();
            match status {
                200..=299 => Outcome::Delivered(format!("{what}: HTTP {status}")),
                409 if codes
                    .as_ref()
                    .is_some_and(|(issue, _)| issue == "duplicate") =>
                {
                    Outcome::Delivered(format!(
                        "{what}: HTTP 409 duplicate, the receiver already had this message"
                    ))
                }
                408 | 429 | 500..=599 => {
                    Outcome::Retry(format!("{what}: HTTP {status}{codes_text}"))
                }
                _ => Outcome::Park(format!("{what}: refused with HTTP {status}{codes_text}")),
            }
        }
        Err(failure) => Outcome::Retry(format!("{what}: {failure}")),
    }
}

/// Join a base URL and a path with exactly one slash.
pub fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Result<Answer, Failure> {
        Ok(Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: http::HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
        })
    }

    const DUPLICATE: &str = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"duplicate","details":{"coding":[{"code":"REC_CONFLICT"}]}}]}"#;
    const INVALID: &str = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"Jane Doe 9434765919","details":{"coding":[{"code":"REC_BAD_REQUEST"}]}}]}"#;

    #[test]
    fn success_is_delivered_and_server_errors_and_timeouts_retry() {
        assert!(matches!(
            outcome("x", &answer(200, "")),
            Outcome::Delivered(_)
        ));
        assert!(matches!(
            outcome("x", &answer(201, "")),
            Outcome::Delivered(_)
        ));
        assert!(matches!(outcome("x", &answer(503, "")), Outcome::Retry(_)));
        assert!(matches!(outcome("x", &answer(429, "")), Outcome::Retry(_)));
        let timeout = Err(Failure::Timeout(Duration::from_secs(1)));
        assert!(matches!(outcome("x", &timeout), Outcome::Retry(_)));
    }

    #[test]
    fn a_duplicate_conflict_counts_as_delivered_but_other_conflicts_park() {
        assert!(matches!(
            outcome("x", &answer(409, DUPLICATE)),
            Outcome::Delivered(_)
        ));
        assert!(matches!(outcome("x", &answer(409, "{}")), Outcome::Park(_)));
    }

    #[test]
    fn a_client_error_parks_with_its_codes_but_not_its_diagnostics() {
        let Outcome::Park(reason) = outcome("x", &answer(400, INVALID)) else {
            panic!("400 must park");
        };
        assert!(reason.contains("REC_BAD_REQUEST"), "{reason}");
        assert!(!reason.contains("9434765919"), "{reason}");
    }
}
