//! A datagram echo service over the relay network, with [`peer_relay::Socket`].
//!
//! ```text
//! # terminal 1: the echo service, with a WebSocket server others join through
//! cargo run --release -p peer-relay --example echo -- serve --listen 8000
//! # terminal 2: send a datagram to it and print the echo
//! cargo run --release -p peer-relay --example echo -- ping \
//!     --bootstrap ws://127.0.0.1:8000 --to <ID printed by serve> "hello"
//! ```
//!
//! The service answers every datagram to its sender's id and port, whoever relays it: a
//! client may join through any peer of the network, and a JS `PeerRelay.Socket` may ping it
//! too.

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use peer_relay::{Options, PeerId, RemoteInfo, Socket, SocketError};

/// A datagram echo service over peer-relay.
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Echo every datagram back to its sender.
    Serve {
        /// Port of the WebSocket server other peers join through (0: any free port).
        #[arg(long)]
        listen: Option<u16>,
        /// A peer already in the network to join through (repeatable).
        #[arg(long, value_name = "URL")]
        bootstrap: Vec<String>,
        /// The socket port to bind (a label the clients see in the replies).
        #[arg(long, default_value_t = 7)]
        port: u16,
    },
    /// Send one datagram to an echo service and print the reply.
    Ping {
        /// A peer of the network to join through (repeatable).
        #[arg(long, value_name = "URL", required = true)]
        bootstrap: Vec<String>,
        /// The echo service's id (40 hex characters).
        #[arg(long)]
        to: PeerId,
        /// The service's port.
        #[arg(long, default_value_t = 7)]
        port: u16,
        /// Seconds to wait for the reply.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// What to send.
        message: String,
    },
}

/// Echoes every datagram to its sender until the socket closes; returns how many it
/// echoed.
pub async fn serve(socket: &Socket) -> u64 {
    let mut echoed = 0;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(_) => return echoed, // closed
        };
        match socket.send_to(&buf[..len], &from).await {
            Ok(_) => echoed += 1,
            Err(SocketError::Closed) => return echoed,
            // A refused reply (too large for our frame limit, say) loses one datagram only.
            Err(err) => eprintln!("echo to {}: {err}", from.address),
        }
    }
}

/// Sends `message` to `(to, port)` and waits up to `timeout` for the reply from `to`.
/// Returns the reply, who sent it and the round-trip time.
pub async fn ping(
    socket: &Socket,
    to: PeerId,
    port: u16,
    message: &[u8],
    timeout: Duration,
) -> Result<(Vec<u8>, RemoteInfo, Duration), String> {
    let start = Instant::now();
    socket
        .send_to(message, (to, port))
        .await
        .map_err(|e| e.to_string())?;
    let reply = tokio::time::timeout(timeout, async {
        loop {
            let datagram = socket.recv_datagram().await?;
            // Anything else addressed to us is not the reply.
            if datagram.from.id() == to {
                return Ok::<_, SocketError>(datagram);
            }
        }
    })
    .await
    .map_err(|_| format!("no reply within {timeout:?}"))?
    .map_err(|e| e.to_string())?;
    Ok((reply.data, reply.from, start.elapsed()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command {
        Command::Serve {
            listen,
            bootstrap,
            port,
        } => {
            let socket = Socket::new(Options {
                port: listen,
                bootstrap,
                ..Options::default()
            })
            .await?;
            let url = socket.peer().url().unwrap_or("-").to_owned();
            println!("echo service {} port {port} at {url}", socket.peer().id());
            println!("waiting for a first link...");
            socket.bind(port).await?;
            println!("listening");
            tokio::select! {
                echoed = serve(&socket) => println!("socket closed after {echoed} echoes"),
                _ = tokio::signal::ctrl_c() => {
                    println!("{:?}", socket.stats());
                    socket.close().await?;
                }
            }
        }
        Command::Ping {
            bootstrap,
            to,
            port,
            timeout,
            message,
        } => {
            let socket = Socket::new(Options {
                bootstrap,
                ..Options::default()
            })
            .await?;
            let timeout = Duration::from_secs(timeout);
            tokio::time::timeout(timeout, socket.bind(0))
                .await
                .map_err(|_| "no link to the network")??;
            let (reply, from, rtt) = ping(&socket, to, port, message.as_bytes(), timeout).await?;
            println!(
                "reply from {}:{} in {:.1} ms: {}",
                from.address,
                from.port,
                rtt.as_secs_f64() * 1e3,
                String::from_utf8_lossy(&reply)
            );
            socket.close().await?;
        }
    }
    Ok(())
}
