//! `drover status` for people: the control socket's JSON status (what `drover status
//! --json` prints) as a pool line and one row per worker, formatted client-side, so the
//! JSON stays the one source and scripts keep reading it.

use std::fmt::Write;

use serde_json::Value;

/// The pool line and the worker table of a status answer.
pub fn render(status: &Value) -> String {
    let mut out = String::new();
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let upgrade = match (
        status["upgrade"]["state"].as_str(),
        status["upgrade"]["successor_pid"].as_u64(),
    ) {
        (Some(state), Some(pid)) => format!("{state} (successor {pid})"),
        (Some(state), None) => state.to_string(),
        _ => "-".into(),
    };
    let crash_looping = if status["crash_looping"].as_bool() == Some(true) {
        "YES"
    } else {
        "no"
    };
    let _ = writeln!(
        out,
        "drover pid {}  {}  {} for {}  policy {}  target {}  ready/live {}/{}  generation {}  upgrade {}  crash-looping {}",
        text(&status["pid"]),
        text(&status["phase"]),
        text(&status["role"]),
        status["uptime_secs"].as_f64().map_or_else(|| "-".into(), duration),
        text(&status["policy"]),
        text(&status["target"]),
        text(&status["ready"]),
        text(&status["live"]),
        text(&status["generation"]),
        upgrade,
        crash_looping,
    );
    let header = [
        "SLOT",
        "STATE",
        "PID",
        "GEN",
        "UPTIME",
        "REQUESTS",
        "RESTARTS",
        "LAST STOP",
    ];
    let workers = status["workers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    // `--listen-per-worker`: a PORT column after SLOT, only then.
    let ports = workers.iter().any(|w| !w["port"].is_null());
    let mut rows: Vec<Vec<String>> = vec![header.map(str::to_string).to_vec()];
    if ports {
        rows[0].insert(1, "PORT".into());
    }
    for w in workers {
        let state = text(&w["state"]);
        let state = match (
            w["stop_reason"].as_str(),
            w["restart_in_secs"].as_f64(),
            w["exit_code"].as_i64(),
            w["busy"].as_u64(),
        ) {
            (Some(reason), _, _, _) => format!("{state} ({reason})"),
            (_, Some(secs), _, _) => format!("{state} (in {})", duration(secs)),
            (_, _, Some(code), _) => format!("{state} (exit {code})"),
            (_, _, _, Some(busy)) if busy > 0 => format!("{state} ({busy})"),
            _ => state,
        };
        let requests = if w["reports_load"].as_bool() == Some(true) {
            text(&w["requests"])
        } else {
            "-".into()
        };
        let mut row = vec![
            text(&w["slot"]),
            state,
            text(&w["pid"]),
            text(&w["generation"]),
            w["uptime_secs"]
                .as_f64()
                .map_or_else(|| "-".into(), duration),
            requests,
            text(&w["restarts"]),
            text(&w["last_stop"]),
        ];
        if ports {
            let port = match w["port_error"].as_str() {
                Some(error) => format!("{} ({error})", text(&w["port"])),
                None => text(&w["port"]),
            };
            row.insert(1, port);
        }
        rows.push(row);
    }
    let mut widths = vec![0usize; rows[0].len()];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, &width)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if rows.len() == 1 {
        out.push_str("(no workers)\n");
    }
    out
}

/// `45s`, `12m03s`, `3h05m`, `2d04h`: an uptime at a glance.
fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{:.1}s", secs.max(0.0)),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pool_line_and_aligned_rows() {
        let status = json!({
            "ok": true, "pid": 4242, "phase": "running", "role": "primary",
            "uptime_secs": 3725.0, "policy": "static", "target": 2, "ready": 1, "live": 2,
            "generation": 3, "crash_looping": false, "upgrade": { "state": "idle" },
            "workers": [
                { "slot": 0, "state": "busy", "busy": 2, "pid": 4243, "generation": 3,
                  "uptime_secs": 75.5, "requests": 1200, "reports_load": true,
                  "restarts": 0, "last_stop": null },
                { "slot": 1, "state": "backoff", "restart_in_secs": 2.25, "pid": null,
                  "generation": 3, "uptime_secs": null, "requests": 0,
                  "reports_load": false, "restarts": 4, "last_stop": "heartbeat-timeout" },
            ],
        });
        let table = render(&status);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "drover pid 4242  running  primary for 1h02m  policy static  target 2  ready/live 1/2  generation 3  upgrade idle  crash-looping no"
        );
        let want = [
            "SLOT  STATE              PID   GEN  UPTIME  REQUESTS  RESTARTS  LAST STOP",
            "0     busy (2)           4243  3    1m15s   1200      0         -",
            "1     backoff (in 2.2s)  -     3    -       -         4         heartbeat-timeout",
        ];
        assert_eq!(lines[1..], want, "\n{table}");
    }

    #[test]
    fn per_worker_ports_get_a_column() {
        let status = json!({
            "workers": [
                { "slot": 0, "port": 3000, "state": "ready", "pid": 7, "generation": 1,
                  "uptime_secs": 5.0, "restarts": 0, "last_stop": null },
                { "slot": 1, "port": 3001, "port_error": "address already in use",
                  "state": "backoff", "restart_in_secs": 1.0, "pid": null, "generation": 1,
                  "uptime_secs": null, "restarts": 0, "last_stop": null },
            ],
        });
        let table = render(&status);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].starts_with("SLOT  PORT  "), "\n{table}");
        assert!(lines[2].starts_with("0     3000  "), "\n{table}");
        assert!(
            lines[3].starts_with("1     3001 (address already in use)  backoff (in 1.0s)"),
            "\n{table}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0.04), "0.0s");
        assert_eq!(duration(59.9), "59.9s");
        assert_eq!(duration(61.0), "1m01s");
        assert_eq!(duration(7325.0), "2h02m");
        assert_eq!(duration(2.0 * 86400.0 + 3600.0 * 4.0), "2d04h");
    }
}
