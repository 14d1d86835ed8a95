//! The `shoal-sim` binary: see `shoal-sim --help`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    shoal_sim::cli::main()
}
