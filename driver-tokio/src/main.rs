//! `peer-relay`: run a peer-relay node from the command line.
//!
//! Human mode prints our id and url and the peers joining and leaving. `--json` mode is a
//! stable line protocol for scripts and tests: one JSON event per line on stdout, one JSON
//! command per line on stdin (see `--help` and the crate README).

use std::io::Write;
use std::net::IpAddr;
use std::process::ExitCode;

use clap::Parser;
use peer_relay::{Config, Event, IceServer, Options, PeerId, PeerRelay, Transport, WebRtcOptions};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, BufReader};

const JSON_SCHEMA: &str = r#"--json mode (a stable contract):
  stdout, one JSON object per line:
    {"event":"ready","id":"<40 lowercase hex>","url":"ws://..." or null}   first line, once listening
    {"event":"peer","id":"<hex>","transport":"websocket"|"webrtc"}   a direct link formed
    {"event":"peer-removed","id":"<hex>"}                  a direct link closed
    {"event":"message","from":"<hex>","data":<any JSON>,"path_len":N}   N = 1: direct
    {"event":"error","message":"..."}      bad input, refused command, failed dial or WebRTC session
  stdin, one JSON object per line:
    {"cmd":"send","to":"<hex>","data":<JSON>}
    {"cmd":"connect","id":"<hex>"}
    {"cmd":"disconnect","id":"<hex>"}
    {"cmd":"destroy"}        and EOF on stdin: close everything, exit 0
  A malformed line gives an "error" event; the node keeps running.
Logs go to stderr; set the level with RUST_LOG (default: warn)."#;

/// Run a peer-relay node: a p2p message relay, wire-compatible with the JS peer-relay 0.0.2.
#[derive(Debug, Parser)]
#[command(name = "peer-relay", version, after_help = JSON_SCHEMA)]
struct Cli {
    /// Port for the WebSocket server (0: any free port). Without a port the node runs no
    /// server and only dials out.
    #[arg(value_name = "PORT", conflicts_with = "port")]
    port_arg: Option<u16>,
    /// Bootstrap urls, as in the original's `peer-relay PORT [URL...]`.
    #[arg(value_name = "URL", requires = "port_arg")]
    urls: Vec<String>,
    /// Port for the WebSocket server (same as PORT).
    #[arg(long)]
    port: Option<u16>,
    /// A peer already in the network to join through (repeatable).
    #[arg(long, value_name = "URL")]
    bootstrap: Vec<String>,
    /// The url other peers should dial to reach this node [default: ws://LISTEN:PORT, with
    /// 127.0.0.1 for an unspecified LISTEN].
    #[arg(long, value_name = "URL")]
    advertise: Option<String>,
    /// Address the server listens on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    listen: IpAddr,
    /// The protocol configuration as JSON, fields as in peer_relay_core::Config (missing ones
    /// keep their defaults), e.g. '{"target_links":1,"link_selection":"nearest-to-self"}'.
    #[arg(long, value_name = "JSON", value_parser = parse_config)]
    config: Option<Config>,
    /// Do not link over WebRTC (links are WebSockets only, as without `wrtc` in the original).
    #[arg(long)]
    no_webrtc: bool,
    /// A STUN server url for WebRTC (repeatable; default none: host candidates only).
    #[arg(long, value_name = "URL")]
    stun: Vec<String>,
    /// Speak JSON lines on stdout/stdin instead of printing for humans.
    #[arg(long)]
    json: bool,
}

fn parse_config(json: &str) -> Result<Config, String> {
    serde_json::from_str(json).map_err(|err| err.to_string())
}

impl Cli {
    fn options(&self) -> Options {
        let mut bootstrap = self.urls.clone();
        bootstrap.extend(self.bootstrap.iter().cloned());
        Options {
            port: self.port_arg.or(self.port),
            listen_addr: self.listen,
            advertise: self.advertise.clone(),
            bootstrap,
            config: self.config.clone().unwrap_or_default(),
            webrtc: !self.no_webrtc,
            rtc: WebRtcOptions {
                ice_servers: self
                    .stun
                    .iter()
                    .map(|url| IceServer {
                        urls: vec![url.clone()],
                        ..IceServer::default()
                    })
                    .collect(),
                ..WebRtcOptions::default()
            },
            ..Options::default()
        }
    }
}

/// One line of `--json` output. The tag comes first, so every line starts with its event.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
enum Line<'a> {
    Ready {
        id: PeerId,
        url: Option<&'a str>,
    },
    Peer {
        id: PeerId,
        transport: &'static str,
    },
    PeerRemoved {
        id: PeerId,
    },
    Message {
        from: PeerId,
        data: &'a serde_json::Value,
        path_len: usize,
    },
    Error {
        message: String,
    },
}

/// Where events go: JSON lines or text for people.
struct Printer {
    json: bool,
}

