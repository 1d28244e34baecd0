//! armada-manager: the cluster's control point (skeleton; filled in by issue 4).
fn main() {
    println!("armada-manager {}", env!("CARGO_PKG_VERSION"));
}
