//! `peer-relay-sim`: runs a simulated peer-relay network and reports what it measured.

use std::alloc::System;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cap::Cap;
use clap::{Parser, ValueEnum};
use peer_relay_core::Config;
use peer_relay_sim::{Bootstrap, Churn, LinkModel, NetConfig, Run, Running, SimConfig};
use signal_hook::consts::{SIGINT, SIGTERM};

/// Counts live heap bytes for the report's `heap_bytes` (one relaxed atomic per allocation).
#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// Which of the core's strategy presets the peers run.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Strategy {
    /// `Config::default()`: the scalable strategy.
    Default,
    /// `Config::original()`: the JS original's choices.
    Original,
}

/// Simulates a peer-relay network of real core nodes on virtual time, deterministically
/// from one seed, and reports delivery, hops, links, convergence and speed.
///
/// The initial population joins (one every 1/--join-rate s), the network warms up until
/// every peer has its link target (at most --warmup-s after the last join), then --messages
/// random-pair messages are sent at --rate per second, and the run ends when all arrived or
/// --drain-s after the last send.
#[derive(Debug, Parser)]
#[command(name = "peer-relay-sim", version)]
struct Cli {
    /// Peers in the initial population.
    #[arg(long, default_value_t = 1000)]
    peers: usize,
    /// Random-pair messages to send once the network converged.
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    /// Messages per second of virtual time.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Root seed: the same seed and options give the same report and trace hash.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Probability that a frame is lost, on every link.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Probability that a frame is duplicated, on every link.
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    /// Minimum one-way latency in ms.
    #[arg(long, default_value_t = 20.0)]
    latency_ms: f64,
    /// Mean of the exponential latency tail in ms.
    #[arg(long, default_value_t = 10.0)]
    latency_tail_ms: f64,
    /// Uniform jitter in ms (added to each frame's latency; links stay ordered).
    #[arg(long, default_value_t = 5.0)]
    jitter_ms: f64,
    /// Churn during the traffic phase: this many joins and this many leaves per second.
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// Churned peers crash instead of leaving cleanly.
    #[arg(long)]
    churn_crash: bool,
    /// Peers with a WebSocket server: a count, or a percentage like `10%`.
    #[arg(long, default_value = "10%")]
    servers: String,
    /// Whether server peers also do WebRTC (browser-like peers always do).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    server_webrtc: bool,
    /// Strategy preset of every node.
    #[arg(long, value_enum, default_value = "default")]
    strategy: Strategy,
    /// Copies per hop (the core's `concurrency`); the preset's value if not given.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Core config fields to override, as a JSON object merged over the strategy preset,
    /// e.g. `{"max_links":24,"seen_nonce_ttl":{"secs":30,"nanos":0}}`.
    #[arg(long, value_name = "JSON")]
    node_config: Option<String>,
    /// Bootstrap topology: star, seeds:N, chain or random (a random earlier server).
    #[arg(long, default_value = "random")]
    bootstrap: Bootstrap,
    /// Joins per second of the initial population (much faster joins: a flash crowd).
    #[arg(long, default_value_t = 50.0)]
    join_rate: f64,
    /// Longest wait for convergence after the last join before traffic starts anyway (s).
    #[arg(long, default_value_t = 60.0)]
    warmup_s: f64,
    /// Extra time after convergence before traffic starts, for a settled network (s).
    #[arg(long, default_value_t = 0.0)]
    settle_s: f64,
    /// Time allowed after the last send for messages to arrive (s).
    #[arg(long, default_value_t = 10.0)]
    drain_s: f64,
    /// Print the report as one JSON object instead of the human summary.
    #[arg(long)]
    json: bool,
    /// Run the same network twice, with the default strategy and with the original's, and
    /// report both side by side (`--json`: `{"default": report, "original": report}`).
    /// `--strategy` is ignored.
    #[arg(long)]
    compare: bool,
    /// Also write the hop histogram as an SVG chart to this file.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Stop the run (and report what was reached) if resident memory passes this many GiB.
    #[arg(long, default_value_t = 20.0)]
    max_rss_gib: f64,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    /// Pause after this many seconds of wall time, save the run to the --save file and exit
    /// with status 3, to go on later with --resume: a run too long for one sitting.
    #[arg(
        long,
        value_name = "SECS",
        requires = "save",
        conflicts_with = "compare"
    )]
    pause_after_s: Option<f64>,
    /// The snapshot file a paused run is saved to (replaced whole, never left half-written).
    /// With it, SIGINT (Ctrl-C) and SIGTERM pause and save the run too, instead of losing it.
    #[arg(long, value_name = "FILE", conflicts_with = "compare")]
    save: Option<PathBuf>,
    /// Also save the run to the --save file every SECS of wall time and go on: a crash or a
    /// lost machine costs at most that much of a long run.
    #[arg(
        long,
        value_name = "SECS",
        requires = "save",
        conflicts_with = "compare"
    )]
    checkpoint_s: Option<f64>,
    /// Go on with a run saved by --save (paused, interrupted or checkpointed). The run itself
    /// (peers, seed, network, traffic...) is the saved one; of the other options only --json,
    /// --svg, --quiet, --max-rss-gib, --pause-after-s, --checkpoint-s and --save apply. The
    /// report is the one a run without pauses gives, its wall time and peak memory taken
    /// over every step.
    #[arg(long, value_name = "FILE", conflicts_with = "compare")]
    resume: Option<PathBuf>,
}

