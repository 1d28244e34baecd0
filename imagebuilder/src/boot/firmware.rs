//! The card's own boot configuration, read the way its firmware reads it (pure).
//!
//! - `config.txt` (Raspberry Pi firmware): qemu's raspi3b cannot run `start.elf`, so
//!   armada does the part of the firmware's job that picks what to boot: `kernel=`,
//!   `initramfs`, `cmdline=` (default `cmdline.txt`), `device_tree=`, `os_prefix=`,
//!   `arm_64bit=`, with `[all]`/`[pi3]`/`[pi4]`... model filters applied for a Pi 3 B.
//!   What the firmware does beyond that (clocks, memory split, device-tree fixups, the
//!   arguments it adds to the command line) only real hardware shows.
//! - `extlinux/extlinux.conf` (U-Boot distro boot): U-Boot itself reads it under qemu;
//!   armada reads the default label only to know which serial port is the console.

/// What a Pi's firmware would boot, from `config.txt`.
#[derive(Debug, PartialEq, Eq)]
pub struct PiBoot {
    pub kernel: String,
    pub initramfs: Option<String>,
    /// The file holding the kernel command line.
    pub cmdline_file: String,
    /// `device_tree=`, if set (else the board config's `dtb`).
    pub device_tree: Option<String>,
    /// Settings seen but not modelled (printed, so nobody thinks they were used).
    pub ignored: Vec<String>,
}

/// Whether a `[filter]` section applies on a Raspberry Pi 3 Model B.
fn filter_applies_on_pi3b(filter: &str) -> bool {
    match filter.to_ascii_lowercase().as_str() {
        "all" | "pi3" => true,
        "none" | "pi0" | "pi0w" | "pi02" | "pi1" | "pi2" | "pi3+" | "pi4" | "pi400" | "pi5"
        | "pi500" | "cm4" | "cm4s" | "cm5" => false,
        // HDMI, EDID, gpio and serial-number filters: not modelled, taken as matching.
        _ => true,
    }
}

/// Reads `config.txt` as a Pi 3 B's firmware with a 64-bit kernel would.
pub fn read_config_txt(text: &str) -> Result<PiBoot, String> {
    let mut active = true;
    let mut kernel: Option<String> = None;
    let mut initramfs: Option<String> = None;
    let mut cmdline: Option<String> = None;
    let mut device_tree: Option<String> = None;
    let mut os_prefix = String::new();
    let mut arm_64bit = false;
    let mut ignored = Vec::new();
    for raw in text.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(f) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            active = filter_applies_on_pi3b(f.trim());
            continue;
        }
        if !active {
            continue;
        }
        // `initramfs FILE [followkernel|ADDRESS]` is the one space-separated setting.
        if let Some(rest) = line.strip_prefix("initramfs ") {
            let file = rest.split_whitespace().next().unwrap_or("");
            initramfs = Some(file.to_string());
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            ignored.push(line.to_string());
            continue;
        };
        let (key, value) = (key.trim(), value.trim().to_string());
        match key {
            "kernel" => kernel = Some(value),
            "ramfsfile" => initramfs = Some(value),
            "cmdline" => cmdline = Some(value),
            "device_tree" => device_tree = Some(value),
            "os_prefix" => os_prefix = value,
            "arm_64bit" | "arm_control" => arm_64bit = value != "0",
            // enable_uart, upstream_kernel, dtoverlay, gpu_mem...: they set up the
            // hardware, not what is booted; qemu's model stands in for that part.
            _ => ignored.push(line.to_string()),
        }
    }
    if !arm_64bit {
        return Err("config.txt does not set arm_64bit=1: a Pi 3's firmware would start a 32-bit kernel, which an arm64 image does not have".into());
    }
    let with_prefix = |f: String| format!("{os_prefix}{f}");
    Ok(PiBoot {
        kernel: with_prefix(kernel.unwrap_or_else(|| "kernel8.img".into())),
        initramfs: initramfs.map(with_prefix),
        cmdline_file: with_prefix(cmdline.unwrap_or_else(|| "cmdline.txt".into())),
        device_tree: device_tree.map(with_prefix),
        ignored,
    })
}

/// The kernel command line in a `cmdline.txt`: its first line, as the firmware takes it.
pub fn read_cmdline_txt(text: &str) -> Result<String, String> {
    let line = text.lines().next().unwrap_or("").trim().to_string();
    if line.is_empty() {
        return Err("cmdline.txt is empty: the kernel would boot with no root=".into());
    }
    Ok(line)
}

