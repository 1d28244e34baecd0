//! Thermal cooling devices: `/sys/class/thermal/cooling_deviceN/{type,cur_state,max_state}`
//! (a CPU frequency cap, a fan). A Pi on the mainline kernel throttles through
//! `cpufreq-cpu0` here; `cur_state` above 0 means it is cooling.

use std::fs;
use std::path::{Path, PathBuf};

use protocol::snapshot::CoolingDevice;

use super::pseudofile::{PseudoFile, ReadError};

#[derive(Debug)]
pub struct Device {
    pub device: String,
    pub kind: String,
    pub dir: PathBuf,
}

/// The cooling devices under `root`, in device-number order.
pub fn discover(root: &Path, file: &mut PseudoFile) -> Vec<Device> {
    let Ok(entries) = fs::read_dir(root.join("sys/class/thermal")) else {
        return Vec::new();
    };
    let mut found: Vec<(u32, Device)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n: u32 = name.strip_prefix("cooling_device")?.parse().ok()?;
            let dir = e.path();
            let kind = file.read_string(&dir, "type").unwrap_or_default();
            Some((
                n,
                Device {
                    device: name,
                    kind,
                    dir,
                },
            ))
        })
        .collect();
    found.sort_by_key(|(n, _)| *n);
    found.into_iter().map(|(_, d)| d).collect()
}

/// Reads every device's states into `out`; returns false when one vanished.
pub fn read(
    devices: &[Device],
    file: &mut PseudoFile,
    out: &mut Vec<CoolingDevice>,
    warn: &mut dyn FnMut(ReadError),
) -> bool {
    out.clear();
    let mut intact = true;
    for d in devices {
        let mut state = |name: &str| match file.read_u64(&d.dir, name) {
            Ok(v) => v,
            Err(e) => {
                if e.is_missing() {
                    intact = false;
                } else {
                    warn(e);
                }
                None
            }
        };
        let (Some(cur_state), Some(max_state)) = (state("cur_state"), state("max_state")) else {
            continue;
        };
        out.push(CoolingDevice {
            device: d.device.clone(),
            kind: d.kind.clone(),
            cur_state,
            max_state,
        });
    }
    intact
}
