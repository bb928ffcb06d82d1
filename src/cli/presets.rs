//! `cptlab presets`: the built-in and user presets.
use anyhow::Result;
use clap::Subcommand;

use super::output::{self, outln};
use crate::config::paths::Paths;
use crate::config::presets::{Origin, PresetStore};

#[derive(Debug, Subcommand)]
pub enum PresetsCommand {
    /// Every preset, built-in and user, with its description
    List,
    /// A preset's TOML
    Show {
        /// The preset's name
        name: String,
    },
    /// Save a DeepSpeed JSON config (ds_config.json) as a user preset
    Import {
        /// The DeepSpeed JSON config
        file: std::path::PathBuf,
        /// The new preset's name
        name: String,
        /// Preset supplying what the JSON does not say (model, data, epochs)
        #[arg(long, default_value = crate::config::presets::DEFAULT_PRESET)]
        from: String,
        /// Replace an existing user preset of that name
        #[arg(long)]
        force: bool,
    },
}

pub fn run(c: PresetsCommand, paths: &Paths) -> Result<()> {
    let store = PresetStore::new(&paths.presets);
    match c {
        PresetsCommand::List => {
            outln!("{:<22} {:<9} DESCRIPTION", "NAME", "ORIGIN")?;
            for p in store.list() {
                let origin = match &p.origin {
                    Origin::BuiltIn => "built-in".to_string(),
                    Origin::User(_) if p.shadows_built_in => "user*".to_string(),
                    Origin::User(_) => "user".to_string(),
                };
                let desc = match &p.config {
                    Ok(c) => c.description.clone(),
                    Err(e) => format!("INVALID: {e}"),
                };
                outln!("{:<22} {:<9} {}", p.name, origin, desc)?;
            }
            outln!(
                "\nuser presets: {} (user* = shadows a built-in)",
                store.dir().display()
            )?;
        }
        PresetsCommand::Show { name } => output::stdout().write_str(&store.text(&name)?)?,
        PresetsCommand::Import {
            file,
            name,
            from,
            force,
        } => {
            let base = store.load(&from)?;
            let ds = crate::config::deepspeed::read(&file, &base)?;
            for w in &ds.warnings {
                let _ = output::errln!("warning: {w}");
            }
            let mut config = ds.apply(&base)?;
            config.description = format!("Imported from DeepSpeed config {}", file.display());
            config.validate()?;
            let path = store.save(&name, &config, force)?;
            outln!("saved preset {name:?} to {}", path.display())?;
        }
    }
    Ok(())
}
