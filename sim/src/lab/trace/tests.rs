use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn ns(n: u64) -> Duration {
    Duration::from_nanos(n)
}

fn err(text: &str, format: TraceFormat) -> TraceError {
    match parse(text, format) {
        Ok(t) => panic!("expected an error, got {t:?}"),
        Err(e) => e,
    }
}

fn arrivals(t: &Trace) -> Vec<Duration> {
    t.requests.iter().map(|r| r.arrival).collect()
}

const NGINX_LINE: &str = "203.0.113.7 - - [07/Dec/2026:06:22:55 +0000] \
    \"GET /api/items?page=2 HTTP/1.1\" 200 1843 \"-\" \"curl/8.5.0\" 0.081 0.080";
const APACHE_LINE: &str = "203.0.113.7 - - [07/Dec/2026:07:22:55 +0100] \
    \"GET /api/items HTTP/1.1\" 200 1843 \"-\" \"curl/8.5.0\" 81234";

#[test]
fn csv_exact_values_shift_and_keys() {
    let t = parse(
        "100.5,0.080,/api/items\n101.25,1.5\n100.5,0,  /x y  \n",
        TraceFormat::Csv,
    )
    .unwrap();
    assert_eq!(t.format, "csv");
    assert_eq!(
        t.requests,
        vec![
            Request {
                arrival: ms(0),
                service: ms(80),
                key: Some("/api/items".into())
            },
            Request {
                arrival: ms(0),
                service: ms(0),
                key: Some("/x y".into())
            },
            Request {
                arrival: ms(750),
                service: ms(1500),
                key: None
            },
        ]
    );
    assert_eq!(t.span(), ms(750));
}

#[test]
fn csv_epoch_seconds_are_exact() {
    let t = parse(
        "1733560000.123,0.004\n1733560000.124,0.001\n",
        TraceFormat::Csv,
    )
    .unwrap();
    assert_eq!(arrivals(&t), vec![ms(0), ms(1)]);
    assert_eq!(t.requests[0].service, ms(4));
}

#[test]
fn csv_unsorted_is_sorted_stably() {
    let t = parse("3,0.1,c\n1,0.1,a\n2,0.1,b\n1,0.1,a2\n", TraceFormat::Csv).unwrap();
    let keys: Vec<_> = t.requests.iter().map(|r| r.key.clone().unwrap()).collect();
    assert_eq!(keys, ["a", "a2", "b", "c"]);
    assert_eq!(arrivals(&t), vec![ms(0), ms(0), ms(1000), ms(2000)]);
}

#[test]
fn csv_header_comments_and_blank_lines_are_skipped() {
    let text =
        "\u{feff}# made by hand\n\nTime,Duration,Path\n  \n0.5,0.25,/a\n# done\n1e0,2.5e-1\n";
    let t = parse(text, TraceFormat::Auto).unwrap();
    assert_eq!(t.format, "csv");
    assert_eq!(arrivals(&t), vec![ms(0), ms(500)]);
    assert_eq!(t.requests[1].service, ms(250));
    // A header is only the first data line: later it is an error.
    let e = err("0,1\narrival_s,service_s\n", TraceFormat::Csv);
    assert_eq!((e.line, e.field), (2, "arrival_s"));
    // "nan" is a number (not finite), not a name: no header.
    let e = err("nan,inf\n", TraceFormat::Csv);
    assert_eq!((e.line, e.field), (1, "arrival_s"));
}

