//! The `shoal` binary's entry point.

fn main() {
    // Hidden mode: the per-attempt supervisor (see shoal_node::exec::supervisor).
    if std::env::args().nth(1).as_deref() == Some(shoal_node::exec::supervisor::SUPERVISE_ARG) {
        std::process::exit(shoal_node::exec::supervisor::main());
    }
    println!("shoal {}", env!("CARGO_PKG_VERSION"));
}
