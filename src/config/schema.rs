//! Which keys a config of given kinds accepts and which values a key's enum takes, asked of the
//! config's own deserializer: every table rejects unknown fields (`deny_unknown_fields`), and
//! serde's rejection lists the fields (or variants) it expects. So the list follows the code —
//! a field added to any struct or kind variant shows up here, set or not — and nothing else
//! (the workbench's Setup, docs) keeps a copy.
use super::diff::flatten_toml;
use super::RunConfig;

/// A key no config has: what the probes insert.
const PROBE: &str = "__cptlab_probe__";

/// Every dotted key (leaf) a config of `cfg`'s kinds accepts, whether `cfg` sets it or not,
/// sorted. Tables (`model.vit`) are walked; a table `cfg` leaves out (`precision.schedule`
/// when there is none) is one key.
pub fn accepted_keys(cfg: &RunConfig) -> Vec<String> {
    let Some(root) = tree(cfg) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk(&root, &mut Vec::new(), &mut out);
    // Keys the config sets are accepted by definition (a table whose probe said nothing).
    out.extend(flatten_toml(&root).into_keys());
    out.sort();
    out.dedup();
    out
}

/// Whether `key` is read under `cfg`'s kinds: the ViT's table only for the ViT, the loss
/// scaler only where the loss is scaled (fp16). Other keys of the accepted set always are.
pub fn applies(cfg: &RunConfig, key: &str) -> bool {
    if key.starts_with("model.vit.") {
        return cfg.model.kind == super::ModelKind::Vit;
    }
    if key.starts_with("precision.loss_scale.") {
        return cfg.precision.mode.scales_loss();
    }
    // A static schedule holds q_max: its q_min and cycles are not read.
    if matches!(
        key,
        "precision.schedule.q_min" | "precision.schedule.cycles"
    ) {
        return !matches!(
            &cfg.precision.schedule,
            Some(s) if s.kind == crate::schedule::PrecisionScheduleKind::Static
        );
    }
    true
}

/// The values an enum-valued key accepts (`data.normalize` → cifar, half, unit), in the
/// deserializer's order; None for keys that are not enums (numbers, strings, booleans).
pub fn choices(cfg: &RunConfig, key: &str) -> Option<Vec<String>> {
    let mut root = tree(cfg)?;
    let path: Vec<&str> = key.split('.').collect();
    let (last, parents) = path.split_last()?;
    let table = table_at_mut(&mut root, parents)?;
    table.insert(last.to_string(), toml::Value::String(PROBE.to_string()));
    let msg = rejection(root)?;
    msg.starts_with(&format!("unknown variant `{PROBE}`"))
        .then(|| expected_names(&msg))
        .filter(|v| !v.is_empty())
}

/// One line on a value of an enum-valued key, from its kind's own descriptions ("" where the
/// kind has none).
pub fn describe_value(key: &str, name: &str) -> String {
    let d = match key {
        "precision.channels_last" => name
            .parse::<super::ChannelsLast>()
            .ok()
            .map(super::ChannelsLast::describe),
        "data.normalize" => super::Normalize::ALL
            .into_iter()
            .find(|n| n.name() == name)
            .map(super::Normalize::describe),
        _ => None,
    };
    d.unwrap_or_default().to_string()
}

fn tree(cfg: &RunConfig) -> Option<toml::Table> {
    match toml::Value::try_from(cfg) {
        Ok(toml::Value::Table(t)) => Some(t),
        _ => None,
    }
}

fn walk(root: &toml::Table, path: &mut Vec<String>, out: &mut Vec<String>) {
    let Some(table) = table_at(root, path) else {
        return;
    };
    let mut probed = root.clone();
    if let Some(t) = table_at_mut(&mut probed, path) {
        t.insert(PROBE.to_string(), toml::Value::Boolean(true));
    }
    let names = match rejection(probed) {
        Some(m) if m.starts_with(&format!("unknown field `{PROBE}`")) => expected_names(&m),
        _ => Vec::new(),
    };
    for name in names {
        match table.get(&name) {
            Some(toml::Value::Table(_)) => {
                path.push(name);
                walk(root, path, out);
                path.pop();
            }
            _ => out.push(join(path, &name)),
        }
    }
}

