//! STUB until the trace parser lands (same API).
use core::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub arrival: Duration,
    pub service: Duration,
    pub key: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    pub requests: Vec<Request>,
    pub format: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceFormat {
    Auto,
    Csv,
    Nginx,
    Apache,
}

impl TraceFormat {
    pub fn from_name(s: &str) -> Option<TraceFormat> {
        match s {
            "auto" => Some(TraceFormat::Auto),
            "csv" => Some(TraceFormat::Csv),
            "nginx" => Some(TraceFormat::Nginx),
            "apache" => Some(TraceFormat::Apache),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceError {
    pub line: usize,
    pub field: &'static str,
    pub problem: String,
}

impl std::fmt::Display for TraceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}, field {}: {}",
            self.line, self.field, self.problem
        )
    }
}

pub fn parse(text: &str, _format: TraceFormat) -> Result<Trace, TraceError> {
    let mut requests = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut it = line.split(',');
        let (Some(a), Some(s)) = (it.next(), it.next()) else {
            continue;
        };
        let (Ok(a), Ok(s)) = (a.trim().parse::<f64>(), s.trim().parse::<f64>()) else {
            if i == 0 {
                continue;
            }
            return Err(TraceError {
                line: i + 1,
                field: "arrival_s",
                problem: "bad".into(),
            });
        };
        requests.push(Request {
            arrival: Duration::from_secs_f64(a),
            service: Duration::from_secs_f64(s),
            key: None,
        });
    }
    Ok(Trace {
        requests,
        format: "csv",
    })
}

impl Trace {
    pub fn scaled(&self, speed: f64) -> Trace {
        let mut t = self.clone();
        for r in &mut t.requests {
            r.arrival = Duration::from_secs_f64(r.arrival.as_secs_f64() / speed);
        }
        t
    }

    pub fn span(&self) -> Duration {
        self.requests.last().map_or(Duration::ZERO, |r| r.arrival)
    }
}
