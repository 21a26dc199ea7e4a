//! Prometheus metrics (`gatewayd --metrics`), as a scraper sees them: gatewayd and a
//! wireguard-go peer joined by one tunnel ([`Pair`]), scraped with curl from inside gatewayd's
//! namespace before and after pings both ways through the tunnel, with the eBPF data path and
//! with `--no-ebpf`. The text is parsed as Prometheus would, and the counters that must have
//! moved are checked: the peer's bytes and packets on the path that carried them, the
//! programs' counters by reason with eBPF, none of either without; the metrics agree with the
//! status socket read around the scrape.
//!
//! And the operator's mistakes: a metrics address already taken (given in full, as an address
//! alone, as a port alone, or left to the default) and a value that is not an address make
//! gatewayd refuse to start with one line naming it, before it detaches, leaving nothing.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail, ensure};
use gateway::daemon::status::PathCounters;
use gateway_tests::gatewayd::{DataPath, PeerPaths, gatewayd_binary, leftovers};
use gateway_tests::pair::{GATEWAYD_TUNNEL, PEER_TUNNEL, Pair, PairSpec};
use gateway_tests::traffic::ping_until_clean;
use gateway_tests::{Netns, TestDir, require_root, require_tools, unique_ifname};

const TOOLS: &[&str] = &["ip", "ping", "wg", "curl", "wireguard-go"];
const PINGS: u32 = 10;
const RETRY_TIMEOUT: Duration = Duration::from_secs(20);
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Where a bare `--metrics` listens.
const DEFAULT_METRICS: &str = "127.0.0.1:9586";

#[test]
fn metrics_move_with_traffic_on_the_ebpf_path() -> Result<()> {
    // The default address (a bare `--metrics`).
    scrape_during_traffic(DataPath::Ebpf, "", DEFAULT_METRICS)
}

#[test]
fn metrics_move_with_traffic_on_the_userspace_path() -> Result<()> {
    // A port alone: loopback.
    scrape_during_traffic(DataPath::Userspace, "9100", "127.0.0.1:9100")
}

fn scrape_during_traffic(data_path: DataPath, option: &str, address: &str) -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new(&format!("metrics-{data_path}"))?;
    let mut spec = PairSpec::with_wireguard_go(data_path);
    spec.gatewayd.metrics = Some(option.to_string());
    let pair = Pair::build(&dir, &spec)?;
    let address: SocketAddr = address.parse()?;
    run(&pair, &dir, address).map_err(|error| dir.attach_logs(error))
}

