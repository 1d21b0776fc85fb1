//! python-openstackclient: reading `openstack image show -f json` and writing the
//! `openstack image create` command line equivalent to a Glance body.
//!
//! `image show` keeps `checksum`, `size`, `virtual_size` and the other schema fields at the top
//! level, but `os_hash_algo`, `os_hash_value` and `os_hidden` end up inside `properties`
//! (`_format_image` uses `original_names=True`, and those names are not in `fields_to_show`;
//! `reference/cloud-metadata.md` §1). Current clients print `properties` as a JSON object; old
//! ones printed osc-lib's `format_dict` string, `key='value', key2='value2'` (keys sorted,
//! `None` as `key=`), which [`parse_format_dict`] reads back. Top-level values win over
//! `properties`, since a newer client may print them in both places.

use serde_json::{Map, Value};

use super::glance;
use super::lenient::Object;
use super::metadata::MetadataDocument;
use super::record::{ImageRecord, RecordSource};
use super::rules::{RuleViolations, Target, Violations};

/// The fields that may sit under `properties` (extra properties such as `img_signature*`
/// always do).
const PROPERTY_FIELDS: [&str; 7] = [
    "os_hash_algo",
    "os_hash_value",
    "os_hidden",
    "img_signature",
    "img_signature_hash_method",
    "img_signature_key_type",
    "img_signature_certificate_uuid",
];

/// Reads `openstack image show -f json` output.
pub fn parse(obj: &Object) -> ImageRecord {
    let mut merged = obj.clone();
    let properties = match obj.get("properties") {
        Some(Value::Object(m)) => m.clone(),
        Some(Value::String(s)) => parse_format_dict(s),
        _ => Map::new(),
    };
    for key in PROPERTY_FIELDS {
        let top_is_empty = matches!(merged.get(key), None | Some(Value::Null));
        if top_is_empty && let Some(v) = properties.get(key) {
            merged.insert(key.to_string(), v.clone());
        }
    }
    if !merged.contains_key("os_distro")
        && let Some(v) = properties.get("os_distro")
    {
        merged.insert("os_distro".into(), v.clone());
    }
    glance::read_common(&merged, RecordSource::OpenstackCli)
}

/// Parses osc-lib's `utils.format_dict` rendering: `k1='v1', k2='v2', k3=` (a `None` value is
/// `k=` with nothing after it). Values are not escaped by osc-lib, so a value is taken to end
/// at the first `'` that is followed by `, ` and another `key=`, or by the end. Nested dicts
/// were flattened to `parent.child` keys and stay so.
pub fn parse_format_dict(s: &str) -> Map<String, Value> {
    let mut out = Map::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().to_string();
        let after = &rest[eq + 1..];
        if let Some(quoted) = after.strip_prefix('\'') {
            let end = value_end(quoted);
            out.insert(key, Value::String(quoted[..end].to_string()));
            rest = quoted[end..].strip_prefix('\'').unwrap_or("");
        } else {
            let end = after.find(", ").unwrap_or(after.len());
            let raw = after[..end].trim();
            out.insert(
                key,
                if raw.is_empty() {
                    Value::Null
                } else {
                    Value::String(raw.to_string())
                },
            );
            rest = &after[end..];
        }
        rest = rest.strip_prefix(", ").unwrap_or(rest).trim_start();
    }
    out
}

/// The end of a quoted `format_dict` value: the first `'` followed by `, key=` or the end.
fn value_end(quoted: &str) -> usize {
    let mut search = 0;
    while let Some(i) = quoted[search..].find('\'').map(|i| i + search) {
        let tail = &quoted[i + 1..];
        if tail.trim().is_empty() {
            return i;
        }
        if let Some(next) = tail.strip_prefix(", ")
            && let Some(eq) = next.find('=')
            && next[..eq]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':'))
        {
            return i;
        }
        search = i + 1;
    }
    quoted.len()
}

