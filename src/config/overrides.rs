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

/// A typed value as `--set` reads it: TOML (numbers, booleans, arrays, quoted strings), else a
/// bare string.
pub fn parse_value(text: &str) -> toml::Value {
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

/// A field left in a table by its old `kind` that no override set: dropped if the new kind
/// rejects it (`RunConfig::with_overrides`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Carried {
    /// The table's path (`["lr_schedule"]`).
    table: Vec<String>,
    field: String,
}

impl Carried {
    /// Whether `e` (the first error of deserializing the tree) is this field being unknown in
    /// its table. serde names the field (`unknown field `eta_min``); toml adds the table's
    /// path (`in `lr_schedule``) when it knows it.
    pub(crate) fn rejected_by(&self, e: &toml::de::Error) -> bool {
        let unknown = e
            .message()
            .starts_with(&format!("unknown field `{}`", self.field));
        let text = e.to_string();
        let in_table = match text.rfind("\nin `") {
            Some(i) => {
                text[i + "\nin `".len()..].trim_end().trim_end_matches('`') == self.table.join(".")
            }
            None => true,
        };
        unknown && in_table
    }

    pub(crate) fn remove_from(&self, tree: &mut toml::Table) {
        if let Some(t) = table_at_mut(tree, &self.table) {
            t.remove(&self.field);
        }
    }
}

fn table_at<'a>(tree: &'a toml::Table, path: &[String]) -> Option<&'a toml::Table> {
    path.iter()
        .try_fold(tree, |t, part| t.get(part).and_then(toml::Value::as_table))
}

fn table_at_mut<'a>(tree: &'a mut toml::Table, path: &[String]) -> Option<&'a mut toml::Table> {
    path.iter().try_fold(tree, |t, part| {
        t.get_mut(part).and_then(toml::Value::as_table_mut)
    })
}

/// The fields of every table whose `kind` the overrides changed (from `before` to `after`) that
/// came from the old kind: present before, unchanged, and not set by any override.
pub(crate) fn carried_over(
    before: &toml::Table,
    after: &toml::Table,
    overrides: &[Override],
) -> Vec<Carried> {
    let mut tables: Vec<&[String]> = Vec::new();
    for o in overrides {
        if let Some((last, table)) = o.key.split_last() {
            if last == "kind" && !tables.contains(&table) {
                tables.push(table);
            }
        }
    }
    let mut carried = Vec::new();
    for table in tables {
        let (Some(old), Some(new)) = (table_at(before, table), table_at(after, table)) else {
            continue;
        };
        if old.get("kind") == new.get("kind") {
            continue;
        }
        for (field, value) in old {
            let set_by_override = overrides.iter().any(|o| {
                o.key.len() > table.len()
                    && o.key[..table.len()] == *table
                    && o.key[table.len()] == *field
            });
            if field != "kind" && !set_by_override && new.get(field) == Some(value) {
                carried.push(Carried {
                    table: table.to_vec(),
                    field: field.clone(),
                });
            }
        }
    }
    carried
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

    #[test]
    fn a_new_kind_carries_only_the_fields_no_override_set() {
        let before: toml::Table =
            "[opt]\nkind = \"sgd\"\nlr = 0.1\nmomentum = 0.9\n[other]\nkind = \"a\"\nx = 1"
                .parse()
                .unwrap();
        let overrides: Vec<Override> = ["opt.kind=adam", "opt.momentum=0.5", "other.x=2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let mut after = before.clone();
        for o in &overrides {
            apply_override(&mut after, o).unwrap();
        }
        let c = carried_over(&before, &after, &overrides);
        assert_eq!(
            c,
            vec![Carried {
                table: vec!["opt".into()],
                field: "lr".into()
            }]
        );
        // The same kind again changes nothing.
        let same: Override = "other.kind=a".parse().unwrap();
        assert!(carried_over(&before, &before, &[same]).is_empty());
    }
}