fn run(pair: &Pair, dir: &TestDir, address: SocketAddr) -> Result<()> {
    let started = unix_now();
    pair.establish(dir)?;
    let key = pair.peer_keys.public_key.as_str();
    let ebpf = pair.spec.gatewayd.data_path == DataPath::Ebpf;

    let status_before = pair.gatewayd.peer_counters(key)?;
    let before = scrape(pair.gatewayd_ns(), address)?;
    let status_between = pair.gatewayd.peer_counters(key)?;
    let mut echoes = 0;
    for (from, to) in [
        (pair.gatewayd_ns(), IpAddr::V4(PEER_TUNNEL.0)),
        (pair.peer_ns(), IpAddr::V4(GATEWAYD_TUNNEL.0)),
    ] {
        echoes += u64::from(ping_until_clean(from, to, PINGS, RETRY_TIMEOUT)?.received);
    }
    let after = scrape(pair.gatewayd_ns(), address)?;
    let status_after = pair.gatewayd.peer_counters(key)?;
    eprintln!("{echoes} echo messages each way; scraped after them:\n{}", after.text);

    // The daemon as a whole.
    let interface = pair.gatewayd.ifname();
    ensure!(after.value("gateway_peers", &with_interface(interface, &[]))? == 1.0, "one peer");
    let (in_use, other) = if ebpf { ("ebpf", "userspace") } else { ("userspace", "ebpf") };
    ensure!(
        after.value("gateway_data_path", &with_interface(interface, &[("path", in_use)]))? == 1.0
    );
    ensure!(
        after.value("gateway_data_path", &with_interface(interface, &[("path", other)]))? == 0.0
    );
    let handshake = after.value(
        "gateway_peer_last_handshake_timestamp_seconds",
        &with_interface(interface, &[("peer", key)]),
    )?;
    ensure!(
        handshake >= (started - 1) as f64 && handshake <= (unix_now() + 1) as f64,
        "the last handshake at {handshake}, not between the start ({started}) and now"
    );
    let completed =
        after.value("gateway_handshakes_completed_total", &with_interface(interface, &[]))?;
    ensure!(completed >= 1.0, "{completed} handshakes completed, after one at {handshake}");
    let mut initiations = 0.0;
    for direction in ["sent", "received"] {
        let labels = [("message", "initiation"), ("direction", direction)];
        initiations +=
            after.value("gateway_handshake_messages_total", &with_interface(interface, &labels))?;
    }
    ensure!(initiations >= 1.0, "no handshake initiation counted either way");

    // The peer's counters on the path that carried the pings grew by at least the pings.
    let path = in_use;
    let grew = |name: &str| -> Result<f64> {
        let labels = with_interface(interface, &[("peer", key), ("path", path)]);
        Ok(after.value(name, &labels)? - before.value(name, &labels)?)
    };
    let echo_bytes = (echoes * 32) as f64; // the smallest transport-data message
    for (name, least) in [
        ("gateway_peer_received_packets_total", echoes as f64),
        ("gateway_peer_sent_packets_total", echoes as f64),
        ("gateway_peer_received_bytes_total", echo_bytes),
        ("gateway_peer_sent_bytes_total", echo_bytes),
    ] {
        let growth = grew(name)?;
        ensure!(growth >= least, "{name} on the {path} path grew by {growth}, not {least} or more");
    }
    // Read from the same state as the status socket: between what it said around each scrape.
    let counters =
        |paths: &PeerPaths| -> PathCounters { if ebpf { paths.ebpf } else { paths.userspace } };
    let scraped = before.value(
        "gateway_peer_received_bytes_total",
        &with_interface(interface, &[("peer", key), ("path", path)]),
    )?;
    let (low, high) = (counters(&status_before).rx_bytes, counters(&status_between).rx_bytes);
    ensure!(
        low as f64 <= scraped && scraped <= high as f64,
        "received bytes scraped {scraped}, the status socket said {low} before and {high} after"
    );
    let scraped = after.value(
        "gateway_peer_sent_bytes_total",
        &with_interface(interface, &[("peer", key), ("path", path)]),
    )?;
    ensure!(
        scraped <= counters(&status_after).tx_bytes as f64,
        "sent bytes scraped {scraped}, more than the status socket said after: {:?}",
        status_after
    );

    let dataplane = |metrics: &Scrape, reason: &str| {
        metrics.value(
            "gateway_dataplane_packets_total",
            &with_interface(interface, &[("reason", reason)]),
        )
    };
    if ebpf {
        // Each echo message was decrypted in XDP and each was encrypted at the TUN's egress.
        for reason in ["rx_delivered_local", "tx_encrypted"] {
            let growth = dataplane(&after, reason)? - dataplane(&before, reason)?;
            ensure!(
                growth >= echoes as f64,
                "gateway_dataplane_packets_total{{reason=\"{reason}\"}} grew by {growth}, fewer \
                 than the {echoes} echo messages"
            );
        }
        ensure!(dataplane(&after, "error")? == 0.0, "the programs counted errors");
        ensure!(
            after.value(
                "gateway_program_loaded",
                &with_interface(interface, &[("program", "wg_rx_xdp")])
            )? == 1.0
        );
        let instructions = after.value(
            "gateway_program_verified_instructions",
            &with_interface(interface, &[("program", "wg_tx_tun")]),
        )?;
        ensure!(
            instructions > 0.0 && instructions < 1_000_000.0,
            "wg_tx_tun verified in {instructions} instructions"
        );
    } else {
        for sample in after.samples.iter() {
            ensure!(
                !(sample.labels.get("path").is_some_and(|p| p == "ebpf")
                    && sample.labels.contains_key("peer")),
                "an eBPF counter without eBPF: {sample:?}"
            );
            ensure!(
                sample.name != "gateway_dataplane_packets_total"
                    && !sample.name.starts_with("gateway_program_"),
                "a program's metric without eBPF: {sample:?}"
            );
        }
    }
    check_http(pair.gatewayd_ns(), address)
}