/// Exit status of a run that paused and was saved.
const PAUSED: u8 = 3;

fn millis(ms: f64) -> Result<Duration, String> {
    if ms.is_finite() && ms >= 0.0 {
        Ok(Duration::from_secs_f64(ms / 1e3))
    } else {
        Err(format!("{ms} is not a non-negative number of milliseconds"))
    }
}

/// `base` with the fields of the JSON object `overrides` replaced.
fn merge_config(base: &Config, overrides: &str) -> Result<Config, String> {
    let overrides: serde_json::Value =
        serde_json::from_str(overrides).map_err(|e| format!("--node-config: {e}"))?;
    let serde_json::Value::Object(fields) = overrides else {
        return Err("--node-config must be a JSON object".into());
    };
    let mut merged = serde_json::to_value(base).map_err(|e| e.to_string())?;
    for (key, value) in fields {
        if merged.get(&key).is_none() {
            return Err(format!(
                "--node-config: the core config has no field {key:?}"
            ));
        }
        merged[key] = value;
    }
    serde_json::from_value(merged).map_err(|e| format!("--node-config: {e}"))
}

fn parse_servers(spec: &str, peers: usize) -> Result<usize, String> {
    let servers = match spec.strip_suffix('%') {
        Some(percent) => {
            let p: f64 = percent
                .parse()
                .map_err(|_| format!("bad percentage {spec:?}"))?;
            ((peers as f64 * p / 100.0).round() as usize).max(1)
        }
        None => spec
            .parse()
            .map_err(|_| format!("bad server count {spec:?}"))?,
    };
    Ok(servers.min(peers))
}

impl Cli {
    fn to_run(&self, strategy: Strategy) -> Result<Run, String> {
        let mut node = match strategy {
            Strategy::Default => Config::default(),
            Strategy::Original => Config::original(),
        };
        if let Some(concurrency) = self.concurrency {
            node.concurrency = concurrency;
        }
        if let Some(overrides) = &self.node_config {
            node = merge_config(&node, overrides)?;
        }
        let join_rate = self.join_rate;
        if join_rate.is_nan() || join_rate <= 0.0 || join_rate.is_infinite() {
            return Err("--join-rate must be positive".into());
        }
        let churn = (self.churn > 0.0).then_some(Churn {
            joins_per_sec: self.churn,
            leaves_per_sec: self.churn,
            crash: self.churn_crash,
        });
        Ok(Run {
            sim: SimConfig {
                seed: self.seed,
                peers: self.peers,
                servers: parse_servers(&self.servers, self.peers)?,
                node,
                server_webrtc: self.server_webrtc,
                bootstrap: self.bootstrap,
                join_interval: Duration::from_secs_f64(1.0 / join_rate),
                net: NetConfig {
                    link: LinkModel {
                        latency_min: millis(self.latency_ms)?,
                        latency_tail_mean: millis(self.latency_tail_ms)?,
                        jitter: millis(self.jitter_ms)?,
                        loss: self.loss,
                        duplicate: self.duplicate,
                    },
                    ..NetConfig::default()
                },
            },
            messages: self.messages,
            rate: self.rate,
            warmup: millis(self.warmup_s * 1e3)?,
            settle: millis(self.settle_s * 1e3)?,
            drain: millis(self.drain_s * 1e3)?,
            churn,
        })
    }
}

