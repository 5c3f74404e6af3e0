//! The example plugins, loaded from their built libraries and run in batches.

mod support;

use devbatch_core::Registry;

#[test]
fn smoke() {
    let built = support::plugins();
    let mut registry = Registry::new();
    let p = devbatch_plugin::load_plugin(&built.library("devbatch_disk_usage"), &mut registry).unwrap();
    println!("{p:?}");
}
