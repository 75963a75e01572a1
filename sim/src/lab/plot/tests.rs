use super::*;
use std::path::PathBuf;

/// A file under the temp dir, unique to this process and name, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        let p = std::env::temp_dir().join(format!("drover-plot-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        TempFile(p)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("temp dir path is UTF-8")
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.0).expect("chart written")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A deterministic run: a pool that grows into a burst in the middle and shrinks after.
fn samples(policy: u32, n: usize) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            let t = i as f64 * 1.5;
            let burst = (80..120).contains(&i);
            let load = if burst {
                400.0
            } else {
                60.0 + (i % 7) as f64 * 3.0
            };
            let busy = if burst {
                10 + policy * 2
            } else {
                3 + (i as u32 % 3)
            };
            Sample {
                t,
                booting: if (78..90).contains(&i) { 3 + policy } else { 0 },
                idle: 2 + policy + (i as u32 % 2),
                busy,
                stopping: u32::from((120..126).contains(&i)),
                queued: if burst {
                    (40 - (i as u32 - 80)) * (3 - policy)
                } else {
                    0
                },
                load,
            }
        })
        .collect()
}

/// A third of requests served at once; the rest roughly log-normal around a policy's
/// typical wait, with a burst's tail two orders of magnitude up.
fn waits(policy: u64, n: u64) -> Vec<u64> {
    // A cheap LCG: reproducible, no dependency.
    let mut x = 0x9E37_79B9_7F4A_7C15u64.wrapping_add(policy);
    let mut uniform = move || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|i| {
            let z: f64 = (0..4).map(|_| uniform()).sum::<f64>() - 2.0;
            let typical = 300.0 * (1.0 + policy as f64);
            let tail = if i % 40 == 0 { 150.0 } else { 1.0 };
            if i % 3 == 0 {
                0
            } else {
                (typical * tail * (1.6 * z).exp()) as u64
            }
        })
        .collect()
}

struct Data {
    names: [&'static str; 3],
    samples: Vec<Vec<Sample>>,
    waits: Vec<Vec<u64>>,
}

fn data() -> Data {
    Data {
        names: ["dynamic-2-16", "apache-prefork", "static-8"],
        samples: (0..3).map(|p| samples(p, 200)).collect(),
        waits: (0..3).map(|p| waits(p, 3000)).collect(),
    }
}

fn runs(d: &Data) -> Vec<RunSeries<'_>> {
    (0..3)
        .map(|i| RunSeries {
            name: d.names[i],
            samples: &d.samples[i],
            waits_us: &d.waits[i],
        })
        .collect()
}

/// Configurations whose p99 falls as they cost more, noisily; Pareto flags computed
/// here, as the lab would, since the module only draws them.
fn cost_points(n: usize) -> Vec<(String, f64, f64, bool)> {
    let mut pts: Vec<(String, f64, f64, bool)> = (0..n)
        .map(|i| {
            let cost = 1000.0 + 150.0 * i as f64 + ((i * 53) % 7) as f64 * 90.0;
            let p99 = 4000.0 / (1.0 + i as f64) + ((i * 37) % 11) as f64 * 60.0;
            (format!("cfg-{i}"), cost, p99, false)
        })
        .collect();
    for k in 0..pts.len() {
        let (c, p) = (pts[k].1, pts[k].2);
        pts[k].3 = !pts
            .iter()
            .any(|o| (o.1 <= c && o.2 < p) || (o.1 < c && o.2 <= p));
    }
    pts
}

fn with_cost_points<R>(n: usize, f: impl FnOnce(&[CostPoint]) -> R) -> R {
    let raw = cost_points(n);
    let pts: Vec<CostPoint> = raw
        .iter()
        .map(|(name, c, p, par)| CostPoint {
            name,
            worker_seconds: *c,
            p99_ms: *p,
            pareto: *par,
        })
        .collect();
    f(&pts)
}

type Draw<'a> = &'a dyn Fn(&str) -> Result<(), String>;

