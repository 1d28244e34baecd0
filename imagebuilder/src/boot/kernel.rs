//! What qemu boots, read out of the image's FAT boot partition (no mount), by the
//! board config's boot chain for that machine (`[qemu.machine.NAME] boot`):
//! - `firmware-config`: the files the card's `config.txt` and `cmdline.txt` name;
//! - `u-boot`: nothing but U-Boot itself; it reads the card's extlinux.conf (read here
//!   too, only to know which serial port the kernel's console is);
//! - `direct`: the globs and command line of the board config.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::cmdline::{pick_match, BootChain, MachineSpec, DEFAULT_UBOOT};
use super::firmware;
use crate::fatfile;

/// Files and command line for one boot.
#[derive(Debug)]
pub struct BootPlan {
    /// Firmware qemu runs instead of loading a kernel (U-Boot).
    pub bios: Option<PathBuf>,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub dtb: Option<PathBuf>,
    /// The kernel command line armada passes (`firmware-config`, `direct`) or the one
    /// the image's extlinux.conf gives U-Boot (`u-boot`, for the console only).
    pub append: String,
    /// Where each part came from, for the log.
    pub sources: Vec<String>,
}

/// Works out, and copies into `dest`, what `spec` boots from `image`.
pub fn plan(image: &Path, spec: &MachineSpec, dest: &Path) -> Result<BootPlan> {
    let part = fatfile::first_fat_partition(image)
        .with_context(|| format!("finding the boot partition of {}", image.display()))?;
    let read = |name: &str, what: &str| -> Result<Vec<u8>> {
        fatfile::read_file(image, part, name.trim_start_matches('/')).with_context(|| {
            format!(
                "reading the {what} `{name}` from the boot partition of {}",
                image.display()
            )
        })
    };
    let save = |data: &[u8], what: &str| -> Result<PathBuf> {
        let out = dest.join(what);
        std::fs::write(&out, data)
            .with_context(|| format!("writing the {what} to {}", out.display()))?;
        Ok(out)
    };
    let mut sources = Vec::new();
    let mut glob = |g: &str, what: &str| -> Result<PathBuf> {
        let name = resolve_glob(image, part, g)
            .with_context(|| format!("finding the {what} `{g}` on the boot partition"))?;
        let out = save(&read(&name, what)?, what)?;
        sources.push(format!("{what} {name}"));
        Ok(out)
    };
    match spec.boot {
        BootChain::Direct => {
            let kernel_glob = spec.kernel.as_deref().ok_or_else(|| anyhow!("no kernel"))?;
            let kernel = glob(kernel_glob, "kernel")?;
            let initrd = spec
                .initrd
                .as_deref()
                .map(|g| glob(g, "initrd"))
                .transpose()?;
            let dtb = spec.dtb.as_deref().map(|g| glob(g, "dtb")).transpose()?;
            sources.push("command line from the board config's [qemu] section".into());
            Ok(BootPlan {
                bios: None,
                kernel,
                initrd,
                dtb,
                append: spec.append.clone().unwrap_or_default(),
                sources,
            })
        }
        BootChain::FirmwareConfig => {
            let text = String::from_utf8_lossy(&read("config.txt", "firmware configuration")?)
                .into_owned();
            let pi = firmware::read_config_txt(&text).map_err(|e| anyhow!(e))?;
            let kernel = save(&read(&pi.kernel, "kernel")?, "kernel")?;
            let initrd = match &pi.initramfs {
                Some(f) => Some(save(&read(f, "initramfs")?, "initrd")?),
                None => None,
            };
            let cmdline =
                String::from_utf8_lossy(&read(&pi.cmdline_file, "command line")?).into_owned();
            let append = firmware::read_cmdline_txt(&cmdline)
                .map_err(|e| anyhow!("{}: {e}", pi.cmdline_file))?;
            let mut sources = vec![format!(
                "config.txt: kernel {}, initramfs {}, command line {}",
                pi.kernel,
                pi.initramfs.as_deref().unwrap_or("none"),
                pi.cmdline_file
            )];
            let dtb = match (&pi.device_tree, &spec.dtb) {
                (Some(f), _) => {
                    sources.push(format!("device tree {f} (config.txt device_tree=)"));
                    Some(save(&read(f, "device tree")?, "dtb")?)
                }
                (None, Some(g)) => {
                    let name = resolve_glob(image, part, g)?;
                    sources.push(format!(
                        "device tree {name} (board config; the firmware picks it by model)"
                    ));
                    Some(save(&read(&name, "device tree")?, "dtb")?)
                }
                (None, None) => None,
            };
            if !pi.ignored.is_empty() {
                sources.push(format!(
                    "config.txt settings only hardware applies: {}",
                    pi.ignored.join(", ")
                ));
            }
            Ok(BootPlan {
                bios: None,
                kernel,
                initrd,
                dtb,
                append,
                sources,
            })
        }
        BootChain::UBoot => {
            let bios = PathBuf::from(spec.firmware.as_deref().unwrap_or(DEFAULT_UBOOT));
            if !bios.is_file() {
                bail!(
                    "{} is missing: install Debian's u-boot-qemu (ci/host-deps.sh does), or set `firmware` in the board config",
                    bios.display()
                );
            }
            let text =
                String::from_utf8_lossy(&read("extlinux/extlinux.conf", "extlinux configuration")?)
                    .into_owned();
            let label = firmware::read_extlinux(&text).map_err(|e| anyhow!(e))?;
            Ok(BootPlan {
                sources: vec![format!(
                    "U-Boot {} reads extlinux/extlinux.conf: label {}, kernel {}",
                    bios.display(),
                    label.name,
                    label.kernel
                )],
                bios: Some(bios),
                kernel: PathBuf::new(),
                initrd: None,
                dtb: None,
                append: label.append,
            })
        }
    }
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
