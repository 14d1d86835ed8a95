fn main() {
    println!("shoal-sim {}", env!("CARGO_PKG_VERSION"));
}