/// Draws twice per format and checks the bytes match; returns the SVG text.
fn twice(name: &str, draw: Draw) -> String {
    let mut svg = String::new();
    for ext in ["svg", "png"] {
        let a = TempFile::new(&format!("{name}-a.{ext}"));
        let b = TempFile::new(&format!("{name}-b.{ext}"));
        draw(a.path()).unwrap();
        draw(b.path()).unwrap();
        let (ba, bb) = (a.bytes(), b.bytes());
        assert!(!ba.is_empty());
        assert!(ba == bb, "{name}.{ext}: two drawings differ");
        if ext == "svg" {
            svg = String::from_utf8(ba).unwrap();
        } else {
            assert_eq!(&ba[..8], b"\x89PNG\r\n\x1a\n");
        }
    }
    svg
}

fn assert_texts(svg: &str, texts: &[&str]) {
    for t in texts {
        // plotters writes each text on a line of its own inside its element.
        assert!(svg.contains(&format!(">\n{t}")), "no text starting {t:?}");
    }
}

#[test]
fn format_from_extension() {
    assert_eq!(ImageFormat::from_path("a/b.svg"), Ok(ImageFormat::Svg));
    assert_eq!(ImageFormat::from_path("b.PNG"), Ok(ImageFormat::Png));
    let e = ImageFormat::from_path("out/plot.jpg").unwrap_err();
    assert!(e.contains("out/plot.jpg") && e.contains(".svg") && e.contains(".png"));
    assert!(ImageFormat::from_path("svg").is_err());
}

#[test]
fn run_timeline_is_deterministic_and_labelled() {
    let s = samples(1, 200);
    let svg = twice("run", &|p| run_timeline(&s, "one run: dynamic-2-16", p));
    assert_texts(
        &svg,
        &[
            "one run: dynamic-2-16",
            "time (s)",
            "workers",
            "connections queued",
            "offered load (req/s)",
            "busy",
            "idle",
            "booting",
            "stopping",
            "queued",
        ],
    );
}

#[test]
fn compare_timeline_is_deterministic_and_labelled() {
    let d = data();
    let r = runs(&d);
    let svg = twice("compare", &|p| {
        compare_timeline(&r, "burst: three policies", p)
    });
    assert_texts(
        &svg,
        &[
            "burst: three policies",
            "time (s)",
            "pool size (workers)",
            "busy (workers)",
            "connections queued",
            "offered load (req/s)",
            "dynamic-2-16",
            "apache-prefork",
            "static-8",
        ],
    );
}

#[test]
fn wait_cdf_is_deterministic_and_labelled() {
    let d = data();
    let r = runs(&d);
    let svg = twice("cdf", &|p| wait_cdf(&r, "queue waits", p));
    assert_texts(
        &svg,
        &[
            "queue waits",
            "queue wait (ms)",
            "fraction of requests",
            "dynamic-2-16 (p99",
            "apache-prefork (p99",
            "static-8 (p99",
            "0.1",
        ],
    );
}

#[test]
fn cost_vs_p99_is_deterministic_and_labelled() {
    with_cost_points(12, |pts| {
        let svg = twice("cost", &|p| cost_vs_p99(pts, Some(500.0), "cost", p));
        assert_texts(
            &svg,
            &[
                "worker-seconds",
                "p99 queue wait (ms)",
                "Pareto-optimal",
                "objective: p99 ≤ 500 ms",
                "cfg-0",
                "cfg-5",
            ],
        );
    });
}

#[test]
fn cost_vs_p99_labels_only_pareto_points_past_thirty() {
    with_cost_points(40, |pts| {
        let f = TempFile::new("cost-many.svg");
        cost_vs_p99(pts, None, "many", f.path()).unwrap();
        let svg = String::from_utf8(f.bytes()).unwrap();
        assert!(pts.iter().any(|p| p.pareto) && pts.iter().any(|p| !p.pareto));
        for p in pts {
            let label = format!("\n{}\n", p.name);
            assert_eq!(svg.contains(&label), p.pareto, "{}", p.name);
        }
        assert!(!svg.contains("objective"));
    });
}

