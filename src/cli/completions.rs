//! `cptlab completions SHELL` and `cptlab man`: shell completions and the man page, generated
//! from the `Cli` definition itself (clap_complete, clap_mangen), so they never go stale.
use anyhow::Result;
use clap::{Args, CommandFactory, ValueEnum};

use super::output;

/// The shells completions are generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// Bash (bash-completion)
    Bash,
    /// Zsh
    Zsh,
    /// Fish
    Fish,
}

impl Shell {
    fn generator(self) -> clap_complete::Shell {
        match self {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate completions for
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> String {
    let mut buf = Vec::new();
    clap_complete::generate(
        shell.generator(),
        &mut super::Cli::command(),
        "cptlab",
        &mut buf,
    );
    String::from_utf8_lossy(&buf).into_owned()
}

/// The man page, roff.
pub fn man_page() -> Result<String> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(super::Cli::command()).render(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// `cptlab completions SHELL`: the script on stdout.
pub fn run(args: CompletionsArgs) -> Result<()> {
    output::stdout().write_str(&script(args.shell))?;
    Ok(())
}

/// `cptlab man`: the man page on stdout.
pub fn man() -> Result<()> {
    output::stdout().write_str(&man_page()?)?;
    Ok(())
}
