//! Helpers shared by the listen rooms' tests: a `ListenSpec` from `--listen` text and a
//! fresh temporary directory. Test-only; nothing here may be used by the code under test.

use std::path::PathBuf;

use crate::settings::listen::{ListenAddr, ListenSpec};

pub(super) fn spec(index: usize, text: &str) -> ListenSpec {
    let (name, addr) = match text.split_once('=') {
        Some((name, addr)) => (name.to_string(), addr),
        None => (format!("listen{index}"), text),
    };
    let addr = match addr.strip_prefix("unix:") {
        Some(path) => ListenAddr::Unix(PathBuf::from(path)),
        None => ListenAddr::Tcp(addr.parse().unwrap()),
    };
    ListenSpec {
        name,
        addr,
        text: text.to_string(),
    }
}

pub(super) fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("drover-adopt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