#[test]
fn empty_inputs_draw_empty_charts() {
    let empty = RunSeries {
        name: "idle-policy",
        samples: &[],
        waits_us: &[],
    };
    for ext in ["svg", "png"] {
        let f = TempFile::new(&format!("empty.{ext}"));
        run_timeline(&[], "nothing", f.path()).unwrap();
        compare_timeline(&[], "nothing", f.path()).unwrap();
        compare_timeline(std::slice::from_ref(&empty), "nothing", f.path()).unwrap();
        wait_cdf(&[], "nothing", f.path()).unwrap();
        wait_cdf(std::slice::from_ref(&empty), "nothing", f.path()).unwrap();
        cost_vs_p99(&[], Some(10.0), "nothing", f.path()).unwrap();
        let one = [CostPoint {
            name: "only",
            worker_seconds: 5.0,
            p99_ms: 0.0,
            pareto: true,
        }];
        cost_vs_p99(&one, None, "one", f.path()).unwrap();
    }
}

#[test]
fn errors_name_the_path() {
    let e = run_timeline(&[], "t", "/nonexistent-dir/x/plot.svg").unwrap_err();
    assert!(e.starts_with("/nonexistent-dir/x/plot.svg: "), "{e}");
    let e = wait_cdf(&[], "t", "/nonexistent-dir/x/plot.png").unwrap_err();
    assert!(e.starts_with("/nonexistent-dir/x/plot.png: "), "{e}");
    let e = cost_vs_p99(&[], None, "t", "plot.gif").unwrap_err();
    assert!(e.contains("plot.gif") && e.contains(".svg or .png"), "{e}");
}

#[test]
fn cdf_steps_and_p99() {
    let d = Distribution::new(&[0, 0, 50, 1_000, 2_000, 30_000]);
    assert_eq!(d.p99_ms(), Some(30.0));
    let hi = cdf_right_edge(30.0);
    assert_eq!(hi, 100.0);
    let steps = d.steps(CDF_MIN_MS, hi);
    assert_eq!(steps.first(), Some(&(0.1, 0.0)));
    assert_eq!(steps.last(), Some(&(100.0, 1.0)));
    // Zero and 0.05 ms waits land on the left edge, in one step.
    assert_eq!(steps[1], (0.1, 0.0));
    assert_eq!(steps[2], (0.1, 0.5));
    assert!(steps
        .windows(2)
        .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
    assert_eq!(cdf_right_edge(1000.0), 1000.0);
    assert_eq!(cdf_right_edge(0.0), 1.0);
    assert_eq!(Distribution::new(&[]).p99_ms(), None);
    // Bounded however many requests there are.
    let many: Vec<u64> = (0..200_000).collect();
    assert!(Distribution::new(&many).steps(0.1, 1000.0).len() <= 2 * 2001 + 2);
}

#[test]
fn tick_labels_have_no_float_noise() {
    assert_eq!(fmt_tick(&0.30000000000000004), "0.3");
    assert_eq!(fmt_tick(&100.00000000000001), "100");
    assert_eq!(fmt_tick(&0.0), "0");
    assert_eq!(fmt_tick(&2.5), "2.5");
}

/// Renders every chart into $DROVER_PLOT_DEMO (SVG and PNG) for a person to look at.
#[test]
#[ignore = "writes demo pictures; run with DROVER_PLOT_DEMO=DIR"]
fn demo() {
    let dir = std::env::var("DROVER_PLOT_DEMO").expect("DROVER_PLOT_DEMO=DIR");
    let d = data();
    let r = runs(&d);
    for ext in ["svg", "png"] {
        let at = |name: &str| format!("{dir}/{name}.{ext}");
        run_timeline(
            &d.samples[0],
            "dynamic-2-16 under a burst",
            &at("run_timeline"),
        )
        .unwrap();
        compare_timeline(&r, "three policies under a burst", &at("compare_timeline")).unwrap();
        wait_cdf(&r, "queue wait, three policies", &at("wait_cdf")).unwrap();
        with_cost_points(24, |pts| {
            cost_vs_p99(
                pts,
                Some(500.0),
                "cost vs p99, 24 configurations",
                &at("cost_vs_p99"),
            )
        })
        .unwrap();
    }
}
