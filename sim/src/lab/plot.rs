//! STUB until the plotting module lands (same API).
use crate::world::Sample;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Svg,
    Png,
}

impl ImageFormat {
    pub fn from_path(path: &str) -> Result<ImageFormat, String> {
        if path.ends_with(".svg") {
            Ok(ImageFormat::Svg)
        } else if path.ends_with(".png") {
            Ok(ImageFormat::Png)
        } else {
            Err(format!("{path}: .svg or .png"))
        }
    }
}

pub struct RunSeries<'a> {
    pub name: &'a str,
    pub samples: &'a [Sample],
    pub waits_us: &'a [u64],
}

pub struct CostPoint<'a> {
    pub name: &'a str,
    pub worker_seconds: f64,
    pub p99_ms: f64,
    pub pareto: bool,
}

pub fn run_timeline(_samples: &[Sample], _title: &str, path: &str) -> Result<(), String> {
    std::fs::write(path, "stub").map_err(|e| e.to_string())
}

pub fn compare_timeline(_runs: &[RunSeries], _title: &str, path: &str) -> Result<(), String> {
    std::fs::write(path, "stub").map_err(|e| e.to_string())
}

pub fn wait_cdf(_runs: &[RunSeries], _title: &str, path: &str) -> Result<(), String> {
    std::fs::write(path, "stub").map_err(|e| e.to_string())
}

pub fn cost_vs_p99(
    _points: &[CostPoint],
    _objective_p99_ms: Option<f64>,
    _title: &str,
    path: &str,
) -> Result<(), String> {
    std::fs::write(path, "stub").map_err(|e| e.to_string())
}