/// The `openstack image create` arguments (without the leading `openstack`) equivalent to a
/// Glance body, uploading `file`. Follows python-openstackclient's `CreateImage`: visibility
/// as `--private`/`--public`/`--community`/`--shared`, extra properties as `--property k=v`,
/// and the name as the final positional argument (after `--` when it starts with `-`). The
/// client has no `--checksum` (a dead option): the digests stay in the sidecar.
pub fn image_create_args(
    doc: &MetadataDocument,
    file: &str,
) -> Result<Vec<String>, RuleViolations> {
    let mut v = Violations::new(doc.target);
    if doc.target != Target::Glance {
        v.push(
            "openstack-command",
            "target",
            "the openstack image create command line exists for glance only",
        );
    }
    let name = doc.body.get("name").and_then(Value::as_str);
    if name.is_none() {
        v.push(
            "name-required",
            "name",
            "openstack image create needs the image name (--name)",
        );
    }
    v.finish()?;
    let mut args: Vec<String> = vec!["image".into(), "create".into()];
    for (key, value) in &doc.body {
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match key.as_str() {
            "name" => {}
            "disk_format" | "container_format" | "min_disk" | "min_ram" => {
                args.push(format!("--{}", key.replace('_', "-")));
                args.push(text);
            }
            "visibility" => args.push(format!("--{text}")),
            "protected" => {
                if value.as_bool() == Some(true) {
                    args.push("--protected".into());
                }
            }
            "tags" => {
                for tag in value.as_array().into_iter().flatten() {
                    args.push("--tag".into());
                    args.push(tag.as_str().unwrap_or_default().to_string());
                }
            }
            _ => {
                args.push("--property".into());
                args.push(format!("{key}={text}"));
            }
        }
    }
    args.push("--file".into());
    args.push(file.to_string());
    let name = name.unwrap_or_default();
    if name.starts_with('-') {
        args.push("--".into());
    }
    args.push(name.to_string());
    Ok(args)
}

/// Quotes one word for a POSIX shell: unchanged when it is made only of characters no shell
/// treats specially, otherwise in single quotes with each `'` written as `'\''`.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '-' | '_' | '.' | '/' | '=' | ':' | ',' | '+' | '@' | '%')
        });
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `openstack` followed by `args`, each shell-quoted, as one line.
pub fn command_line(args: &[String]) -> String {
    std::iter::once("openstack".to_string())
        .chain(args.iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::record::Recorded;
    use crate::cloud::{MetadataOptions, build};
    use crate::facts::ImageFacts;
    use crate::format::ImageFormat;
    use serde_json::json;

    #[test]
    fn format_dict_strings_from_old_clients_are_read_back() {
        let m = parse_format_dict(
            "os_hash_algo='sha512', os_hash_value='abc', os_hidden='False', stores=, weird='it's, x'",
        );
        assert_eq!(m["os_hash_algo"], json!("sha512"));
        assert_eq!(m["os_hash_value"], json!("abc"));
        assert_eq!(m["os_hidden"], json!("False"));
        assert_eq!(m["stores"], Value::Null);
        assert_eq!(m["weird"], json!("it's, x"));
    }

    #[test]
    fn format_dict_never_panics_on_garbage() {
        for s in ["", "=", "'", "a='", "a=', b", ",,,", "a=b, c", "é='ü', ='"] {
            let _ = parse_format_dict(s);
        }
    }

    #[test]
    fn hashes_under_properties_are_read_whether_dict_or_string() {
        let hex = "a".repeat(128);
        let as_dict = json!({"id": "1", "properties": {"os_hash_algo": "sha512", "os_hash_value": hex, "os_hidden": false}});
        let as_string = json!({"id": "1", "properties": format!("os_hash_algo='sha512', os_hash_value='{hex}', os_hidden='False'")});
        for v in [as_dict, as_string] {
            let r = parse(v.as_object().unwrap());
            assert_eq!(r.os_hash_algo, Recorded::Value("sha512".into()));
            assert_eq!(r.os_hash_value, Recorded::Value(hex.clone()));
            assert_eq!(r.os_hidden, Some(false));
        }
    }

    #[test]
    fn shell_quoting_survives_quotes_and_spaces() {
        assert_eq!(shell_quote("qcow2"), "qcow2");
        assert_eq!(shell_quote("my image"), "'my image'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[test]
    fn the_create_command_carries_every_body_field() {
        let facts = ImageFacts::new(ImageFormat::Qcow2, 1, Some(1 << 30), None);
        let opts = MetadataOptions {
            name: Some("-odd name".into()),
            visibility: Some("private".into()),
            protected: true,
            tags: vec!["golden".into()],
            os_distro: Some("ubuntu".into()),
            ..Default::default()
        };
        let doc = build(Target::Glance, &facts, &opts).unwrap();
        let line = command_line(&image_create_args(&doc, "disk.qcow2").unwrap());
        assert_eq!(
            line,
            "openstack image create --disk-format qcow2 --container-format bare --min-disk 1 --min-ram 0 --private --protected --tag golden --property os_distro=ubuntu --file disk.qcow2 -- '-odd name'"
        );
    }
}