#[test]
fn a_taken_or_bad_metrics_address_refuses_the_start_with_one_line() -> Result<()> {
    require_root()?;
    require_tools(&["ip"])?;
    let netns = Netns::new("met")?;
    let _default = listen_in(&netns, DEFAULT_METRICS)?;
    let _other = listen_in(&netns, "127.0.0.1:9100")?;
    let taken = "is already in use";
    let cases: &[(&[&str], &str, &str)] = &[
        (&["-f", "--metrics", "127.0.0.1:9586"], "127.0.0.1:9586", taken),
        // Without -f: said before the daemon detaches.
        (&["--metrics", "127.0.0.1:9586"], "127.0.0.1:9586", taken),
        (&["-f", "--metrics", "127.0.0.1"], "127.0.0.1:9586", taken),
        (&["-f", "--metrics", "9100"], "127.0.0.1:9100", taken),
        (&["-f", "--metrics="], "127.0.0.1:9586", taken),
        (&["--metrics", "nonsense"], "'nonsense'", "not an IP address"),
        (&["-f", "--metrics", "127.0.0.1:99999"], "'127.0.0.1:99999'", "out of range"),
    ];
    for (args, naming, why) in cases {
        let ifname = unique_ifname("gw")?;
        let mut args = args.to_vec();
        args.push(&ifname);
        check_refused(&netns, &ifname, &args, naming, why)?;
    }
    // A bare --metrics after the interface name: the default address.
    let ifname = unique_ifname("gw")?;
    check_refused(&netns, &ifname, &["-f", &ifname, "--metrics"], DEFAULT_METRICS, taken)
}

/// gatewayd refuses to start with `args`: a non-zero exit, one line naming `naming` and
/// saying `why`, and no interface or socket left.
fn check_refused(
    netns: &Netns,
    ifname: &str,
    args: &[&str],
    naming: &str,
    why: &str,
) -> Result<()> {
    let what = format!("gatewayd {}", args.join(" "));
    let mut child = netns
        .command(gatewayd_binary()?)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output()?;
            bail!("`{what}` did not refuse to start: {}", String::from_utf8_lossy(&output.stderr));
        }
        thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.code().is_some_and(|code| code != 0),
        "`{what}` exited with {:?}; it said {stderr:?}",
        output.status
    );
    let lines: Vec<&str> = stderr.lines().filter(|line| !line.trim().is_empty()).collect();
    ensure!(lines.len() == 1, "`{what}` said {} lines, not one: {stderr:?}", lines.len());
    ensure!(
        lines[0].contains(naming) && lines[0].contains(why),
        "`{what}` said {:?}, which does not name {naming:?} or say {why:?}",
        lines[0]
    );
    let left = leftovers(netns, ifname, &[])?;
    ensure!(left.is_empty(), "`{what}` left {left:?}");
    Ok(())
}

/// A TCP listener on `address` inside `netns`, open until dropped.
fn listen_in(netns: &Netns, address: &str) -> Result<TcpListener> {
    let _inside = netns.enter()?;
    TcpListener::bind(address)
        .with_context(|| format!("listening on {address} in {}", netns.name()))
}

/// Another path is not found; another method is not allowed.
fn check_http(netns: &Netns, address: SocketAddr) -> Result<()> {
    let url = format!("http://{address}/other");
    let code = netns
        .run("curl", &["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", &url])?;
    ensure!(code.trim() == "404", "GET /other answered {code}");
    let url = format!("http://{address}/metrics");
    let code = netns.run(
        "curl",
        &["-sS", "--max-time", "10", "-X", "POST", "-o", "/dev/null", "-w", "%{http_code}", &url],
    )?;
    ensure!(code.trim() == "405", "POST /metrics answered {code}");
    Ok(())
}

/// `labels` after the `interface` label every sample has.
fn with_interface<'a>(
    interface: &'a str,
    labels: &[(&'static str, &'a str)],
) -> Vec<(&'static str, &'a str)> {
    let mut all = vec![("interface", interface)];
    all.extend_from_slice(labels);
    all
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// One sample of a scrape.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, parsed.
struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    /// The value of the one sample of `name` whose labels are exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        let wanted: BTreeMap<String, String> =
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let found: Vec<&Sample> =
            self.samples.iter().filter(|s| s.name == name && s.labels == wanted).collect();
        match found.as_slice() {
            [sample] => Ok(sample.value),
            [] => bail!("no sample {name}{wanted:?} in the scrape:\n{}", self.text),
            _ => bail!("{} samples {name}{wanted:?} in the scrape", found.len()),
        }
    }
}