impl Printer {
    fn print(&self, line: &Line<'_>) {
        let text = if self.json {
            // Serialising these plain values cannot fail.
            serde_json::to_string(line).unwrap_or_default()
        } else {
            human(line)
        };
        let mut out = std::io::stdout().lock();
        // A closed stdout (the reader went away) is no reason to stop relaying.
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    fn event(&self, event: &Event) {
        match event {
            Event::Peer(id, transport) => self.print(&Line::Peer {
                id: *id,
                transport: match transport {
                    Transport::WebSocket => "websocket",
                    Transport::WebRtc => "webrtc",
                },
            }),
            Event::PeerRemoved(id) => self.print(&Line::PeerRemoved { id: *id }),
            Event::Message {
                from,
                data,
                path_len,
            } => self.print(&Line::Message {
                from: *from,
                data,
                path_len: *path_len,
            }),
            Event::WebRtcFailed { peer, reason } => self.error(format!(
                "webrtc session with {peer} failed: {}",
                kebab(reason)
            )),
            Event::ConnectFailed { peer, reason } => {
                self.error(format!("connect to {peer} failed: {}", kebab(reason)));
            }
            Event::BootstrapFailed {
                url,
                attempt,
                retry_in,
            } => self.error(format!(
                "bootstrap {url} unreachable (attempt {attempt}); retrying in {retry_in:?}"
            )),
            other => self.error(format!("unhandled event {other:?}")),
        }
    }

    fn error(&self, message: String) {
        self.print(&Line::Error { message });
    }
}

/// A failure reason as its JSON (kebab-case) name.
fn kebab(reason: &peer_relay::ConnectFailure) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn human(line: &Line<'_>) -> String {
    match line {
        Line::Ready { id, url } => format!(
            "peer-relay node\n  id   {id}\n  url  {}",
            url.unwrap_or("(no server: dial-out only)")
        ),
        Line::Peer { id, transport } => format!("peer joined  {id} ({transport})"),
        Line::PeerRemoved { id } => format!("peer left    {id}"),
        Line::Message { from, data, .. } => format!("message from {from}: {data}"),
        Line::Error { message } => format!("error: {message}"),
    }
}

/// A command line on stdin.
#[derive(Debug, Deserialize)]
struct CommandLine<'a> {
    cmd: String,
    to: Option<PeerId>,
    id: Option<PeerId>,
    /// Present-but-null must stay `null`, not become "missing".
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// What the main loop does after a command.
enum Next {
    Continue,
    Stop,
}

async fn run_command(relay: &PeerRelay, line: &str) -> Result<Next, String> {
    let command: CommandLine<'_> =
        serde_json::from_str(line).map_err(|err| format!("malformed command: {err}"))?;
    let need = |id: Option<PeerId>, field: &str| {
        id.ok_or_else(|| format!("`{}` needs `{field}`", command.cmd))
    };
    match command.cmd.as_str() {
        "send" => {
            let to = need(command.to, "to")?;
            let data = command.data.ok_or("`send` needs `data`")?;
            relay
                .send(to, data)
                .await
                .map_err(|e| format!("send: {e}"))?;
        }
        "connect" => {
            let id = need(command.id, "id")?;
            relay
                .connect(id)
                .await
                .map_err(|e| format!("connect: {e}"))?;
        }
        "disconnect" => {
            let id = need(command.id, "id")?;
            relay
                .disconnect(id)
                .await
                .map_err(|e| format!("disconnect: {e}"))?;
        }
        "destroy" => return Ok(Next::Stop),
        other => return Err(format!("unknown command {other:?}")),
    }
    Ok(Next::Continue)
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(cli: Cli) -> ExitCode {
    let printer = Printer { json: cli.json };
    let relay = match PeerRelay::new(cli.options()).await {
        Ok(relay) => relay,
        Err(err) => {
            if cli.json {
                printer.error(err.to_string());
            } else {
                eprintln!("peer-relay: {err}");
            }
            return ExitCode::FAILURE;
        }
    };
    let mut events = relay.events();
    printer.print(&Line::Ready {
        id: relay.id(),
        url: relay.url(),
    });
    // Only JSON mode takes commands; human mode runs until it is stopped.
    let mut stdin = cli.json.then(|| BufReader::new(tokio::io::stdin()).lines());
    let terminated = termination();
    tokio::pin!(terminated);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(event) => printer.event(&event),
                None => break,
            },
            line = async { stdin.as_mut()?.next_line().await.transpose() }, if stdin.is_some() => {
                match line {
                    None => break, // EOF
                    Some(Ok(line)) if line.trim().is_empty() => {}
                    Some(Ok(line)) => match run_command(&relay, &line).await {
                        Ok(Next::Continue) => {}
                        Ok(Next::Stop) => break,
                        Err(message) => printer.error(message),
                    },
                    // Not UTF-8: reported like any malformed line.
                    Some(Err(err)) if err.kind() == std::io::ErrorKind::InvalidData => {
                        printer.error(format!("malformed command: {err}"));
                    }
                    Some(Err(err)) => {
                        printer.error(format!("stdin: {err}"));
                        break;
                    }
                }
            }
            () = &mut terminated => break,
        }
    }
    relay.destroy().await;
    // The links going down on the way out, reported like any others.
    while let Some(event) = events.next().await {
        printer.event(&event);
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("peer-relay: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}