#[test]
fn csv_errors_name_line_and_field() {
    let e = err("arrival_s,service_s\n0,0.1\n\n1,abc\n", TraceFormat::Csv);
    assert_eq!((e.line, e.field), (4, "service_s"));
    assert_eq!(
        e.to_string(),
        "line 4, field service_s: \"abc\" is not a number of seconds (write e.g. 0.125)"
    );
    let e = err("0,0.1\n-1,0.1\n", TraceFormat::Csv);
    assert_eq!((e.line, e.field), (2, "arrival_s"));
    assert!(e.problem.contains("negative"), "{e}");
    let e = err("0,-0.5\n", TraceFormat::Csv);
    assert_eq!((e.line, e.field), (1, "service_s"));
    assert!(e.problem.contains("negative"), "{e}");
    let e = err("0,0.1\n1\n", TraceFormat::Csv);
    assert_eq!((e.line, e.field), (2, "service_s"));
    assert!(e.problem.starts_with("missing"), "{e}");
    let e = err("0,0.1,/a,b\n", TraceFormat::Csv);
    assert_eq!((e.line, e.field), (1, "columns"));
    assert!(e.problem.starts_with("4 columns"), "{e}");
    let e = err("0,90000\n", TraceFormat::Csv);
    assert_eq!((e.line, e.field), (1, "service_s"));
    assert!(e.problem.contains("longer than a day"), "{e}");
    let e = err("inf,0.1\n", TraceFormat::Csv);
    assert!(e.problem.contains("finite"), "{e}");
    let e = err("0,0,1\n0,0\n0,0,1,2,3\n", TraceFormat::Auto);
    assert_eq!((e.line, e.field), (3, "columns"));
}

#[test]
fn empty_file_is_an_error() {
    for format in [
        TraceFormat::Auto,
        TraceFormat::Csv,
        TraceFormat::Nginx,
        TraceFormat::Apache,
    ] {
        for text in ["", "\n\n", "# nothing\n", "arrival_s,service_s\n"] {
            let is_log = format == TraceFormat::Nginx || format == TraceFormat::Apache;
            if is_log && text.starts_with('a') {
                continue; // a CSV header is a bad log line, not an empty file
            }
            let e = err(text, format);
            assert_eq!((e.line, e.field), (0, "file"), "{text:?} as {format:?}");
            assert!(e.problem.starts_with("no requests"), "{e}");
        }
    }
}

#[test]
fn nginx_arrival_is_end_minus_request_time() {
    let text = format!(
        "{NGINX_LINE}\n{}",
        NGINX_LINE
            .replace(":55 +", ":57 +")
            .replace("0.081", "1.500")
    );
    let t = parse(&text, TraceFormat::Nginx).unwrap();
    assert_eq!(t.format, "nginx");
    // Ends at 55 and 57 s; arrivals at 55 - 0.081 and 57 - 1.5 = 55.5.
    assert_eq!(arrivals(&t), vec![ms(0), ms(581)]);
    assert_eq!(t.requests[0].service, ms(81));
    assert_eq!(t.requests[1].service, ms(1500));
    assert_eq!(t.requests[0].key.as_deref(), Some("/api/items?page=2"));
}

#[test]
fn nginx_msec_form() {
    let text = "1733560000.500 10.0.0.1 - - \"GET /a HTTP/1.1\" 200 5 \"-\" \"ua\" 0.100 -\n\
                1733560000.200 10.0.0.1 - - \"GET /b HTTP/1.1\" 200 5 \"-\" \"ua\" 0.050\n";
    let t = parse(text, TraceFormat::Auto).unwrap();
    assert_eq!(t.format, "nginx");
    // Arrivals 0.400 and 0.150: /b first.
    assert_eq!(t.requests[0].key.as_deref(), Some("/b"));
    assert_eq!(arrivals(&t), vec![ms(0), ms(250)]);
    let e = err(
        "1733560000.5x 10.0.0.1 \"GET / HTTP/1.1\" 200 5 \"-\" \"ua\" 0.1\n",
        TraceFormat::Nginx,
    );
    assert_eq!((e.line, e.field), (1, "time_local"));
}

#[test]
fn nginx_common_format_with_request_time() {
    let text = "10.0.0.1 - - [07/Dec/2026:06:22:55 +0000] \"GET /c HTTP/1.1\" 304 - 0.012\n";
    let t = parse(text, TraceFormat::Auto).unwrap();
    assert_eq!(t.format, "nginx");
    assert_eq!(t.requests[0].service, ms(12));
    assert_eq!(t.requests[0].key.as_deref(), Some("/c"));
}

