//! The difference between configurations, field by field: what `runs diff` prints and what a
//! comparison of runs shows beside its numbers.
use std::collections::{BTreeMap, BTreeSet};

use super::RunConfig;

/// Every leaf of a TOML table under its dotted key (`optimizer.lr`), strings without quotes.
pub fn flatten_toml(t: &toml::Table) -> BTreeMap<String, String> {
    fn walk(prefix: &str, t: &toml::Table, out: &mut BTreeMap<String, String>) {
        for (k, v) in t {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(sub) => walk(&key, sub, out),
                toml::Value::String(s) => {
                    out.insert(key, s.clone());
                }
                other => {
                    out.insert(key, other.to_string());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", t, &mut out);
    out
}

/// A config's fields under their dotted keys, as its TOML writes them.
pub fn fields(config: &RunConfig) -> BTreeMap<String, String> {
    let table: toml::Table =
        toml::from_str(&config.to_toml()).expect("a RunConfig's TOML parses back");
    flatten_toml(&table)
}

/// One field whose value is not the same in every config: the key and each config's value
/// (`None` where that config has no such field, e.g. another optimizer's `momentum`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDiff {
    pub key: String,
    pub values: Vec<Option<String>>,
}

/// The fields that differ between `configs`, in key order. `name` and `description` say what
/// a run is called, not what it computes, and are left out.
pub fn differing_fields(configs: &[&RunConfig]) -> Vec<FieldDiff> {
    let flat: Vec<BTreeMap<String, String>> = configs.iter().map(|c| fields(c)).collect();
    let keys: BTreeSet<&String> = flat.iter().flat_map(|f| f.keys()).collect();
    keys.into_iter()
        .filter(|k| !matches!(k.as_str(), "name" | "description"))
        .filter_map(|k| {
            let values: Vec<Option<String>> = flat.iter().map(|f| f.get(k).cloned()).collect();
            values.iter().any(|v| *v != values[0]).then(|| FieldDiff {
                key: k.clone(),
                values,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Override;

    fn quickstart() -> RunConfig {
        crate::config::presets::PresetStore::new(std::path::Path::new("/nonexistent"))
            .load(crate::config::presets::DEFAULT_PRESET)
            .unwrap()
    }

    #[test]
    fn only_the_fields_that_differ_with_each_value() {
        let a = quickstart();
        assert!(differing_fields(&[&a, &a.clone()]).is_empty());
        let b = a
            .with_overrides(&[
                Override::new("optimizer.lr", 0.5.into()),
                Override::new("name", "other".into()),
                Override::new("seed", 7i64.into()),
            ])
            .unwrap();
        let d = differing_fields(&[&a, &b]);
        let keys: Vec<&str> = d.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["optimizer.lr", "seed"]);
        assert_eq!(d[0].values[1].as_deref(), Some("0.5"));
        assert_eq!(d[0].values[0], fields(&a).get("optimizer.lr").cloned());
    }

    #[test]
    fn a_field_one_config_lacks_is_a_difference() {
        let a = quickstart();
        let sgd = a
            .with_overrides(&[
                Override::new("optimizer.kind", "sgd".into()),
                Override::new("optimizer.momentum", 0.9.into()),
            ])
            .unwrap();
        let adam = a
            .with_overrides(&[Override::new("optimizer.kind", "adam".into())])
            .unwrap();
        let d = differing_fields(&[&sgd, &adam]);
        let momentum = d.iter().find(|f| f.key == "optimizer.momentum").unwrap();
        assert_eq!(momentum.values, [Some("0.9".to_string()), None]);
        assert!(d.iter().any(|f| f.key == "optimizer.kind"));
    }
}
