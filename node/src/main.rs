//! The `shoal` binary's entry point.

fn main() {
    println!("shoal {}", env!("CARGO_PKG_VERSION"));
}