/// The rows of `--compare`'s table: label and value of one report.
fn comparison_rows(report: &peer_relay_sim::Report) -> Vec<(&'static str, String)> {
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    vec![
        ("delivered", format!("{:.2}%", 100.0 * report.delivery_rate)),
        ("hops mean", format!("{:.2}", report.hops_mean)),
        ("hops p99", report.hops_p99.to_string()),
        ("hops max", report.hops_max.to_string()),
        (
            "user frames per delivery",
            format!("{:.2}", report.transmissions_per_delivery),
        ),
        (
            "links mean / max",
            format!("{:.1} / {}", report.links_mean, report.links_max),
        ),
        ("converged (ms)", opt(report.converge_ms)),
        ("events", report.events.to_string()),
        ("wall (ms)", report.wall_ms.to_string()),
    ]
}

fn compare(cli: &Cli, rss_limit: u64) -> Result<(), String> {
    let mut reports = Vec::new();
    for strategy in [Strategy::Default, Strategy::Original] {
        let (_sim, report) = cli.to_run(strategy)?.execute(!cli.quiet, Some(rss_limit))?;
        reports.push(report);
    }
    if cli.json {
        let both = serde_json::json!({ "default": reports[0], "original": reports[1] });
        println!(
            "{}",
            serde_json::to_string_pretty(&both).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "{} peers, seed {}, log2 n = {:.1}\n",
            reports[0].peers, reports[0].seed, reports[0].log2_peers
        );
        println!("| | default | original |\n|---|---|---|");
        let (ours, theirs) = (comparison_rows(&reports[0]), comparison_rows(&reports[1]));
        for ((label, a), (_, b)) in ours.iter().zip(&theirs) {
            println!("| {label} | {a} | {b} |");
        }
    }
    Ok(())
}

/// The run the options describe, or the one `--resume` names.
fn start_or_resume(cli: &Cli) -> Result<Running, String> {
    let Some(path) = &cli.resume else {
        return cli.to_run(cli.strategy)?.start();
    };
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let loading = Instant::now();
    let running = Running::load(BufReader::with_capacity(1 << 20, file))
        .map_err(|e| format!("cannot resume from {}: {e}", path.display()))?;
    if !cli.quiet {
        let sim = running.sim();
        eprintln!(
            "peer-relay-sim: resumed from {} at {:.3} s of virtual time, {} events, {} peers \
             (loaded in {:.1} s)",
            path.display(),
            sim.now().as_micros() as f64 / 1e6,
            sim.counters().events,
            sim.alive_count(),
            loading.elapsed().as_secs_f64(),
        );
    }
    Ok(running)
}

/// Saves `running` to `path` through a temporary file renamed over it, so an interrupted
/// save leaves the previous snapshot whole. Returns the file's size.
fn save(running: &mut Running, path: &Path) -> Result<u64, String> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".partial");
    let temporary = PathBuf::from(temporary);
    let file = File::create(&temporary).map_err(|e| e.to_string())?;
    running
        .save(BufWriter::with_capacity(1 << 20, &file))
        .map_err(|e| e.to_string())?;
    file.sync_all().map_err(|e| e.to_string())?;
    let bytes = file.metadata().map_err(|e| e.to_string())?.len();
    std::fs::rename(&temporary, path).map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// glibc reads its tunables only at start-up: the binary re-executes itself once (the same
