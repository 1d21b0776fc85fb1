//! Output helpers shared by the commands: JSON on stdout, human-readable sizes, and
//! `format-specific` trees printed the way `qemu-img info` prints them.

use std::io::{self, Write};

use serde::Serialize;

/// Writes `value` as pretty JSON plus a newline on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> io::Result<()> {
    write_json(&mut io::stdout().lock(), value)
}

/// Writes `value` as pretty JSON and a newline to `out`.
pub fn write_json<T: Serialize + ?Sized>(out: &mut dyn Write, value: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::other)?;
    writeln!(out)
}

/// A byte count as `qemu-img` prints it: three significant digits and a binary unit.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes} B");
    }
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text} {}", UNITS[unit])
}

/// Prints a JSON tree as indented `key: value` lines, with dashes in keys shown as spaces
/// (`compression-type` becomes `compression type`), as `qemu-img info` does.
pub fn write_tree(out: &mut dyn Write, value: &serde_json::Value, indent: usize) -> io::Result<()> {
    use serde_json::Value;
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let key = key.replace('-', " ");
                match v {
                    Value::Object(_) | Value::Array(_) => {
                        writeln!(out, "{pad}{key}:")?;
                        write_tree(out, v, indent + 4)?;
                    }
                    _ => writeln!(out, "{pad}{key}: {}", scalar(v))?,
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::Object(_) | Value::Array(_) => {
                        writeln!(out, "{pad}[{i}]:")?;
                        write_tree(out, item, indent + 4)?;
                    }
                    _ => writeln!(out, "{pad}[{i}]: {}", scalar(item))?,
                }
            }
        }
        other => writeln!(out, "{pad}{}", scalar(other))?,
    }
    Ok(())
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_look_like_qemu_img() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(200_704), "196 KiB");
        assert_eq!(human_size(1 << 30), "1 GiB");
        assert_eq!(human_size(67_125_248), "64 MiB");
        assert_eq!(human_size(3_758_096_384), "3.5 GiB");
    }
}