/// `GET /metrics` with curl inside `netns`: a 200 in the text format, parsed.
fn scrape(netns: &Netns, address: SocketAddr) -> Result<Scrape> {
    let url = format!("http://{address}/metrics");
    let response = netns.run("curl", &["-sS", "--max-time", "10", "-i", &url])?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("no end of the headers in {response:?}"))?;
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default();
    ensure!(status.starts_with("HTTP/1.1 200"), "GET {url}: {status}");
    let content_type = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.trim().to_string())
        .context("no Content-Type")?;
    ensure!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "Content-Type {content_type}, not the text format 0.0.4"
    );
    let samples = parse(body).with_context(|| format!("parsing the scrape:\n{body}"))?;
    Ok(Scrape { text: body.to_string(), samples })
}

/// The text format: `# HELP`/`# TYPE` lines (each family's TYPE before its samples), then
/// `name{label="value",...} value`.
fn parse(text: &str) -> Result<Vec<Sample>> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    ensure!(["counter", "gauge"].contains(&kind), "type {kind} of {name}");
                    ensure!(
                        name.ends_with("_total") == (kind == "counter"),
                        "{name} is a {kind}: counters, and only they, end in _total"
                    );
                    ensure!(types.insert(name.to_string(), kind.to_string()).is_none());
                }
                (Some("HELP"), Some(_), Some(_)) => {}
                _ => bail!("a comment that is neither HELP nor TYPE: {line}"),
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let sample = parse_sample(line).with_context(|| format!("the line {line:?}"))?;
        ensure!(sample.name.starts_with("gateway_"), "{} is not gateway_*", sample.name);
        ensure!(types.contains_key(&sample.name), "{} has no TYPE before it", sample.name);
        ensure!(sample.labels.contains_key("interface"), "{line}: no interface label");
        samples.push(sample);
    }
    Ok(samples)
}

fn parse_sample(line: &str) -> Result<Sample> {
    let name_end = line.find(['{', ' ']).context("no value")?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = inner.split_once("=\"").context("a label without =\"")?;
            let (value, after) = unquote(after)?;
            ensure!(labels.insert(label.to_string(), value).is_none(), "{label} twice");
            inner = match after.chars().next() {
                Some(',') => &after[1..],
                Some('}') => after,
                _ => bail!("labels not separated by commas"),
            };
        }
    }
    let value = rest.strip_prefix(' ').context("no space before the value")?;
    Ok(Sample { name, labels, value: parse_value(value)? })
}

/// A label value up to its closing quote, unescaped, and what follows the quote.
fn unquote(text: &str) -> Result<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, c @ ('\\' | '"'))) => value.push(c),
                other => bail!("a bad escape {other:?}"),
            },
            '"' => return Ok((value, &text[i + 1..])),
            c => value.push(c),
        }
    }
    bail!("an unterminated label value")
}

fn parse_value(text: &str) -> Result<f64> {
    Ok(match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => text.parse().with_context(|| format!("the value {text:?}"))?,
    })
}

#[test]
fn the_scrape_parser_reads_the_text_format() -> Result<()> {
    let text = "# HELP gateway_x_total Things.\n# TYPE gateway_x_total counter\n\
                gateway_x_total{interface=\"wg0\",peer=\"a\\\"b\\\\c\\nd\"} 12\n\
                # TYPE gateway_y gauge\ngateway_y{interface=\"wg0\"} +Inf\n";
    let samples = parse(text)?;
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0].labels["peer"], "a\"b\\c\nd");
    assert_eq!(samples[0].value, 12.0);
    assert_eq!(samples[1].value, f64::INFINITY);
    assert!(parse("gateway_z{interface=\"wg0\"} 1\n").is_err(), "no TYPE");
    assert!(parse("# TYPE gateway_z counter\ngateway_z{interface=\"wg0\"} 1\n").is_err());
    assert!(parse("# TYPE gateway_z gauge\ngateway_z{interface=\"wg0\" 1\n").is_err());
    Ok(())
}
