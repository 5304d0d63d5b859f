//! A RabbitMQ virtual host of one's own, so tests sharing a broker never see each other's
//! queues. Made with `rabbitmqctl`, removed on drop.

use std::process::Command;

pub struct Vhost {
    pub name: String,
    base_url: String,
}

fn rabbitmqctl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|e| format!("rabbitmqctl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "rabbitmqctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Vhost {
    /// A fresh vhost named `<prefix>-<random>`, with full rights for the user in the URL.
    pub fn create(prefix: &str) -> Result<Self, String> {
        let name = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
        Self::create_named(&name)
    }

    /// (Re)create a vhost by name, empty.
    pub fn create_named(name: &str) -> Result<Self, String> {
        let _ = rabbitmqctl(&["-q", "delete_vhost", name]);
        rabbitmqctl(&["-q", "add_vhost", name])?;
        rabbitmqctl(&[
            "-q",
            "set_permissions",
            "-p",
            name,
            "guest",
            ".*",
            ".*",
            ".*",
        ])?;
        let base_url = std::env::var("SIGNPOST_TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
        let base_url = base_url
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .unwrap_or(base_url);
        Ok(Vhost {
            name: name.to_owned(),
            base_url,
        })
    }

    pub fn amqp_url(&self) -> String {
        format!("{}/{}", self.base_url, self.name)
    }

    /// An `amqps://` URL for this vhost: `SIGNPOST_TEST_AMQPS_URL` (set by `cargo xtask test`:
    /// the broker's TLS listener, with the test CA and a client certificate as query parameters)
    /// with its vhost replaced by this one, the query kept. Panics if that variable is unset.
    pub fn amqps_url(&self) -> String {
        let base = match std::env::var("SIGNPOST_TEST_AMQPS_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => panic!(
                "SIGNPOST_TEST_AMQPS_URL is not set: it is an amqps:// URL of a RabbitMQ TLS \
                 listener that requires a client certificate, with cacertfile, certfile and \
                 keyfile. Run the tests with `cargo xtask test`, which sets up that listener \
                 (127.0.0.1:5671) and the variable."
            ),
        };
        with_vhost(&base, &self.name)
    }

    /// Messages ready in a queue of this vhost.
    pub fn queue_depth(&self, queue: &str) -> Option<u64> {
        let out = Command::new("rabbitmqctl")
            .args([
                "-q",
                "list_queues",
                "-p",
                &self.name,
                "name",
                "messages",
                "--no-table-headers",
            ])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next()? == queue).then(|| parts.next()?.parse().ok())?
        })
    }
}

/// `url` with its path (the vhost) replaced by `vhost` (one the tests make: no characters to
/// escape), its query kept.
fn with_vhost(url: &str, vhost: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (url, None),
    };
    let (scheme, rest) = before_query.split_once("://").unwrap_or(("", before_query));
    let authority = rest
        .split_once('/')
        .map_or(rest, |(authority, _)| authority);
    let mut out = format!("{scheme}://{authority}/{vhost}");
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["-q", "delete_vhost", &self.name]);
    }
}

#[cfg(test)]
mod tests {
    use super::with_vhost;

    #[test]
    fn the_vhost_is_replaced_and_the_query_kept() {
        assert_eq!(
            with_vhost(
                "amqps://guest:guest@localhost:5671/%2f?cacertfile=/t/ca.pem&keyfile=/t/c.key",
                "it-1"
            ),
            "amqps://guest:guest@localhost:5671/it-1?cacertfile=/t/ca.pem&keyfile=/t/c.key"
        );
        assert_eq!(
            with_vhost("amqps://localhost:5671", "it-2"),
            "amqps://localhost:5671/it-2"
        );
    }
}