/// process, arguments and environment) asking malloc for transparent huge pages, unless
/// `GLIBC_TUNABLES` is already set (set it empty to opt out). Each event touches another
/// peer's state, so a large network spends its time on TLB misses: at 100,000 peers huge
/// pages give 13% more events per second at the same resident memory.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn use_huge_pages() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
        .exec();
    // Only reached when exec failed: run as we are.
    eprintln!("peer-relay-sim: running without huge pages ({error})");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn use_huge_pages() {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    use_huge_pages();
    peer_relay_sim::report::set_heap_meter(|| ALLOCATOR.allocated());
    let rss_limit = (cli.max_rss_gib * (1u64 << 30) as f64) as u64;
    if cli.compare {
        return match compare(&cli, rss_limit) {
            Ok(()) => ExitCode::SUCCESS,
            Err(why) => {
                eprintln!("peer-relay-sim: {why}");
                ExitCode::from(2)
            }
        };
    }
    let mut running = match start_or_resume(&cli) {
        Ok(running) => running,
        Err(why) => {
            eprintln!("peer-relay-sim: {why}");
            return ExitCode::from(2);
        }
    };
    let sim = running.sim_mut();
    sim.set_progress(!cli.quiet);
    sim.set_rss_limit(Some(rss_limit));
    let seconds = |secs: Option<f64>, option: &str| match secs.map(Duration::try_from_secs_f64) {
        None => Ok(None),
        Some(Ok(duration)) => Ok(Some(duration)),
        Some(Err(_)) => Err(format!("{option} must be a non-negative number")),
    };
    let (deadline, checkpoint_every) = match (
        seconds(cli.pause_after_s, "--pause-after-s"),
        seconds(cli.checkpoint_s, "--checkpoint-s"),
    ) {
        (Ok(budget), Ok(every)) => (budget.map(|budget| Instant::now() + budget), every),
        (Err(why), _) | (_, Err(why)) => {
            eprintln!("peer-relay-sim: {why}");
            return ExitCode::from(2);
        }
    };
    // A signal raises the flag; the simulation pauses while it is up, and a pause with it up
    // is a stop rather than a checkpoint.
    let interrupted = Arc::new(AtomicBool::new(false));
    if cli.save.is_some() {
        for signal in [SIGINT, SIGTERM] {
            if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&interrupted)) {
                eprintln!("peer-relay-sim: cannot catch signal {signal}: {e}");
                return ExitCode::FAILURE;
            }
        }
        sim.set_pause_flag(Some(Arc::clone(&interrupted)));
    }
    loop {
        let checkpoint = checkpoint_every.map(|every| Instant::now() + every);
        let pause_at = match (deadline, checkpoint) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        running.sim_mut().set_pause_at(pause_at);
        if running.advance() {
            break;
        }
        let path = cli.save.as_deref().expect("only a run with --save pauses");
        let stop = interrupted.load(Ordering::Relaxed)
            || deadline.is_some_and(|deadline| Instant::now() >= deadline);
        let saving = Instant::now();
        let bytes = match save(&mut running, path) {
            Ok(bytes) => bytes,
            Err(why) => {
                eprintln!("peer-relay-sim: cannot save to {}: {why}", path.display());
                return ExitCode::FAILURE;
            }
        };
        let sim = running.sim();
        eprintln!(
            "peer-relay-sim: {} at {:.3} s of virtual time after {} events; saved to {} ({} MiB \
             in {:.1} s){}",
            if stop { "paused" } else { "checkpoint" },
            sim.now().as_micros() as f64 / 1e6,
            sim.counters().events,
            path.display(),
            bytes >> 20,
            saving.elapsed().as_secs_f64(),
            if stop {
                format!("; go on with --resume {}", path.display())
            } else {
                String::new()
            },
        );
        if stop {
            return ExitCode::from(PAUSED);
        }
    }
    let report = running.sim().report();
    if let Some(path) = &cli.svg {
        if let Err(e) = std::fs::write(path, report.svg()) {
            eprintln!("peer-relay-sim: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if cli.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("peer-relay-sim: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", report.human());
    }
    ExitCode::SUCCESS
}