#[test]
fn same_second_is_spread_in_file_order() {
    let line = |sec: u32, rt: &str| {
        format!("1.2.3.4 - - [07/Dec/2026:06:22:{sec:02} +0000] \"GET /{sec} HTTP/1.1\" 200 1 \"-\" \"ua\" {rt}\n")
    };
    let text = [
        line(10, "0.000"),
        line(10, "0.000"),
        line(10, "0.000"),
        line(11, "0.000"),
    ]
    .concat();
    let t = parse(&text, TraceFormat::Nginx).unwrap();
    assert_eq!(
        arrivals(&t),
        vec![ns(0), ns(333_333_333), ns(666_666_666), ms(1000)]
    );
    // Apache: the same spreading of the received time.
    let a = |sec: u32| {
        format!("1.2.3.4 - - [07/Dec/2026:06:22:{sec:02} +0000] \"GET / HTTP/1.1\" 200 1 7\n")
    };
    let t = parse(&[a(5), a(5), a(6), a(5)].concat(), TraceFormat::Apache).unwrap();
    assert_eq!(
        arrivals(&t),
        vec![ns(0), ns(333_333_333), ns(666_666_666), ms(1000)]
    );
    assert_eq!(t.requests[3].service, Duration::from_micros(7));
}

#[test]
fn timezone_offsets_are_applied() {
    // 01:22:50 -0500 is 06:22:50 UTC, five seconds before 06:22:55 +0000; 07:22:58 +0130
    // is 05:52:58 UTC, the earliest of the three although its local time is the latest.
    let text = format!(
        "{}\n{}\n{}\n",
        NGINX_LINE.replace("0.081", "0.000"),
        NGINX_LINE
            .replace("06:22:55 +0000", "01:22:50 -0500")
            .replace("0.081", "0.000")
            .replace("/api/items?page=2", "/early"),
        NGINX_LINE
            .replace("06:22:55 +0000", "07:22:58 +0130")
            .replace("0.081", "0.000")
            .replace("/api/items?page=2", "/india"),
    );
    let t = parse(&text, TraceFormat::Nginx).unwrap();
    let keys: Vec<_> = t.requests.iter().map(|r| r.key.clone().unwrap()).collect();
    assert_eq!(keys, ["/india", "/early", "/api/items?page=2"]);
    assert_eq!(arrivals(&t), vec![ms(0), ms(1_792_000), ms(1_797_000)]);
}

#[test]
fn days_from_civil_matches_known_dates() {
    assert_eq!(days_from_civil(1970, 1, 1), 0);
    assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    assert_eq!(days_from_civil(1969, 12, 31), -1);
    // 2024-12-07T06:22:55Z is epoch 1733552575.
    assert_eq!(
        clf_time("07/Dec/2024:06:22:55 +0000", "t"),
        Ok(1_733_552_575)
    );
    assert_eq!(
        clf_time("07/Dec/2024:07:22:55 +0100", "t"),
        Ok(1_733_552_575)
    );
    assert_eq!(
        clf_time("29/Feb/2024:00:00:00 +0000", "t").map(|s| s % 86_400),
        Ok(0)
    );
    assert!(clf_time("29/Feb/2026:00:00:00 +0000", "t").is_err());
}

#[test]
fn apache_combined_with_d() {
    let text = format!(
        "{APACHE_LINE}\n{}\n",
        APACHE_LINE.replace(":55 +", ":56 +").replace("81234", "5")
    );
    let t = parse(&text, TraceFormat::Apache).unwrap();
    assert_eq!(t.format, "apache");
    assert_eq!(arrivals(&t), vec![ms(0), ms(1000)]);
    assert_eq!(t.requests[0].service, Duration::from_micros(81_234));
    assert_eq!(t.requests[1].service, Duration::from_micros(5));
}

#[test]
fn auto_detects_each_format() {
    assert_eq!(
        parse(NGINX_LINE, TraceFormat::Auto).unwrap().format,
        "nginx"
    );
    let no_upstream = NGINX_LINE.trim_end_matches(" 0.080");
    assert_eq!(
        parse(no_upstream, TraceFormat::Auto).unwrap().format,
        "nginx"
    );
    let dash_upstream = NGINX_LINE.replace(" 0.080", " -");
    assert_eq!(
        parse(&dash_upstream, TraceFormat::Auto).unwrap().format,
        "nginx"
    );
    assert_eq!(
        parse(APACHE_LINE, TraceFormat::Auto).unwrap().format,
        "apache"
    );
    assert_eq!(
        parse("# c\nt,s\n1,2\n", TraceFormat::Auto).unwrap().format,
        "csv"
    );
    let e = err(
        "1.2.3.4 - - [07/Dec/2026:06:22:55 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"ua\"\n",
        TraceFormat::Auto,
    );
    assert_eq!((e.line, e.field), (1, "format"));
}

