//! [`Secret`]: a setting that never prints (passwords in URLs, webhook secrets, MESH mailbox
//! passwords and keys). Shared by the gateway's settings and the adapters that use them.

use serde::Deserialize;

/// A value that never prints: `Debug` shows `Secret(***)`, and there is no `Display`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}
