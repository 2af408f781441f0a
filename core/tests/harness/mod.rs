//! An in-process, virtual-time driver for N core nodes, in the spirit of quinn-proto's pair
//! test driver. Every output is carried out deterministically: frames travel with a fixed
//! latency, WebSocket dials reach the node owning the url, and WebRTC sessions exchange
//! opaque signals that travel through the nodes as real `signal` messages.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use peer_relay_core::{Config, ConnId, Event, Input, Node, Output, PeerId, Time};

/// Something scheduled to happen to a node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Frame {
        node: usize,
        conn: ConnId,
        frame: String,
    },
    Opened {
        node: usize,
        conn: ConnId,
    },
    Closed {
        node: usize,
        conn: ConnId,
    },
    /// A dial reaches the server owning its url.
    Accept {
        server: usize,
        client: usize,
        client_conn: ConnId,
    },
    Signal {
        node: usize,
        conn: ConnId,
        signal: String,
    },
    /// A WebSocket ping (`pong: false`) or pong reaches `node`.
    Ping {
        node: usize,
        conn: ConnId,
        pong: bool,
    },
}

/// A fake WebRTC session: offer, answer, then both channels open.
#[derive(Debug, Clone)]
struct Session {
    peer: PeerId,
    initiator: bool,
}

pub struct Net {
    pub now: Time,
    pub nodes: Vec<Node>,
    pub latency: Duration,
    urls: BTreeMap<String, usize>,
    ids: BTreeMap<PeerId, usize>,
    wires: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    sessions: BTreeMap<(usize, ConnId), Session>,
    queue: BinaryHeap<Reverse<(Time, u64, Action)>>,
    seq: u64,
    /// Every event, with the node it happened on.
    pub events: Vec<(usize, Event)>,
    /// Every output of every node, in order, as text: the determinism fingerprint.
    pub trace: Vec<String>,
    /// Every frame any node transmitted, in order.
    pub frames: Vec<String>,
    /// Frames dropped because a wire is gone (closed while in flight).
    pub lost: u64,
    /// When false, frames on links between these node pairs are dropped (for partitions).
    pub cut: BTreeMap<(usize, usize), bool>,
}

pub fn url_of(index: usize) -> String {
    format!("ws://node{index}.test:8000")
}

impl Net {
    pub fn new() -> Self {
        Net {
            now: Time::ZERO,
            nodes: Vec::new(),
            latency: Duration::from_millis(5),
            urls: BTreeMap::new(),
            ids: BTreeMap::new(),
            wires: BTreeMap::new(),
            sessions: BTreeMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            events: Vec::new(),
            trace: Vec::new(),
            frames: Vec::new(),
            lost: 0,
            cut: BTreeMap::new(),
        }
    }

    /// Adds a node; with `server` it owns the url [`url_of`] its index.
    pub fn add(&mut self, mut config: Config, seed: u64, server: bool) -> usize {
        let index = self.nodes.len();
        if server {
            config.advertised_url = Some(url_of(index));
            self.urls.insert(url_of(index), index);
        }
        let node = Node::with_seed(config, seed, self.now).expect("valid config");
        self.ids.insert(node.id(), index);
        self.nodes.push(node);
        index
    }

    pub fn id(&self, index: usize) -> PeerId {
        self.nodes[index].id()
    }

    pub fn index_of(&self, id: &PeerId) -> usize {
        self.ids[id]
    }

    pub fn bootstrap(&mut self, node: usize, server: usize) {
        let now = self.now;
        self.nodes[node]
            .bootstrap(now, &url_of(server))
            .expect("bootstrap");
        self.drain(node);
    }

    pub fn send(&mut self, from: usize, to: usize, data: &serde_json::Value) {
        let (now, to_id) = (self.now, self.id(to));
        self.nodes[from].send(now, to_id, data).expect("send");
        self.drain(from);
    }

    pub fn connect(&mut self, from: usize, to: usize) {
        let (now, to_id) = (self.now, self.id(to));
        self.nodes[from].connect(now, to_id).expect("connect");
        self.drain(from);
    }

    pub fn disconnect(&mut self, from: usize, to: usize) {
        let (now, to_id) = (self.now, self.id(to));
        self.nodes[from].disconnect(now, to_id).expect("disconnect");
        self.drain(from);
    }

