//! Thermal zones: `/sys/class/thermal/thermal_zone*/temp` (millidegrees) with the
//! zone's `type` (`cpu-thermal` on a Pi, `cpu0-thermal`/`gpu0-thermal` on a Pine64).
//! The zone list is found once and kept; a vanished zone triggers a new search.

use std::fs;
use std::path::{Path, PathBuf};

use protocol::snapshot::ThermalZone;

use super::pseudofile::{parse_i64, trim, PseudoFile, ReadError};

#[derive(Debug)]
pub struct Zone {
    pub zone: String,
    pub kind: String,
    pub dir: PathBuf,
}

/// The thermal zones under `root`, in zone-number order; none on most VMs.
pub fn discover(root: &Path, file: &mut PseudoFile) -> Vec<Zone> {
    let base = root.join("sys/class/thermal");
    let Ok(entries) = fs::read_dir(&base) else {
        return Vec::new();
    };
    let mut zones: Vec<(u32, Zone)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n: u32 = name.strip_prefix("thermal_zone")?.parse().ok()?;
            let dir = e.path();
            let kind = file.read_string(&dir, "type").unwrap_or_default();
            Some((
                n,
                Zone {
                    zone: name,
                    kind,
                    dir,
                },
            ))
        })
        .collect();
    zones.sort_by_key(|(n, _)| *n);
    zones.into_iter().map(|(_, z)| z).collect()
}

/// Reads each zone's temperature into `out`; failures go to `warn`. Returns false when
/// a zone has vanished (the caller should discover again).
pub fn read(
    zones: &[Zone],
    file: &mut PseudoFile,
    out: &mut Vec<ThermalZone>,
    warn: &mut dyn FnMut(ReadError),
) -> bool {
    out.clear();
    let mut intact = true;
    for z in zones {
        match file.read_record(&z.dir, "temp") {
            Ok(bytes) => match parse_i64(trim(bytes)) {
                Some(milli) => out.push(ThermalZone {
                    zone: z.zone.clone(),
                    kind: z.kind.clone(),
                    celsius: milli as f64 / 1000.0,
                }),
                None => warn(ReadError::parse(file.last_path(), "expected millidegrees")),
            },
            Err(e) if e.is_missing() => intact = false,
            Err(e) => warn(e),
        }
    }
    intact
}
