//! Asking before a disk is overwritten: the prompt shows the device's model and size,
//! and only `yes` goes ahead. Without a terminal to ask on, nothing is written unless
//! `--yes` was given.

use std::io::{BufRead, Write};

use anyhow::{bail, Result};

use super::target::{human_bytes, TargetFacts, TargetKind};

/// The question for `facts`, e.g. "Write x.img to /dev/sdb (Generic SD, 31.9 GB, usb)?".
pub fn question(image: &str, facts: &TargetFacts) -> String {
    let model = if facts.model.is_empty() {
        "unknown model"
    } else {
        &facts.model
    };
    format!(
        "Write {image} to {} ({model}, {}, {})? Everything on it will be lost. Type 'yes' to continue: ",
        facts.path.display(),
        human_bytes(facts.size),
        if facts.transport.is_empty() { "unknown bus" } else { &facts.transport }
    )
}

/// Whether a prompt is needed at all: `--yes` skips it, and a regular file is not a disk.
pub fn needs_asking(facts: &TargetFacts, yes: bool) -> bool {
    !yes && facts.kind != TargetKind::File
}

/// Asks on `out`, reads one line from `input`; `interactive` says whether stdin is a
/// terminal (without one there is nobody to ask).
pub fn ask(
    question: &str,
    interactive: bool,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<()> {
    if !interactive {
        bail!("not writing: no terminal to confirm on (pass --yes to write without asking)");
    }
    let _ = out.write_all(question.as_bytes());
    let _ = out.flush();
    let mut line = String::new();
    input.read_line(&mut line)?;
    match line.trim().to_ascii_lowercase().as_str() {
        "yes" | "y" => Ok(()),
        _ => bail!("not writing: not confirmed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn facts() -> TargetFacts {
        TargetFacts {
            path: PathBuf::from("/dev/sdb"),
            kind: TargetKind::Disk,
            disk: "sdb".into(),
            devno: "8:16".into(),
            serial: String::new(),
            size: 31_914_983_424,
            model: "Generic STORAGE DEVICE".into(),
            removable: true,
            transport: "usb".into(),
            in_use: vec![],
            holds_system: vec![],
        }
    }

    #[test]
    fn question_shows_model_and_size() {
        let q = question("a.img.xz", &facts());
        assert!(
            q.contains("/dev/sdb") && q.contains("Generic STORAGE DEVICE") && q.contains("31.9 GB"),
            "{q}"
        );
    }

    #[test]
    fn only_yes_goes_ahead() {
        let mut out = Vec::new();
        assert!(ask("q? ", true, &mut &b"yes\n"[..], &mut out).is_ok());
        assert_eq!(out, b"q? ");
        assert!(ask("q? ", true, &mut &b"no\n"[..], &mut Vec::new()).is_err());
        assert!(ask("q? ", true, &mut &b""[..], &mut Vec::new()).is_err());
        let err = ask("q? ", false, &mut &b"yes\n"[..], &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--yes"), "{err}");
    }

    #[test]
    fn files_and_yes_skip_the_question() {
        assert!(needs_asking(&facts(), false));
        assert!(!needs_asking(&facts(), true));
        let mut f = facts();
        f.kind = TargetKind::File;
        assert!(!needs_asking(&f, false));
    }
}
