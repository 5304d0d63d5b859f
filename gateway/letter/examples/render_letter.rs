//! Renders the reference outcome letter (a made-up test patient and the example message a
//! scheme sends) as `outcome-letter.pdf`, `.html` and `.txt` in the directory given as the
//! only argument. `fixtures/letters/README.md` says how the fixtures are regenerated.

use std::path::PathBuf;
use std::process::ExitCode;

use signpost_letter::Letter;

/// The reference letter's inputs are the integration tests' own: one place says what they are.
#[path = "../tests/common/mod.rs"]
mod common;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: render_letter OUTPUT_DIR");
        return ExitCode::from(2);
    };
    let letter = Letter::new(&common::composition(), &common::context());
    let outputs = [
        ("outcome-letter.pdf", letter.to_pdf()),
        ("outcome-letter.html", letter.to_html().into_bytes()),
        ("outcome-letter.txt", letter.to_text().into_bytes()),
    ];
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for (name, bytes) in outputs {
        let path = dir.join(name);
        if let Err(e) = std::fs::write(&path, bytes) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