#[test]
fn log_keys() {
    assert_eq!(
        request_path("GET /api/x?y=1 HTTP/1.1").as_deref(),
        Some("/api/x?y=1")
    );
    assert_eq!(request_path("GET /old").as_deref(), Some("/old"));
    assert_eq!(request_path("-"), None);
    assert_eq!(request_path("\\x16\\x03\\x01\\x00"), None);
    assert_eq!(request_path("GET / HTTP/1.1 extra"), None);
    let line = NGINX_LINE.replace("GET /api/items?page=2 HTTP/1.1", "-");
    assert_eq!(
        parse(&line, TraceFormat::Nginx).unwrap().requests[0].key,
        None
    );
    // Apache escapes a quote in the request as \".
    let line = APACHE_LINE.replace("GET /api/items", "GET /q?a=\\\"b\\\"");
    let t = parse(&line, TraceFormat::Apache).unwrap();
    assert_eq!(t.requests[0].key.as_deref(), Some("/q?a=\\\"b\\\""));
}

#[test]
fn log_errors_name_line_and_field() {
    let two = |bad: &str| format!("{NGINX_LINE}\n\n{bad}\n");
    let e = err(
        &two(&NGINX_LINE.replace("0.081", "0,081")),
        TraceFormat::Nginx,
    );
    assert_eq!((e.line, e.field), (3, "request_time"));
    assert_eq!(
        e.to_string(),
        "line 3, field request_time: \"0,081\" is not a number of seconds (nginx $request_time, e.g. 0.004)"
    );
    let e = err(
        &two(&NGINX_LINE.replace("0.081", "-0.081")),
        TraceFormat::Nginx,
    );
    assert_eq!((e.line, e.field), (3, "request_time"));
    assert!(e.problem.contains("negative"), "{e}");
    let e = err(&two(&NGINX_LINE.replace("Dec", "Dex")), TraceFormat::Nginx);
    assert_eq!((e.line, e.field), (3, "time_local"));
    assert!(e.problem.contains("\"Dex\" is not a month"), "{e}");
    let e = err(
        &two(&NGINX_LINE.replace("07/Dec/2026:06:22:55", "2026-12-07T06:22:55")),
        TraceFormat::Nginx,
    );
    assert_eq!((e.line, e.field), (3, "time_local"));
    assert!(e.problem.contains("is not a time"), "{e}");
    let e = err(&two(&NGINX_LINE.replace(" +0000", "")), TraceFormat::Nginx);
    assert_eq!((e.line, e.field), (3, "time_local"));
    let e = err(
        &two(&NGINX_LINE.replace("06:22:55", "24:22:55")),
        TraceFormat::Nginx,
    );
    assert_eq!((e.line, e.field), (3, "time_local"));
    let e = err(
        &two(&NGINX_LINE.replace(" [07/Dec/2026:06:22:55 +0000]", "")),
        TraceFormat::Nginx,
    );
    assert_eq!((e.line, e.field), (3, "time_local"));
    assert!(e.problem.starts_with("missing"), "{e}");
    let e = err(
        &two(&NGINX_LINE.replace(" 0.081 0.080", "")),
        TraceFormat::Nginx,
    );
    assert_eq!((e.line, e.field), (3, "request_time"));
    assert!(e.problem.starts_with("missing"), "{e}");

    let e = err(
        &format!(
            "{APACHE_LINE}\n{}\n",
            APACHE_LINE.replace("81234", "81.234")
        ),
        TraceFormat::Apache,
    );
    assert_eq!((e.line, e.field), (2, "D"));
    assert!(e.problem.contains("whole number of microseconds"), "{e}");
    let e = err(&APACHE_LINE.replace("Dec", "dez"), TraceFormat::Apache);
    assert_eq!((e.line, e.field), (1, "time"));
    assert!(
        e.problem.contains("not a month") && e.problem.contains("Apache %t"),
        "{e}"
    );
    let e = err(
        &APACHE_LINE.replace(
            "[07/Dec/2026:07:22:55 +0100]",
            "[31/Nov/2026:07:22:55 +0100]",
        ),
        TraceFormat::Apache,
    );
    assert_eq!((e.line, e.field), (1, "time"));
    let e = err(
        &APACHE_LINE.replace("81234", "99999999999999999999999999"),
        TraceFormat::Apache,
    );
    assert_eq!((e.line, e.field), (1, "D"));
    assert!(e.problem.contains("longer than a day"), "{e}");
    let e = err(
        "1733560000.1x0 - \"GET / HTTP/1.1\" 1 2 \"-\" \"-\" 0.1\n",
        TraceFormat::Nginx,
    );
    assert_eq!(e.field, "time_local");
}

