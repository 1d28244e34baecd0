//! hwmon sensors: `/sys/class/hwmon/hwmonN/{name, <kind><n>_input, _label, *_alarm}`.
//! Values are scaled to base units (celsius, volts, amperes, watts, rpm). The Raspberry
//! Pi's `rpi_volt` device has no value at all, only `in0_lcrit_alarm`: under-voltage
//! seen within the driver's last poll.

use std::fs;
use std::path::{Path, PathBuf};

use protocol::snapshot::HwmonSensor;

use super::pseudofile::{parse_i64, trim, PseudoFile, ReadError};

/// One sensor: its chip, stem (`temp1`, `in0`), files and the divisor to base units.
#[derive(Debug)]
pub struct Sensor {
    pub chip: String,
    pub sensor: String,
    pub label: Option<String>,
    dir: PathBuf,
    input: Option<String>,
    alarms: Vec<String>,
    divisor: f64,
}

/// Divisor from sysfs units to base units for a sensor kind; `None` for kinds we skip.
pub fn divisor(kind: &str) -> Option<f64> {
    Some(match kind {
        "temp" | "in" | "curr" | "humidity" => 1000.0,
        "power" | "energy" => 1_000_000.0,
        "fan" => 1.0,
        _ => return None,
    })
}

/// Splits `in0_lcrit_alarm` into (`in`, `in0`, `lcrit_alarm`).
fn split_attr(file: &str) -> Option<(&str, &str, &str)> {
    let kind_end = file.find(|c: char| c.is_ascii_digit())?;
    let underscore = kind_end + file[kind_end..].find('_')?;
    let digits = &file[kind_end..underscore];
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((
        &file[..kind_end],
        &file[..underscore],
        &file[underscore + 1..],
    ))
}

/// Every sensor under `root/sys/class/hwmon`, sorted by chip folder then stem.
pub fn discover(root: &Path, file: &mut PseudoFile) -> Vec<Sensor> {
    let base = root.join("sys/class/hwmon");
    let Ok(entries) = fs::read_dir(&base) else {
        return Vec::new();
    };
    let mut chips: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            Some((
                e.file_name()
                    .to_str()?
                    .strip_prefix("hwmon")?
                    .parse()
                    .ok()?,
                e.path(),
            ))
        })
        .collect();
    chips.sort_by_key(|(n, _)| *n);
    let mut sensors = Vec::new();
    for (n, dir) in chips {
        // Old drivers keep `name` on the parent device.
        let chip = file
            .read_string(&dir, "name")
            .or_else(|_| file.read_string(&dir.join("device"), "name"))
            .unwrap_or_else(|_| format!("hwmon{n}"));
        let Ok(files) = fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<String> = files
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        let mut chip_sensors: Vec<Sensor> = Vec::new();
        for name in &names {
            let Some((kind, stem, attr)) = split_attr(name) else {
                continue;
            };
            let Some(div) = divisor(kind) else { continue };
            if attr != "input" && !attr.ends_with("alarm") {
                continue;
            }
            let idx = match chip_sensors.iter().position(|s| s.sensor == stem) {
                Some(i) => i,
                None => {
                    chip_sensors.push(Sensor {
                        chip: chip.clone(),
                        sensor: stem.to_string(),
                        label: None,
                        dir: dir.clone(),
                        input: None,
                        alarms: Vec::new(),
                        divisor: div,
                    });
                    chip_sensors.len() - 1
                }
            };
            let s = &mut chip_sensors[idx];
            if attr == "input" {
                s.input = Some(name.clone());
            } else {
                s.alarms.push(name.clone());
            }
        }
        for s in &mut chip_sensors {
            let label_file = format!("{}_label", s.sensor);
            s.label = file
                .read_string(&dir, &label_file)
                .ok()
                .filter(|l| !l.is_empty());
        }
        sensors.extend(chip_sensors);
    }
    sensors
}

/// Reads every sensor into `out`; returns false when one vanished.
pub fn read(
    sensors: &[Sensor],
    file: &mut PseudoFile,
    out: &mut Vec<HwmonSensor>,
    warn: &mut dyn FnMut(ReadError),
) -> bool {
    out.clear();
    let mut intact = true;
    for s in sensors {
        let mut value = None;
        if let Some(input) = &s.input {
            match file.read_record(&s.dir, input) {
                Ok(bytes) => value = parse_i64(trim(bytes)).map(|v| v as f64 / s.divisor),
                Err(e) if e.is_missing() => intact = false,
                // Some drivers answer EIO/ENODATA while a sensor is idle: absent this cycle.
                Err(e) => warn(e),
            }
        }
        let mut alarm = None;
        for a in &s.alarms {
            match file.read_record(&s.dir, a) {
                Ok(bytes) => {
                    let raised = trim(bytes) != b"0";
                    alarm = Some(alarm.unwrap_or(false) || raised);
                }
                Err(e) if e.is_missing() => intact = false,
                Err(e) => warn(e),
            }
        }
        if value.is_none() && alarm.is_none() {
            continue;
        }
        out.push(HwmonSensor {
            chip: s.chip.clone(),
            sensor: s.sensor.clone(),
            label: s.label.clone(),
            value,
            alarm,
        });
    }
    intact
}

/// The `rpi_volt` under-voltage alarm among read sensors, if the board has one.
pub fn rpi_under_voltage(sensors: &[HwmonSensor]) -> Option<bool> {
    sensors
        .iter()
        .find(|s| s.chip == "rpi_volt" && s.sensor == "in0")
        .and_then(|s| s.alarm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_names_split_into_kind_stem_and_attribute() {
        assert_eq!(
            split_attr("in0_lcrit_alarm"),
            Some(("in", "in0", "lcrit_alarm"))
        );
        assert_eq!(
            split_attr("temp12_input"),
            Some(("temp", "temp12", "input"))
        );
        assert_eq!(split_attr("name"), None);
        assert_eq!(split_attr("uevent"), None);
    }
}
