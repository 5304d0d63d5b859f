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

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["-q", "delete_vhost", &self.name]);
    }
}
