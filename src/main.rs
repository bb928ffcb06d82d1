fn main() {
    cptlab::cli::init_tracing();
    std::process::exit(cptlab::cli::entry(std::env::args_os()));
}
