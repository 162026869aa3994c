//! The load generator of benches/ingest_load.sh: POSTs a JSON body over
//! keep-alive connections with a fresh, unique `messageId` in every event, as
//! the SDKs send them (oha can only repeat one body, which with ids would be
//! one stored request and then duplicates), and prints oha-style figures.
//!
//! ```text
//! load_gen --url http://127.0.0.1:18080/v1/batch --body batch.json -c 64 -z 10s \
//!          [-n REQUESTS] [-q RATE] [-H 'Authorization: Basic …'] [--keep-ids]
//! ```
//! The body is a batch (`{"batch": [event, …]}`) or one event; each request
//! sets every event's `messageId` to `<16 hex digits of this run>-<19-digit
//! counter>` (36 characters, the length of a UUID), unique across runs.
//! `--body` may be given more than once: request n then uses body
//! n mod (number of bodies), e.g. batches for different users.
//! It stops after `-z` (no request is due from then on), after `-n` requests,
//! or at the first of the two; at least one is needed. The last line of the
//! output, `load_gen_summary key=value …`, repeats the figures for scripts.
//! Without `-q` each connection sends its next request as soon as the last
//! is answered (closed loop). With `-q RATE`, request n is due at
//! `start + n / RATE` and its latency counts from then, so a slow server
//! cannot hide its queueing (no coordinated omission).

use clap::Parser;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Characters of a generated id (and of the placeholder it overwrites).
const ID_LEN: usize = 36;
/// Stands in for each id in the serialised template; JSON leaves it as is.
const PLACEHOLDER: &str = "~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~";

#[derive(Parser)]
#[command(about = "HTTP load with a unique messageId per event")]
struct Args {
    /// Where to POST.
    #[arg(long)]
    url: String,
    /// JSON body template: a batch or one event. Repeatable: requests
    /// cycle through the bodies.
    #[arg(long, required = true)]
    body: Vec<std::path::PathBuf>,
    /// Concurrent connections.
    #[arg(short = 'c', long, default_value_t = 64)]
    conns: usize,
    /// How long to send for (e.g. 10s).
    #[arg(short = 'z', long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Requests to send in all (with -z: whichever ends first).
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Requests per second in total (open loop); without it, closed loop.
    #[arg(short = 'q', long)]
    rate: Option<f64>,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Send the body unchanged (no ids: the server generates them).
    #[arg(long)]
    keep_ids: bool,
}

/// Makes each request's body: a template with fresh ids written in.
struct Bodies {
    templates: Vec<Template>,
    /// `<run>-`, the first 17 characters of every id.
    prefix: [u8; 17],
    /// Ids handed out so far.
    next: AtomicU64,
    /// Bodies handed out so far (picks the template).
    requests: AtomicU64,
}

/// One serialised body and where its ids go.
struct Template {
    bytes: Vec<u8>,
    /// Where each id goes in `bytes`.
    slots: Vec<usize>,
}

impl Template {
    fn new(template: &Value, keep_ids: bool) -> Result<Template, String> {
        let mut value = template.clone();
        let mut events_with_ids = 0;
        if !keep_ids {
            let events: Vec<&mut Value> = match value.get_mut("batch") {
                Some(Value::Array(items)) => items.iter_mut().collect(),
                Some(_) => return Err("\"batch\" must be an array".into()),
                None => vec![&mut value],
            };
            for e in events {
                let Value::Object(e) = e else {
                    return Err("every event must be a JSON object".into());
                };
                e.insert("messageId".into(), PLACEHOLDER.into());
                events_with_ids += 1;
            }
        }
        let template = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
        let slots: Vec<usize> = template
            .windows(ID_LEN)
            .enumerate()
            .filter(|(_, w)| *w == PLACEHOLDER.as_bytes())
            .map(|(at, _)| at)
            .collect();
        if slots.len() != events_with_ids {
            return Err(format!(
                "the template holds {PLACEHOLDER:?} itself; change that value"
            ));
        }
        Ok(Template {
            bytes: template,
            slots,
        })
    }
}

impl Bodies {
    fn new(templates: &[Value], keep_ids: bool) -> Result<Bodies, String> {
        let templates = templates
            .iter()
            .map(|t| Template::new(t, keep_ids))
            .collect::<Result<Vec<_>, _>>()?;
        let mut prefix = [b'-'; 17];
        prefix[..16].copy_from_slice(format!("{:016x}", rand::random::<u64>()).as_bytes());
        Ok(Bodies {
            templates,
            prefix,
            next: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        })
    }

    fn next(&self) -> Vec<u8> {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        let t = &self.templates[(n % self.templates.len() as u64) as usize];
        let mut body = t.bytes.clone();
        let first = self.next.fetch_add(t.slots.len() as u64, Ordering::Relaxed);
        for (i, &at) in t.slots.iter().enumerate() {
            let id = &mut body[at..at + ID_LEN];
            id[..17].copy_from_slice(&self.prefix);
            let mut n = first + i as u64;
            for digit in id[17..].iter_mut().rev() {
                *digit = b'0' + (n % 10) as u8;
                n /= 10;
            }
        }
        body
    }
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    /// Microseconds per answered request.
    latencies: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        for (e, n) in other.errors {
            *self.errors.entry(e).or_default() += n;
        }
    }
}

