//! The Python virtualenv some tests drive: `<target-dir>/venv`, kept in
//! step with `tests/requirements.txt` through a stamp file.

use std::fs;
use std::path::PathBuf;

use crate::paths::Paths;
use crate::proc::{say, Cmd, Failure, Result};

/// If the workspace has `tests/requirements.txt`, makes sure the venv exists
/// with those requirements installed, and returns its Python interpreter.
pub fn ensure_venv(paths: &Paths) -> Result<Option<PathBuf>> {
    let requirements = paths.workspace.join("tests").join("requirements.txt");
    if !requirements.is_file() {
        return Ok(None);
    }
    let venv = paths.target.join("venv");
    let python = venv.join("bin").join("python");
    if !python.exists() {
        fs::create_dir_all(&paths.target)
            .map_err(|e| Failure::new(format!("cannot create {}: {e}", paths.target.display())))?;
        Cmd::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .run()
            .map_err(|f| {
                f.hint("install Python 3 with venv support (e.g. `apt-get install python3-venv`)")
            })?;
    }

    let wanted = fs::read(&requirements)
        .map_err(|e| Failure::new(format!("cannot read {}: {e}", requirements.display())))?;
    let stamp = venv.join(".requirements.stamp");
    if fs::read(&stamp).ok().as_deref() == Some(wanted.as_slice()) {
        say(format!("Python venv {} is up to date", venv.display()));
    } else {
        Cmd::new(&python)
            .args(["-m", "pip", "install", "-r"])
            .arg(&requirements)
            .run()?;
        fs::write(&stamp, &wanted)
            .map_err(|e| Failure::new(format!("cannot write {}: {e}", stamp.display())))?;
    }
    Ok(Some(python))
}
