//! The test PKI for RabbitMQ's TLS listener: a CA, a server certificate
//! for `localhost` and 127.0.0.1, and one client certificate, made with the
//! `openssl` command once and kept under the target directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::host::{find_program, Host};
use crate::proc::{say, Cmd, Failure, Result};

/// The files of the test PKI, all PEM. Keys are unencrypted PKCS#8.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }

    fn complete(&self) -> bool {
        [
            self.ca(),
            self.server_cert(),
            self.server_key(),
            self.client_cert(),
            self.client_key(),
        ]
        .iter()
        .all(|f| f.is_file())
    }
}

/// `openssl req` settings: no prompts, the subject from `-subj`, and the CA's
/// extensions for `req -x509`. Keeps the system's openssl.cnf out of it.
const REQ_CONFIG: &str = "\
[req]
prompt = no
distinguished_name = dn
x509_extensions = ca
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
";

/// Extensions of the certificates the CA signs.
const LEAF_EXTENSIONS: &str = "\
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = DNS:signpost-test-client
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

const DAYS: &str = "3650";

/// The test PKI in `dir`, made if any of its files is missing.
pub fn ensure(host: &mut Host, dir: &Path) -> Result<Pki> {
    let pki = Pki {
        dir: dir.to_owned(),
    };
    if pki.complete() {
        return Ok(pki);
    }
    let openssl = match find_program("openssl") {
        Some(openssl) => openssl,
        None => {
            host.apt_install(&["openssl"], "install openssl: apt-get install openssl")?;
            find_program("openssl").ok_or("openssl is still not found after installing it")?
        }
    };
    say(format!("making the RabbitMQ test PKI in {}", dir.display()));
    // Made aside and moved into place whole, so a half-made PKI is never used.
    let parent = dir.parent().ok_or("the PKI directory has no parent")?;
    let work = parent.join(format!(
        ".{}.tmp-{}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("pki"),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)
        .map_err(|e| Failure::new(format!("cannot create {}: {e}", work.display())))?;
    let made = make(&openssl, &work);
    if let Err(failure) = made {
        let _ = fs::remove_dir_all(&work);
        return Err(failure);
    }
    for leftover in ["req.cnf", "leaf.cnf", "server.csr", "client.csr"] {
        let _ = fs::remove_file(work.join(leftover));
    }
    let _ = fs::remove_dir_all(dir);
    if let Err(e) = fs::rename(&work, dir) {
        let _ = fs::remove_dir_all(&work);
        // Another run may have just put one in place.
        if !pki.complete() {
            return Err(Failure::new(format!(
                "cannot move the test PKI to {}: {e}",
                dir.display()
            )));
        }
    }
    Ok(pki)
}

fn make(openssl: &Path, work: &Path) -> Result {
    let write = |name: &str, text: &str| {
        fs::write(work.join(name), text)
            .map_err(|e| Failure::new(format!("cannot write {}: {e}", work.join(name).display())))
    };
    write("req.cnf", REQ_CONFIG)?;
    write("leaf.cnf", LEAF_EXTENSIONS)?;
    let ssl = || Cmd::new(openssl).dir(work);
    let genkey = |key: &str| {
        ssl()
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .args(["-out", key])
            .output()
            .map(drop)
    };

    genkey("ca.key")?;
    ssl()
        .args([
            "req", "-x509", "-new", "-config", "req.cnf", "-key", "ca.key",
        ])
        .args(["-sha256", "-days", DAYS])
        .args(["-subj", "/CN=Signpost test CA (cargo xtask test)"])
        .args(["-out", "ca.pem"])
        .output()?;

    let base_serial = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    for (i, (name, cn)) in [("server", "localhost"), ("client", "signpost-test-client")]
        .into_iter()
        .enumerate()
    {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        genkey(&key)?;
        ssl()
            .args(["req", "-new", "-config", "req.cnf", "-key", &key])
            .args(["-subj", &format!("/CN={cn}")])
            .args(["-out", &csr])
            .output()?;
        ssl()
            .args([
                "x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key",
            ])
            .args(["-set_serial", &format!("0x{:x}", base_serial + i as u128)])
            .args(["-sha256", "-days", DAYS])
            .args(["-extfile", "leaf.cnf", "-extensions", name])
            .args(["-out", &format!("{name}.pem")])
            .output()?;
    }
    ssl()
        .args(["verify", "-CAfile", "ca.pem", "server.pem", "client.pem"])
        .output()?;
    for key in ["ca.key", "server.key", "client.key"] {
        private(&work.join(key))?;
    }
    Ok(())
}

/// Readable by the owner only.
fn private(path: &Path) -> Result {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(|e| Failure::new(format!("cannot chmod {}: {e}", path.display())))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_a_pki_whose_certificates_chain_to_its_ca_and_keeps_it() {
        let Some(openssl) = find_program("openssl") else {
            eprintln!("no openssl command; skipped");
            return;
        };
        let base = std::env::temp_dir().join(format!("xtask-pki-{}", std::process::id()));
        let dir = base.join("rabbitmq-tls");
        let pki = ensure(&mut Host::default(), &dir).unwrap();
        assert!(pki.complete());
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 6, "{names:?}"); // with ca.key
        let text = |cert: &Path| {
            Cmd::new(&openssl)
                .args(["x509", "-noout", "-text", "-in"])
                .arg(cert)
                .output()
                .unwrap()
        };
        let server = text(&pki.server_cert());
        assert!(
            server.contains("DNS:localhost, IP Address:127.0.0.1"),
            "{server}"
        );
        assert!(server.contains("TLS Web Server Authentication"), "{server}");
        assert!(text(&pki.client_cert()).contains("TLS Web Client Authentication"));
        assert!(text(&pki.ca()).contains("CA:TRUE"));

        // Kept: a second call makes nothing new.
        let before = fs::read(pki.ca()).unwrap();
        ensure(&mut Host::default(), &dir).unwrap();
        assert_eq!(fs::read(pki.ca()).unwrap(), before);
        fs::remove_dir_all(&base).unwrap();
    }
}
