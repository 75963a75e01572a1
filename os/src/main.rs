//! The `drover` binary: see `drover --help` and the README.

fn main() {
    std::process::exit(drover_os::main());
}