#[test]
fn scaled_halves_arrivals_and_keeps_service() {
    let t = parse("0,0.5,a\n0.123,0.25\n3,2\n", TraceFormat::Csv).unwrap();
    let s = t.scaled(2.0);
    assert_eq!(arrivals(&s), vec![ms(0), ns(61_500_000), ms(1500)]);
    let services: Vec<_> = s.requests.iter().map(|r| r.service).collect();
    assert_eq!(services, vec![ms(500), ms(250), ms(2000)]);
    assert_eq!(s.requests[0].key.as_deref(), Some("a"));
    assert_eq!(s.format, "csv");
    assert_eq!(t.scaled(0.5).span(), ms(6000));
    assert_eq!(
        Trace {
            requests: vec![],
            format: "csv"
        }
        .span(),
        Duration::ZERO
    );
}

#[test]
fn format_names() {
    assert_eq!(TraceFormat::from_name("auto"), Some(TraceFormat::Auto));
    assert_eq!(TraceFormat::from_name("csv"), Some(TraceFormat::Csv));
    assert_eq!(TraceFormat::from_name("nginx"), Some(TraceFormat::Nginx));
    assert_eq!(TraceFormat::from_name("Apache"), Some(TraceFormat::Apache));
    assert_eq!(TraceFormat::from_name("json"), None);
}

#[test]
fn example_csv() {
    let t = parse(
        include_str!("../../../traces/example.csv"),
        TraceFormat::Auto,
    )
    .unwrap();
    assert_eq!(t.format, "csv");
    assert_eq!(t.requests.len(), 2984);
    // The first line is 0.036,0.149,/api/search; the trace starts at zero.
    assert_eq!(
        t.requests[0],
        Request {
            arrival: ms(0),
            service: ms(149),
            key: Some("/api/search".into())
        }
    );
    assert_eq!(t.requests[1].arrival, ms(160));
    assert_eq!(t.span(), ms(299_955 - 36));
    assert!(t.requests.windows(2).all(|w| w[0].arrival <= w[1].arrival));
}

#[test]
fn example_nginx_log() {
    let t = parse(
        include_str!("../../../traces/example-nginx.log"),
        TraceFormat::Auto,
    )
    .unwrap();
    assert_eq!(t.format, "nginx");
    assert_eq!(t.requests.len(), 12);
    // The first line ends at 06:22:55 after 0.081 s, so it arrived first, at -0.081 s.
    // The second ends in the same second, spread to +0.5 s: arrival 0.498 (+0.081).
    assert_eq!(
        t.requests[1],
        Request {
            arrival: ms(579),
            service: ms(2),
            key: Some("/static/app.js".into())
        }
    );
    // Three requests end in 06:22:57: at +0, +1/3, +2/3 s.
    assert_eq!(t.requests[4].arrival, ns(2_350_333_333));
    assert_eq!(t.requests[6].key, None); // a TLS handshake on the HTTP port
    assert_eq!(t.requests[8].arrival, ms(4207));
    assert_eq!(t.requests[8].service, ms(1874));
    assert_eq!(t.span(), ms(8002));
}