/// The default label of an `extlinux.conf`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ExtlinuxLabel {
    pub name: String,
    pub kernel: String,
    pub initrd: Option<String>,
    pub append: String,
    pub fdtdir: Option<String>,
}

/// The label U-Boot's extlinux support boots: `default NAME`, else the first label.
pub fn read_extlinux(text: &str) -> Result<ExtlinuxLabel, String> {
    let mut default: Option<String> = None;
    let mut labels: Vec<ExtlinuxLabel> = Vec::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once(char::is_whitespace)
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
            .unwrap_or((line.to_ascii_lowercase(), String::new()));
        match key.as_str() {
            "default" => default = Some(value),
            "label" => labels.push(ExtlinuxLabel {
                name: value,
                ..Default::default()
            }),
            _ => {
                let Some(l) = labels.last_mut() else { continue };
                match key.as_str() {
                    "kernel" | "linux" => l.kernel = value,
                    "initrd" => l.initrd = Some(value),
                    "append" => l.append = value,
                    "fdtdir" | "fdt" | "devicetreedir" | "devicetree" => l.fdtdir = Some(value),
                    _ => {}
                }
            }
        }
    }
    let pick = match &default {
        Some(d) => labels.into_iter().find(|l| &l.name == d),
        None => labels.into_iter().next(),
    };
    let label = pick.ok_or_else(|| match default {
        Some(d) => format!("extlinux.conf: `default {d}` names no label"),
        None => "extlinux.conf has no label".to_string(),
    })?;
    if label.kernel.is_empty() {
        return Err(format!(
            "extlinux.conf: label {} names no kernel",
            label.name
        ));
    }
    Ok(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn armada_rpi3_config_txt() {
        let b = read_config_txt(
            "# armada\narm_64bit=1\nenable_uart=1\nupstream_kernel=1\nkernel=vmlinuz-6.12.57+deb13-arm64\ninitramfs initrd.img-6.12.57+deb13-arm64\n",
        )
        .unwrap();
        assert_eq!(b.kernel, "vmlinuz-6.12.57+deb13-arm64");
        assert_eq!(
            b.initramfs.as_deref(),
            Some("initrd.img-6.12.57+deb13-arm64")
        );
        assert_eq!(b.cmdline_file, "cmdline.txt");
        assert_eq!(b.device_tree, None);
        assert!(b.ignored.iter().any(|i| i == "enable_uart=1"));
    }

    #[test]
    fn filters_prefix_and_defaults() {
        let b = read_config_txt(
            "[pi4]\nkernel=wrong.img\n[pi3]\narm_64bit=1\nos_prefix=a/\ncmdline=cl.txt\n[all]\ninitramfs initrd.img followkernel\ndevice_tree=my.dtb\n[none]\nkernel=never\n",
        )
        .unwrap();
        assert_eq!(b.kernel, "a/kernel8.img");
        assert_eq!(b.initramfs.as_deref(), Some("a/initrd.img"));
        assert_eq!(b.cmdline_file, "a/cl.txt");
        assert_eq!(b.device_tree.as_deref(), Some("a/my.dtb"));
    }

    #[test]
    fn a_32_bit_config_is_refused() {
        let e = read_config_txt("kernel=vmlinuz\n[pi4]\narm_64bit=1\n").unwrap_err();
        assert!(e.contains("arm_64bit=1"), "{e}");
    }

    #[test]
    fn cmdline_txt_is_its_first_line() {
        assert_eq!(
            read_cmdline_txt(
                "console=tty0 console=ttyS1,115200 root=LABEL=RASPIROOT rw\n\nignored\n"
            )
            .unwrap(),
            "console=tty0 console=ttyS1,115200 root=LABEL=RASPIROOT rw"
        );
        assert!(read_cmdline_txt("\n").is_err());
    }

    #[test]
    fn extlinux_default_label() {
        let l = read_extlinux(
            "# armada\ndefault armada\ntimeout 1\nlabel old\n    kernel /vmlinuz-6.1\nlabel armada\n    kernel /vmlinuz-6.12\n    initrd /initrd.img-6.12\n    fdtdir /dtbs/\n    append root=LABEL=PINEROOT rw console=tty0 console=ttyS0,115200\n",
        )
        .unwrap();
        assert_eq!(l.kernel, "/vmlinuz-6.12");
        assert_eq!(l.initrd.as_deref(), Some("/initrd.img-6.12"));
        assert_eq!(l.fdtdir.as_deref(), Some("/dtbs/"));
        assert!(l.append.ends_with("console=ttyS0,115200"));
        assert!(read_extlinux("default x\nlabel y\n kernel /k\n").is_err());
        assert!(read_extlinux("label y\n append a\n").is_err());
    }
}
