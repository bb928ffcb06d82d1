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
    }
    Ok(())
}
