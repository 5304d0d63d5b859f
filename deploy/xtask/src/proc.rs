//! Running external commands: echoing each command line (`xtask: $ ...`),
//! checking its exit status, and the [`Failure`] error type every task
//! returns so that `main` can turn it into a message and an exit code.

use std::env;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// Why a task stopped: a message for the user and the exit code to end with.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl Failure {
    /// A failure that ends the process with exit code 1.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 1,
        }
    }

    /// Appends a hint line telling the user what to do about it.
    pub fn hint(mut self, hint: impl fmt::Display) -> Self {
        self.message.push_str(&format!("\n  hint: {hint}"));
        self
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

pub type Result<T = ()> = std::result::Result<T, Failure>;

/// Prints one progress line, prefixed `xtask:`, on stderr.
pub fn say(message: impl fmt::Display) {
    eprintln!("xtask: {message}");
}

/// An external command, built up and then run with its command line echoed.
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    dir: Option<PathBuf>,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            envs: Vec::new(),
            dir: None,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_owned());
        self
    }

    /// The command line as a shell would take it: `K=V program args`.
    pub fn display(&self) -> String {
        let mut words: Vec<String> = self
            .envs
            .iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), quote(v)))
            .collect();
        words.push(quote(&self.program));
        words.extend(self.args.iter().map(|a| quote(a)));
        words.join(" ")
    }

    fn echo(&self) {
        match &self.dir {
            Some(dir) => say(format!("$ {}   (in {})", self.display(), dir.display())),
            None => say(format!("$ {}", self.display())),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        // `cargo run` gives xtask the variables describing the xtask
        // package itself; they mean nothing to the commands we start.
        for (key, _) in env::vars_os() {
            if is_xtask_package_var(&key) {
                command.env_remove(key);
            }
        }
        command.envs(self.envs.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        command
    }

    /// Runs with inherited stdio; fails (with the child's exit code) unless
    /// it exits successfully.
    pub fn run(&self) -> Result {
        self.echo();
        let status = self
            .command()
            .status()
            .map_err(|e| self.spawn_failure(&e))?;
        self.check(status)
    }

    /// Runs with stdout captured (stderr inherited) and returns stdout.
    pub fn output(&self) -> Result<String> {
        self.echo();
        let output = self
            .command()
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| self.spawn_failure(&e))?;
        self.check(output.status)?;
        String::from_utf8(output.stdout)
            .map_err(|_| Failure::new(format!("`{}` printed non-UTF-8 output", self.display())))
    }

    fn check(&self, status: ExitStatus) -> Result {
        if status.success() {
            return Ok(());
        }
        Err(Failure {
            message: format!("command failed ({}): {}", describe(status), self.display()),
            code: exit_code(status),
        })
    }

    fn spawn_failure(&self, error: &io::Error) -> Failure {
        let program = self.program.to_string_lossy();
        if error.kind() == io::ErrorKind::NotFound {
            if Path::new(&self.program).components().count() > 1 {
                Failure::new(format!("`{program}` does not exist"))
            } else {
                Failure::new(format!(
                    "`{program}` not found; is it installed and on PATH?"
                ))
            }
        } else {
            Failure::new(format!("could not run `{}`: {error}", self.display()))
        }
    }
}

/// Variables `cargo run` sets that describe the xtask package itself.
fn is_xtask_package_var(key: &OsStr) -> bool {
    let Some(key) = key.to_str() else {
        return false;
    };
    key.starts_with("CARGO_PKG_")
        || matches!(
            key,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
        )
}

/// Describes how a process ended, e.g. `exit status 101`.
pub fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    status.to_string()
}

/// The exit code xtask should end with after a child ended with `status`:
/// the child's own code, or 128 + signal number if it was killed.
pub fn exit_code(status: ExitStatus) -> u8 {
    if status.success() {
        return 0;
    }
    if let Some(code) = status.code() {
        return u8::try_from(code).ok().filter(|&c| c != 0).unwrap_or(1);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return u8::try_from(128 + signal).unwrap_or(1);
        }
    }
    1
}

/// Quotes a word for display if a shell would need it.
fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_only_what_a_shell_needs() {
        let cmd = Cmd::new("cargo").args(["test", "--", "it's here", ""]).env(
            "SIGNPOST_TEST_AMQP_URL",
            "amqp://guest:guest@127.0.0.1:5672/%2f",
        );
        assert_eq!(
            cmd.display(),
            "SIGNPOST_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo test -- 'it'\\''s here' ''"
        );
    }

    #[cfg(unix)]
    #[test]
    fn exit_code_follows_the_child() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(101 << 8)), 101);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }
}