#[test]
fn example_apache_log() {
    let t = parse(
        include_str!("../../../traces/example-apache.log"),
        TraceFormat::Auto,
    )
    .unwrap();
    assert_eq!(t.format, "apache");
    assert_eq!(t.requests.len(), 12);
    assert_eq!(
        arrivals(&t)[..6],
        [
            ms(0),
            ms(500),
            ms(1000),
            ms(2000),
            ns(2_333_333_333),
            ns(2_666_666_666)
        ]
    );
    assert_eq!(t.requests[0].service, Duration::from_micros(81_234));
    assert_eq!(t.requests[6].key, None); // "-": the client sent nothing before the timeout
    assert_eq!(t.requests[6].service, Duration::from_micros(20_001_843));
    assert_eq!(t.span(), ms(8000));
}

/// A tiny deterministic generator, so the no-panic test needs no dependency.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

#[test]
fn no_panic_on_prefixes_mutations_and_garbage() {
    let formats = [
        TraceFormat::Auto,
        TraceFormat::Csv,
        TraceFormat::Nginx,
        TraceFormat::Apache,
    ];
    let msec = "1733560000.123 10.0.0.1 - - \"GET /a HTTP/1.1\" 200 5 \"-\" \"ua\" 0.004 -";
    let csv = "arrival_s,service_s,key\n1733560000.125,0.080,/api/items";
    let seeds = [NGINX_LINE, APACHE_LINE, msec, csv, "0.5,1e3,é\u{301}ü"];
    let mut inputs: Vec<String> = Vec::new();
    for seed in seeds {
        for (i, _) in seed.char_indices().chain([(seed.len(), ' ')]) {
            inputs.push(seed[..i].to_string());
            inputs.push(format!("{}\n{}", seed, &seed[..i]));
            inputs.push(seed[i..].to_string());
        }
    }
    let mut rng = Lcg(7);
    let alphabet = b"0123456789.,:-+/[]\" \n#eE\\abcDecJanGET";
    for _ in 0..3000 {
        let seed = seeds[rng.next() as usize % seeds.len()].as_bytes();
        let mut bytes = seed.to_vec();
        for _ in 0..1 + rng.next() % 4 {
            if bytes.is_empty() {
                break;
            }
            let at = rng.next() as usize % bytes.len();
            match rng.next() % 3 {
                0 => bytes[at] = alphabet[rng.next() as usize % alphabet.len()],
                1 => bytes[at] = rng.next() as u8,
                _ => {
                    bytes.remove(at);
                }
            }
        }
        inputs.push(String::from_utf8_lossy(&bytes).into_owned());
        let noise: Vec<u8> = (0..rng.next() % 80).map(|_| rng.next() as u8).collect();
        inputs.push(String::from_utf8_lossy(&noise).into_owned());
    }
    for extreme in [
        "99999999999999999999.9,0",
        "18446744073709551615,0\n0,0",
        "1e18,0\n0,0",
        "0.0000000001,0",
    ] {
        inputs.push(extreme.to_string());
    }
    for text in &inputs {
        for format in formats {
            match parse(text, format) {
                Ok(t) => {
                    let _ = t.scaled(3.0).span();
                    assert!(t.requests.windows(2).all(|w| w[0].arrival <= w[1].arrival));
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
    }
}

#[test]
fn stamps_are_utc_nanoseconds() {
    assert_eq!(utc_stamp_ns("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        utc_stamp_ns("1970-01-02T00:00:01.5Z"),
        Some(86_401_500_000_000)
    );
    // `date -u -d 2026-12-07T07:00:33Z +%s` = 1796626833
    assert_eq!(
        utc_stamp_ns("2026-12-07T07:00:33.910066Z"),
        Some(1_796_626_833_910_066_000)
    );
    assert_eq!(
        utc_stamp_ns("2000-03-01T00:00:00Z"),
        Some(951_868_800_000_000_000)
    );
    for bad in [
        "",
        "2026-12-07",
        "2026-12-07T07:00:33",
        "2026-13-07T07:00:33Z",
        "2026-12-07T24:00:00Z",
        "2026-12-07T07:00:33.x1Z",
        "INFO",
    ] {
        assert_eq!(utc_stamp_ns(bad), None, "{bad}");
    }
}
