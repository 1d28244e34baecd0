//! The kernel, initrd and device tree qemu loads, read out of the image's FAT boot
//! partition (no mount) by the globs of the board config's `[qemu.machine.NAME]`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::cmdline::{pick_match, MachineSpec};
use crate::fatfile;

/// Boot files copied out of the image.
#[derive(Debug)]
pub struct BootFiles {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub dtb: Option<PathBuf>,
    /// The names inside the FAT partition that matched, for the log.
    pub matched: Vec<String>,
}

/// Copies the boot files named by `spec` from `image` into `dest`.
pub fn extract(image: &Path, spec: &MachineSpec, dest: &Path) -> Result<BootFiles> {
    let part = fatfile::first_fat_partition(image)
        .with_context(|| format!("finding the boot partition of {}", image.display()))?;
    let mut matched = Vec::new();
    let mut fetch = |glob: &str, what: &str| -> Result<PathBuf> {
        let name = resolve_glob(image, part, glob)
            .with_context(|| format!("finding the {what} `{glob}` on the boot partition"))?;
        let data = fatfile::read_file(image, part, &name)
            .with_context(|| format!("reading the {what} {name} from {}", image.display()))?;
        let out = dest.join(what);
        std::fs::write(&out, &data)
            .with_context(|| format!("writing the {what} to {}", out.display()))?;
        matched.push(name);
        Ok(out)
    };
    let kernel = fetch(&spec.kernel, "kernel")?;
    let initrd = spec
        .initrd
        .as_deref()
        .map(|g| fetch(g, "initrd"))
        .transpose()?;
    let dtb = spec.dtb.as_deref().map(|g| fetch(g, "dtb")).transpose()?;
    Ok(BootFiles {
        kernel,
        initrd,
        dtb,
        matched,
    })
}

/// The FAT path a glob (`vmlinuz-*`, `allwinner/sun50i-*.dtb`) names; wildcards only in
/// the last component.
fn resolve_glob(image: &Path, part: fatfile::PartitionSpan, glob: &str) -> Result<String> {
    let glob = glob.trim_start_matches('/');
    let (dir, pattern) = match glob.rfind('/') {
        Some(i) => (&glob[..i], &glob[i + 1..]),
        None => ("", glob),
    };
    if dir.contains(['*', '?']) {
        bail!("wildcards are only allowed in the file name, not in the folder `{dir}`");
    }
    let entries = fatfile::list_dir(image, part, dir).with_context(|| {
        format!(
            "listing `{}` on the boot partition",
            if dir.is_empty() { "/" } else { dir }
        )
    })?;
    let names: Vec<String> = entries
        .iter()
        .filter(|e| !e.is_dir)
        .map(|e| e.name.clone())
        .collect();
    match pick_match(pattern, &names) {
        Some(name) if dir.is_empty() => Ok(name.to_string()),
        Some(name) => Ok(format!("{dir}/{name}")),
        None => {
            let mut shown = names.clone();
            shown.sort();
            shown.truncate(30);
            bail!("no file matches; the folder holds: {}", shown.join(", "))
        }
    }
}