struct Plan {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    bodies: Bodies,
    start: Instant,
    deadline: Option<Instant>,
    /// Requests to send in all, if limited.
    limit: Option<u64>,
    /// Requests started so far (the closed loop's count; the open loop
    /// numbers its requests in `rate`).
    started: AtomicU64,
    /// Open loop: requests per second, and the next request's number.
    rate: Option<(f64, AtomicU64)>,
}

async fn connection(plan: Arc<Plan>) -> Tally {
    let mut tally = Tally::default();
    loop {
        let (n, due) = match &plan.rate {
            None => (plan.started.fetch_add(1, Ordering::Relaxed), Instant::now()),
            Some((rate, next)) => {
                let n = next.fetch_add(1, Ordering::Relaxed);
                (n, plan.start + Duration::from_secs_f64(n as f64 / rate))
            }
        };
        if plan.deadline.is_some_and(|d| due >= d) || plan.limit.is_some_and(|l| n >= l) {
            return tally;
        }
        tokio::time::sleep_until(due.into()).await;
        let request = plan
            .client
            .post(plan.url.clone())
            .headers(plan.headers.clone())
            .body(plan.bodies.next());
        let outcome = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                response.bytes().await.map(|_| status)
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(status) => {
                let micros = due.elapsed().as_micros();
                tally.latencies.push(micros.min(u32::MAX as u128) as u32);
                *tally.statuses.entry(status).or_default() += 1;
            }
            Err(e) => *tally.errors.entry(e.to_string()).or_default() += 1,
        }
    }
}

fn headers(args: &Args) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("header {h:?} is not `Name: value`"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| e.to_string())?;
        let value = HeaderValue::from_str(value.trim()).map_err(|e| e.to_string())?;
        map.insert(name, value);
    }
    Ok(map)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p / 100.0).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[i - 1]) / 1e6
}

fn run(args: Args) -> Result<(), String> {
    let mut templates = Vec::new();
    for path in &args.body {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        templates.push(
            serde_json::from_slice::<Value>(&text)
                .map_err(|e| format!("{}: {e}", path.display()))?,
        );
    }
    let bodies = Bodies::new(&templates, args.keep_ids)?;
    let ids_per_request = bodies.templates[0].slots.len();
    let url = reqwest::Url::parse(&args.url).map_err(|e| format!("{}: {e}", args.url))?;
    if args.conns == 0 {
        return Err("-c must be at least 1".into());
    }
    if args.duration.is_none() && args.requests.is_none() {
        return Err("give -z DURATION, -n REQUESTS or both".into());
    }
    if args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err("-q must be a positive rate".into());
    }
    let headers = headers(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (tally, elapsed) = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(args.conns)
            .build()
            .map_err(|e| e.to_string())?;
        let start = Instant::now();
        let plan = Arc::new(Plan {
            client,
            url,
            headers,
            bodies,
            start,
            deadline: args.duration.map(|d| start + d),
            limit: args.requests,
            started: AtomicU64::new(0),
            rate: args.rate.map(|r| (r, AtomicU64::new(0))),
        });
        let tasks: Vec<_> = (0..args.conns)
            .map(|_| tokio::spawn(connection(plan.clone())))
            .collect();
        let mut tally = Tally::default();
        for t in tasks {
            tally.merge(t.await.map_err(|e| e.to_string())?);
        }
        Ok::<_, String>((tally, start.elapsed()))
    })?;
    let Tally {
        mut latencies,
        statuses,
        errors,
    } = tally;
    latencies.sort_unstable();
    let answered = latencies.len() as u64;
    let total = answered + errors.values().sum::<u64>();
    println!("Summary:");
    if total > 0 {
        println!("  Success rate:\t{:.4}", answered as f64 / total as f64);
    }
    println!("  Total:\t{:.4} secs", elapsed.as_secs_f64());
    println!(
        "  Requests/sec:\t{:.4}",
        answered as f64 / elapsed.as_secs_f64()
    );
    println!("  Ids per request:\t{ids_per_request}");
    if !latencies.is_empty() {
        println!("Response time distribution:");
        for p in [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 99.99] {
            println!("  {p:.2}% in {:.4} secs", percentile(&latencies, p));
        }
    }
    println!("Status code distribution:");
    for (status, n) in &statuses {
        println!("  [{status}] {n} responses");
    }
    if !errors.is_empty() {
        println!("Error distribution:");
        for (e, n) in &errors {
            println!("  [{n}] {e}");
        }
    }
    let ms = |p: f64| {
        if latencies.is_empty() {
            f64::NAN
        } else {
            1000.0 * percentile(&latencies, p)
        }
    };
    let ok = statuses.get(&200).copied().unwrap_or(0);
    println!(
        "load_gen_summary secs={:.4} sent={total} ok={ok} other_status={} errors={} \
         ids_per_request={ids_per_request} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3}",
        elapsed.as_secs_f64(),
        answered - ok,
        total - answered,
        ms(50.0),
        ms(99.0),
        ms(99.9),
        ms(100.0),
    );
    Ok(())
}

fn main() {
    // `cargo bench` runs every bench target with `--bench`: nothing to load.
    if std::env::args().any(|a| a == "--bench") {
        eprintln!("load_gen: run by benches/ingest_load.sh (see --help)");
        return;
    }
    if let Err(e) = run(Args::parse()) {
        eprintln!("load_gen: {e}");
        std::process::exit(2);
    }
}
