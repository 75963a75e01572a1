//! The `drover` binary: see `drover --help` and docs/operating.md.

fn main() {
    std::process::exit(drover_os::main());
}
