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
    let refs: Vec<&BTreeMap<String, String>> = flat.iter().collect();
    differing(&refs)
}

/// As [`differing_fields`], over configs already flattened to dotted keys (as a run's
/// recorded `config.toml` is read). A table that some configs lack altogether (one run has a
/// CPT schedule, the other none) differs once, under the table's key, with its `kind` (or
/// "set") where it is present, rather than once per field inside it.
pub fn differing(flat: &[&BTreeMap<String, String>]) -> Vec<FieldDiff> {
    let keys: BTreeSet<&String> = flat.iter().flat_map(|f| f.keys()).collect();
    let mut out: Vec<FieldDiff> = Vec::new();
    for k in keys {
        if matches!(k.as_str(), "name" | "description") {
            continue;
        }
        let values: Vec<Option<String>> = flat.iter().map(|f| f.get(k).cloned()).collect();
        if values.iter().all(|v| *v == values[0]) {
            continue;
        }
        let diff = match absent_table(flat, k, &values) {
            Some(table) => {
                let prefix = format!("{table}.");
                FieldDiff {
                    values: flat
                        .iter()
                        .map(|f| {
                            f.keys().any(|x| x.starts_with(&prefix)).then(|| {
                                f.get(&format!("{table}.kind"))
                                    .cloned()
                                    .unwrap_or_else(|| "set".into())
                            })
                        })
                        .collect(),
                    key: table,
                }
            }
            None => FieldDiff {
                key: k.clone(),
                values,
            },
        };
        if out.last().is_none_or(|l| l.key != diff.key) {
            out.push(diff);
        }
    }
    out
}

/// The outermost table around `key` that a config without `key` lacks entirely (its parent
/// tables present), if there is one.
fn absent_table(
    flat: &[&BTreeMap<String, String>],
    key: &str,
    values: &[Option<String>],
) -> Option<String> {
    let parts: Vec<&str> = key.split('.').collect();
    (1..parts.len()).find_map(|n| {
        let table = parts[..n].join(".");
        let prefix = format!("{table}.");
        let lacking = flat
            .iter()
            .zip(values)
            .filter(|(_, v)| v.is_none())
            .map(|(f, _)| f)
            .collect::<Vec<_>>();
        (!lacking.is_empty()
            && lacking
                .iter()
                .all(|f| !f.keys().any(|x| x.starts_with(&prefix))))
        .then_some(table)
    })
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

    #[test]
    fn a_table_one_config_lacks_differs_once() {
        let a = quickstart();
        let cpt = a
            .with_overrides(&[
                Override::new("precision.schedule.kind", "CR".into()),
                Override::new("precision.schedule.q_min", 4i64.into()),
            ])
            .unwrap();
        let d = differing_fields(&[&a, &cpt]);
        let keys: Vec<&str> = d.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["precision.schedule"], "{d:?}");
        assert_eq!(d[0].values, [None, Some("CR".to_string())]);
        // Two schedules differ field by field.
        let rr = cpt
            .with_overrides(&[Override::new("precision.schedule.kind", "RR".into())])
            .unwrap();
        let d = differing_fields(&[&cpt, &rr]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].key, "precision.schedule.kind");
    }
}
