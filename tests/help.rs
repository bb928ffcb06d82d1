//! Every flag and subcommand has a help line, and no rustdoc markup (backticks, intra-doc links)
//! leaks into `--help`; completions and the man page come from the same tree.
use clap::CommandFactory;
use cptlab::cli::completions::{man_page, script, Shell};
use cptlab::cli::Cli;

/// What is wrong with a help text, if anything.
fn problem(help: Option<String>) -> Option<String> {
    let Some(text) = help.filter(|t| !t.trim().is_empty()) else {
        return Some("no help text".into());
    };
    if text.contains('`') {
        return Some(format!("a backtick in {text:?}"));
    }
    if text.contains("](") {
        return Some(format!("a rustdoc link in {text:?}"));
    }
    // `[Type]` or `[path::Item]`: an intra-doc link (`[default: …]` has a space, so it is not).
    let mut rest = text.as_str();
    while let Some(i) = rest.find('[') {
        let after = &rest[i + 1..];
        if let Some(j) = after.find(']') {
            let inner = &after[..j];
            // A path (`[crate::X]`) or a CamelCase item (`[RunConfig]`); not `[:TEST]`, `[set]`.
            let item = inner
                .chars()
                .all(|c| c.is_alphanumeric() || c == ':' || c == '_')
                && (inner.contains("::")
                    || (inner.starts_with(|c: char| c.is_ascii_uppercase())
                        && inner.chars().any(|c| c.is_ascii_lowercase())));
            if item {
                return Some(format!("a rustdoc link [{inner}] in {text:?}"));
            }
        }
        rest = after;
    }
    None
}

fn walk(cmd: &clap::Command, path: &str, problems: &mut Vec<String>) {
    for a in cmd.get_arguments() {
        let id = a.get_id().as_str();
        if id == "help" || id == "version" {
            continue;
        }
        let name = a
            .get_long()
            .map(|l| format!("--{l}"))
            .unwrap_or_else(|| id.to_uppercase());
        let help = a.get_help().or(a.get_long_help()).map(|h| h.to_string());
        // `--help` prints the long text where there is one.
        let long = a.get_long_help().map(|h| h.to_string()).or(help.clone());
        if let Some(p) = problem(help).or_else(|| problem(long)) {
            problems.push(format!("{path} {name}: {p}"));
        }
    }
    for sub in cmd.get_subcommands() {
        let sub_path = format!("{path} {}", sub.get_name());
        let about = sub
            .get_about()
            .or(sub.get_long_about())
            .map(|h| h.to_string());
        let long = sub
            .get_long_about()
            .map(|h| h.to_string())
            .or(about.clone());
        if let Some(p) = problem(about).or_else(|| problem(long)) {
            problems.push(format!("{sub_path}: {p}"));
        }
        walk(sub, &sub_path, problems);
    }
}

#[test]
fn every_flag_and_subcommand_has_plain_help() {
    let mut problems = Vec::new();
    walk(&Cli::command(), "cptlab", &mut problems);
    assert!(
        problems.is_empty(),
        "help problems:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_catches_markup() {
    assert!(problem(None).is_some());
    assert!(problem(Some(" ".into())).is_some());
    assert!(problem(Some("see `cptlab presets list`".into())).is_some());
    assert!(problem(Some("the [ALL](Self::ALL) list".into())).is_some());
    assert!(problem(Some("a [RunConfig] field".into())).is_some());
    assert!(problem(Some("where runs go [default: the user data dir]".into())).is_none());
    assert!(problem(Some("a value in [0, 1)".into())).is_none());
    assert!(problem(Some("synthetic[:TRAIN[:TEST]] or a [set] table".into())).is_none());
    assert!(problem(Some("see [crate::config]".into())).is_some());
}

#[test]
fn completions_name_every_subcommand() {
    let names: Vec<String> = Cli::command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "run"), "{names:?}");
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let s = script(shell);
        assert!(!s.trim().is_empty(), "{shell:?}");
        for n in &names {
            assert!(s.contains(n.as_str()), "{shell:?} completions lack {n}");
        }
        assert!(
            s.contains("deepspeed"),
            "{shell:?} completions lack run's flags"
        );
    }
}

#[test]
fn the_man_page_describes_the_program() {
    let page = man_page().unwrap();
    assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
    assert!(page.contains("cptlab"));
    assert!(page.contains("completions"));
}

/// `--no-mouse` reaches the workbench (it and `CPTLAB_NO_MOUSE` each turn capture off), and is a
/// top-level flag like `--preset`.
#[test]
fn no_mouse_is_a_workbench_flag() {
    use clap::Parser;
    let cli = Cli::try_parse_from(["cptlab", "--no-mouse"]).unwrap();
    assert!(cli.no_mouse);
    assert!(cli.command.is_none(), "the workbench starts");
    let cli = Cli::try_parse_from(["cptlab"]).unwrap();
    assert!(!cli.no_mouse);
    assert!(!cptlab::tui::mouse::capture(true));
    let help = Cli::command().render_long_help().to_string();
    assert!(help.contains("--no-mouse"), "{help}");
    assert!(help.contains("CPTLAB_NO_MOUSE"), "{help}");
}
