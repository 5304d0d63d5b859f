//! Where things are: the workspace root, the cargo target directory, the
//! cargo executable, and the `cargo` commands run inside the workspace.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::proc::{Cmd, Failure, Result};

pub struct Paths {
    /// The workspace root (the directory holding the root `Cargo.toml`).
    pub workspace: PathBuf,
    /// The cargo target directory, absolute.
    pub target: PathBuf,
    /// Whether `target` came from `CARGO_TARGET_DIR` (and so must be passed
    /// on, made absolute, to the cargo commands we run).
    target_from_env: bool,
    /// The cargo executable: `$CARGO`, else `cargo` from PATH.
    cargo: OsString,
}

impl Paths {
    pub fn discover() -> Result<Self> {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let workspace = manifest_dir.join("..").join("..");
        let workspace = workspace.canonicalize().map_err(|e| {
            Failure::new(format!(
                "cannot find the workspace root at {}: {e}",
                workspace.display()
            ))
        })?;

        let (target, target_from_env) = match env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => {
                let dir = PathBuf::from(dir);
                // Cargo reads a relative CARGO_TARGET_DIR against the
                // directory it was started in, which is ours too.
                let dir = if dir.is_absolute() {
                    dir
                } else {
                    env::current_dir()
                        .map_err(|e| {
                            Failure::new(format!("cannot read the current directory: {e}"))
                        })?
                        .join(dir)
                };
                (dir, true)
            }
            _ => (workspace.join("target"), false),
        };

        let cargo = env::var_os("CARGO")
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| OsString::from("cargo"));

        Ok(Self {
            workspace,
            target,
            target_from_env,
            cargo,
        })
    }

    /// A binary built by `cargo build` in the dev profile.
    pub fn debug_bin(&self, name: &str) -> PathBuf {
        self.target
            .join("debug")
            .join(format!("{name}{}", env::consts::EXE_SUFFIX))
    }

    /// `cargo <args>`, run in the workspace root.
    pub fn cargo<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let cmd = Cmd::new(&self.cargo).args(args).dir(&self.workspace);
        if self.target_from_env {
            cmd.env("CARGO_TARGET_DIR", &self.target)
        } else {
            cmd
        }
    }
}
