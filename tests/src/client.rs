//! A small HTTP client for FHIR JSON over plain HTTP (loopback).

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client as HyperClient};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
}

/// An answer: status, headers, and the body as JSON (or `Value::Null` when it is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Value,
    /// The body as text (lossy UTF-8), for answers that are not JSON (metrics).
    pub text: String,
}

impl Reply {
    /// `(issue code, REC code)` of an OperationOutcome answer.
    pub fn outcome_codes(&self) -> (String, String) {
        let issue = &self.body["issue"][0];
        (
            issue["code"].as_str().unwrap_or("").to_owned(),
            issue["details"]["coding"][0]["code"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        )
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    pub fn new() -> Self {
        Client {
            inner: HyperClient::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// A client that speaks HTTP/2 only (prior knowledge, cleartext).
    pub fn http2() -> Self {
        Client {
            inner: HyperClient::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = self
            .inner
            .request(req)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let version = resp.version();
        let headers = resp.headers().clone();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            version,
            headers,
            body,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    pub async fn get(&self, url: &str) -> Result<Reply, String> {
        self.send(
            "GET",
            url,
            &[("accept", "application/fhir+json")],
            Vec::new(),
        )
        .await
    }

    /// POST a JSON body.
    pub async fn post_json(&self, url: &str, body: &Value) -> Result<Reply, String> {
        self.send(
            "POST",
            url,
            &[("content-type", "application/json")],
            body.to_string().into_bytes(),
        )
        .await
    }

    /// POST a FHIR message with fresh or given BaRS ids.
    pub async fn process_message(
        &self,
        base: &str,
        request_id: &str,
        correlation_id: &str,
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        self.send(
            "POST",
            &format!("{base}/$process-message"),
            &[
                ("content-type", "application/fhir+json; charset=utf-8"),
                ("accept", "application/fhir+json; version=1.1.0"),
                ("x-request-id", request_id),
                ("x-correlation-id", correlation_id),
            ],
            body,
        )
        .await
    }
}
