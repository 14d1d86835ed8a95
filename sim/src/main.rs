//! The `shoal-sim` binary: see `shoal-sim --help`.
#![forbid(unsafe_code)]

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    shoal_sim::cli::main()
}
