use clap::Parser;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("CPTLAB_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = cptlab::cli::Cli::parse();
    match cptlab::cli::main(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