fn join(path: &[String], name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{}.{name}", path.join("."))
    }
}

/// The deserializer's message for `tree`, if it rejects it.
fn rejection(tree: toml::Table) -> Option<String> {
    use serde::Deserialize;
    RunConfig::deserialize(toml::Value::Table(tree))
        .err()
        .map(|e| e.message().to_string())
}

/// The backquoted names after "expected" in serde's message (`expected one of `a`, `b``,
/// `expected `a` or `b``, `expected `a``).
fn expected_names(msg: &str) -> Vec<String> {
    let Some((_, list)) = msg.split_once("expected") else {
        return Vec::new();
    };
    list.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect()
}

fn table_at<'a>(t: &'a toml::Table, path: &[String]) -> Option<&'a toml::Table> {
    path.iter()
        .try_fold(t, |t, p| t.get(p).and_then(toml::Value::as_table))
}

fn table_at_mut<'a, S: AsRef<str>>(
    t: &'a mut toml::Table,
    path: &[S],
) -> Option<&'a mut toml::Table> {
    path.iter().try_fold(t, |t, p| {
        t.get_mut(p.as_ref()).and_then(toml::Value::as_table_mut)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::presets::BUILT_IN;

    fn preset(name: &str) -> RunConfig {
        let (_, text) = BUILT_IN.iter().find(|(n, _)| *n == name).unwrap();
        RunConfig::from_toml_str(text, name).unwrap()
    }

    #[test]
    fn unset_fields_are_accepted_keys_too() {
        let cfg = preset("resnet20-cpt-cr");
        let keys = accepted_keys(&cfg);
        for k in [
            "name",
            "description",
            "seed",
            "model.kind",
            "model.vit.depth",
            "data.source",
            "data.resize",
            "data.normalize",
            "train.max_steps",
            "train.grad_clip",
            "optimizer.nesterov",
            "precision.tf32",
            "precision.channels_last",
            "precision.schedule.window_end",
            "precision.schedule.delay_steps",
            "precision.loss_scale.initial_scale_power",
            "devices.threads",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} not in {keys:?}");
        }
        // Another optimizer's fields are not.
        assert!(!keys.iter().any(|k| k == "optimizer.betas"), "{keys:?}");
        assert!(!keys.iter().any(|k| k.contains(PROBE)));
    }

    #[test]
    fn enum_keys_list_their_values_and_others_are_not_enums() {
        let cfg = preset("resnet20-cpt-cr");
        assert_eq!(
            choices(&cfg, "data.normalize").unwrap(),
            ["cifar", "half", "unit"]
        );
        assert_eq!(
            choices(&cfg, "precision.channels_last").unwrap(),
            ["auto", "on", "off"]
        );
        assert_eq!(choices(&cfg, "train.epochs"), None);
        assert_eq!(choices(&cfg, "name"), None);
    }

    #[test]
    fn another_kinds_keys_do_not_apply() {
        let cnn = preset("resnet20-cpt-cr");
        assert!(!applies(&cnn, "model.vit.depth"));
        assert!(!applies(&cnn, "precision.loss_scale.initial_scale_power"));
        assert!(applies(&cnn, "precision.schedule.q_min"));
        assert!(applies(&cnn, "data.normalize"));
        let vit = preset("vit-adam");
        assert!(applies(&vit, "model.vit.depth"));
        let fp16 = preset("lenet-deepspeed-fp16");
        assert!(applies(&fp16, "precision.loss_scale.initial_scale_power"));
        let fixed = preset("resnet20-static8");
        assert!(!applies(&fixed, "precision.schedule.cycles"));
        assert!(applies(&fixed, "precision.schedule.q_max"));
    }

    #[test]
    fn serde_messages_are_read_for_their_names() {
        assert_eq!(
            expected_names("unknown field `x`, expected one of `a`, `b`, `c`"),
            ["a", "b", "c"]
        );
        assert_eq!(
            expected_names("unknown field `x`, expected `a` or `b`"),
            ["a", "b"]
        );
        assert_eq!(
            expected_names("unknown field `x`, there are no fields"),
            Vec::<String>::new()
        );
    }
}