    /// The established connection from `node` to `peer`, if any.
    pub fn conn_between(&self, node: usize, peer: usize) -> Option<ConnId> {
        let peer_id = self.id(peer);
        self.nodes[node]
            .links()
            .find(|(id, _)| **id == peer_id)
            .map(|(_, l)| l.conn)
    }

    /// Feeds a raw frame to `node` as if `from` sent it on their link.
    pub fn inject(&mut self, node: usize, conn: ConnId, frame: &[u8]) {
        let now = self.now;
        self.nodes[node].handle_input(now, Input::Frame { conn, frame });
        self.drain(node);
    }

    pub fn input(&mut self, node: usize, input: Input<'_>) {
        let now = self.now;
        self.nodes[node].handle_input(now, input);
        self.drain(node);
    }

    fn schedule(&mut self, at: Time, action: Action) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, action)));
    }

    /// Carries out everything `node` wants done.
    pub fn drain(&mut self, node: usize) {
        while let Some(output) = self.nodes[node].poll_output() {
            self.trace
                .push(format!("{} {node} {output:?}", self.now.as_micros()));
            self.carry_out(node, output);
        }
    }

    /// Where something sent on `node`'s `conn` arrives, unless the wire is cut or gone.
    fn far_end(&self, node: usize, conn: ConnId) -> Option<(usize, ConnId)> {
        let &(peer, peer_conn) = self.wires.get(&(node, conn))?;
        let pair = (node.min(peer), node.max(peer));
        (!self.cut.get(&pair).copied().unwrap_or(false)).then_some((peer, peer_conn))
    }

    fn carry_out(&mut self, node: usize, output: Output) {
        let at = self.now + self.latency;
        match output {
            Output::Probe { conn } => {
                if let Some((peer, peer_conn)) = self.far_end(node, conn) {
                    let ping = Action::Ping {
                        node: peer,
                        conn: peer_conn,
                        pong: false,
                    };
                    self.schedule(at, ping);
                }
            }
            Output::Transmit { conn, frame } => {
                self.frames.push(frame.clone());
                match self.wires.get(&(node, conn)) {
                    Some(&(peer, peer_conn)) => {
                        let pair = (node.min(peer), node.max(peer));
                        if self.cut.get(&pair).copied().unwrap_or(false) {
                            self.lost += 1;
                        } else {
                            let action = Action::Frame {
                                node: peer,
                                conn: peer_conn,
                                frame,
                            };
                            self.schedule(at, action);
                        }
                    }
                    None => self.lost += 1,
                }
            }
            Output::DialWebSocket { conn, url } => match self.urls.get(&url) {
                Some(&server) => self.schedule(
                    at,
                    Action::Accept {
                        server,
                        client: node,
                        client_conn: conn,
                    },
                ),
                None => self.schedule(at, Action::Closed { node, conn }),
            },
            Output::Close { conn, .. } => {
                self.sessions.remove(&(node, conn));
                if let Some((peer, peer_conn)) = self.wires.remove(&(node, conn)) {
                    self.wires.remove(&(peer, peer_conn));
                    self.schedule(
                        at,
                        Action::Closed {
                            node: peer,
                            conn: peer_conn,
                        },
                    );
                }
            }
            Output::StartWebRtc {
                conn,
                peer,
                initiator,
            } => {
                self.sessions
                    .insert((node, conn), Session { peer, initiator });
                if initiator {
                    let offer = r#"{"type":"offer","sdp":"fake-offer"}"#.to_string();
                    self.schedule(
                        self.now,
                        Action::Signal {
                            node,
                            conn,
                            signal: offer,
                        },
                    );
                }
            }
            Output::RemoteSignal { conn, signal } => self.on_remote_signal(node, conn, &signal),
            Output::Event(event) => self.events.push((node, event)),
        }
    }

    /// The fake WebRTC stack: a responder answers an offer; an initiator that gets the answer
    /// opens both ends (if the responder's session still exists).
    fn on_remote_signal(&mut self, node: usize, conn: ConnId, signal: &str) {
        let Some(session) = self.sessions.get(&(node, conn)).cloned() else {
            return;
        };
        let value: serde_json::Value = serde_json::from_str(signal).expect("signal JSON");
        match (session.initiator, value["type"].as_str()) {
            (false, Some("offer")) => {
                let answer = r#"{"type":"answer","sdp":"fake-answer"}"#.to_string();
                self.schedule(
                    self.now,
                    Action::Signal {
                        node,
                        conn,
                        signal: answer,
                    },
                );
            }
            (true, Some("answer")) => {
                let peer = self.index_of(&session.peer);
                let my_id = self.id(node);
                let remote = self
                    .sessions
                    .iter()
                    .find(|((n, _), s)| *n == peer && s.peer == my_id && !s.initiator)
                    .map(|((_, c), _)| *c);
                if let Some(remote_conn) = remote {
                    self.wires.insert((node, conn), (peer, remote_conn));
                    self.wires.insert((peer, remote_conn), (node, conn));
                    let at = self.now + self.latency;
                    self.schedule(at, Action::Opened { node, conn });
                    self.schedule(
                        at,
                        Action::Opened {
                            node: peer,
                            conn: remote_conn,
                        },
                    );
                }
            }
            _ => {}
        }
    }

    fn apply(&mut self, action: Action) {
        let now = self.now;
        match action {
            Action::Frame { node, conn, frame } => {
                self.nodes[node].handle_input(
                    now,
                    Input::Frame {
                        conn,
                        frame: frame.as_bytes(),
                    },
                );
                self.drain(node);
            }
            Action::Opened { node, conn } => {
                self.nodes[node].handle_input(now, Input::Opened { conn });
                self.drain(node);
            }
            Action::Closed { node, conn } => {
                self.sessions.remove(&(node, conn));
                self.nodes[node].handle_input(now, Input::Closed { conn });
                self.drain(node);
            }
            Action::Accept {
                server,
                client,
                client_conn,
            } => match self.nodes[server].accept(now) {
                Ok(server_conn) => {
                    self.wires
                        .insert((server, server_conn), (client, client_conn));
                    self.wires
                        .insert((client, client_conn), (server, server_conn));
                    self.drain(server);
                    self.nodes[client].handle_input(now, Input::Opened { conn: client_conn });
                    self.drain(client);
                }
                Err(_) => {
                    self.nodes[client].handle_input(now, Input::Closed { conn: client_conn });
                    self.drain(client);
                }
            },
            Action::Ping { node, conn, pong } => {
                if !self.wires.contains_key(&(node, conn)) {
                    return;
                }
                self.nodes[node].handle_input(now, Input::Alive { conn });
                self.drain(node);
                if !pong {
                    if let Some((peer, peer_conn)) = self.far_end(node, conn) {
                        let pong = Action::Ping {
                            node: peer,
                            conn: peer_conn,
                            pong: true,
                        };
                        self.schedule(now + self.latency, pong);
                    }
                }
            }
            Action::Signal { node, conn, signal } => {
                if self.sessions.contains_key(&(node, conn)) {
                    self.nodes[node].handle_input(
                        now,
                        Input::LocalSignal {
                            conn,
                            signal: &signal,
                        },
                    );
                    self.drain(node);
                }
            }
        }
    }

    /// Runs until virtual time `until`, firing node timers as they come due.
    pub fn run_until(&mut self, until: Time) {
        loop {
            let next_action = self.queue.peek().map(|Reverse((at, _, _))| *at);
            let next_timer = self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| n.poll_timeout().map(|t| (t, i)))
                .min();
            let timer_first = match (next_action, next_timer) {
                (None, None) => break,
                (Some(a), Some((t, _))) => t < a,
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            if timer_first {
                let (at, node) = next_timer.expect("timer");
                if at > until {
                    break;
                }
                self.now = self.now.max(at);
                self.input(node, Input::Timeout);
            } else {
                let at = next_action.expect("action");
                if at > until {
                    break;
                }
                let Reverse((at, _, action)) = self.queue.pop().expect("action");
                self.now = self.now.max(at);
                self.apply(action);
            }
        }
        self.now = self.now.max(until);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// `user` messages received by `node`, as (from index, data, path length).
    pub fn received(&self, node: usize) -> Vec<(usize, serde_json::Value, usize)> {
        self.events
            .iter()
            .filter(|(n, _)| *n == node)
            .filter_map(|(_, e)| match e {
                Event::Message {
                    from,
                    data,
                    path_len,
                } => Some((
                    self.ids[from],
                    serde_json::from_str(data.get()).expect("JSON"),
                    *path_len,
                )),
                _ => None,
            })
            .collect()
    }

    pub fn link_count(&self, node: usize) -> usize {
        self.nodes[node].links().count()
    }
}
