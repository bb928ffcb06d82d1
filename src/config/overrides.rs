//! `--set dotted.key=value` overrides, applied to the TOML tree before deserializing.
use std::fmt;
use std::str::FromStr;

use super::ConfigError;

/// One `key=value` override; the value is read as a TOML value, falling back to a bare string
/// (so `--set devices.devices=cpu` works without quotes).
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub key: Vec<String>,
    pub value: toml::Value,
}

impl fmt::Display for Override {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key.join("."), self.value)
    }
}

impl FromStr for Override {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, value) = s.split_once('=').ok_or_else(|| ConfigError::Invalid {
            field: "--set".into(),
            value: s.into(),
            expected: "KEY=VALUE with a dotted key, e.g. optimizer.lr=0.1".into(),
        })?;
        let key: Vec<String> = key
            .trim()
            .split('.')
            .map(|k| k.trim().to_string())
            .collect();
        if key.iter().any(|k| k.is_empty()) {
            return Err(ConfigError::Invalid {
                field: "--set".into(),
                value: s.into(),
                expected: "a dotted key without empty parts".into(),
            });
        }
        Ok(Override {
            key,
            value: parse_value(value.trim()),
        })
    }
}

impl Override {
    pub fn new(key: &str, value: toml::Value) -> Override {
        Override {
            key: key.split('.').map(str::to_string).collect(),
            value,
        }
    }
}

fn parse_value(text: &str) -> toml::Value {
    // Parse as the right-hand side of a TOML assignment so numbers, booleans, arrays and quoted
    // strings keep their types.
    let doc = format!("v = {text}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(text.into())),
        Err(_) => toml::Value::String(text.to_string()),
    }
}

/// Sets `o.key` in `tree`, creating intermediate tables.
pub fn apply_override(tree: &mut toml::Table, o: &Override) -> Result<(), ConfigError> {
    let (last, parents) = o.key.split_last().expect("keys are non-empty");
    let mut table = tree;
    for (i, part) in parents.iter().enumerate() {
        let entry = table
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| ConfigError::Invalid {
            field: o.key[..=i].join("."),
            value: o.to_string(),
            expected: "a table to set a key inside, but it holds a value".into(),
        })?;
    }
    table.insert(last.clone(), o.value.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_their_toml_types() {
        let o: Override = "a.b=3".parse().unwrap();
        assert_eq!(o.value, toml::Value::Integer(3));
        let o: Override = "a=cpu".parse().unwrap();
        assert_eq!(o.value, toml::Value::String("cpu".into()));
        let o: Override = "a=[0.8, 0.999]".parse().unwrap();
        assert!(o.value.is_array());
        assert!("novalue".parse::<Override>().is_err());
        assert!("a..b=1".parse::<Override>().is_err());
    }

    #[test]
    fn setting_inside_a_value_is_an_error() {
        let mut t: toml::Table = "a = 1".parse().unwrap();
        let o: Override = "a.b=2".parse().unwrap();
        assert!(apply_override(&mut t, &o).is_err());
        let o: Override = "c.d=2".parse().unwrap();
        apply_override(&mut t, &o).unwrap();
        assert_eq!(t["c"]["d"].as_integer(), Some(2));
    }
}
