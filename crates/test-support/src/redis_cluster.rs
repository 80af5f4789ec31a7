//! A throwaway Redis Cluster on 127.0.0.1: primaries, optionally one replica
//! each, every node a [`RedisServer`] (its own temp dir and `nodes.conf`,
//! killed when dropped and with the test process), joined by `redis-cli
//! --cluster create` and waited for until every node reports
//! `cluster_state:ok`, knows every other node and, for a replica, is in sync
//! with its primary. A node can be killed to see a replica take over.
//!
//! Nodes are asked with `redis-cli` (installed with redis-server), one
//! command a call: this is test setup and inspection, not a client under
//! test.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::free_tcp_port;
use crate::redis::RedisServer;

/// How long the cluster may take to form (a new primary waits 2 s after its
/// start before it takes writes; redis-cli polls once a second).
const FORM_LIMIT: Duration = Duration::from_secs(30);

/// A running Redis Cluster.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// One line of `CLUSTER NODES`: what a node says of one node.
struct NodeLine {
    id: String,
    port: u16,
    primary: bool,
    failed: bool,
    /// The id of its primary, for a replica.
    replicates: Option<String>,
    /// The slot ranges it serves, for a primary.
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    fn parse(line: &str) -> Option<NodeLine> {
        let mut fields = line.split_whitespace();
        let id = fields.next()?.to_owned();
        // `127.0.0.1:7000@17000` (or `...,hostname`).
        let addr = fields.next()?;
        let port = addr
            .split(['@', ','])
            .next()?
            .rsplit_once(':')?
            .1
            .parse()
            .ok()?;
        let flags = fields.next()?;
        let master = fields.next()?;
        let fields: Vec<&str> = fields.skip(4).collect();
        let slots = fields
            .iter()
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| match s.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => s.parse().ok().map(|n| (n, n)),
            })
            .collect();
        Some(NodeLine {
            id,
            port,
            primary: flags.contains("master"),
            failed: flags.contains("fail"),
            replicates: (master != "-").then(|| master.to_owned()),
            slots,
        })
    }
}

impl RedisCluster {
    /// `primaries` primaries without replicas, with Redis's default node
    /// timeout (so a busy machine never marks a node failed).
    pub fn start(tag: &str, primaries: usize) -> RedisCluster {
        RedisCluster::launch(tag, primaries, 0, Duration::from_secs(15))
    }

    /// `primaries` primaries with one replica each; a primary unreachable for
    /// `node_timeout` is failed over to its replica.
    pub fn start_with_replicas(
        tag: &str,
        primaries: usize,
        node_timeout: Duration,
    ) -> RedisCluster {
        RedisCluster::launch(tag, primaries, 1, node_timeout)
    }

    fn launch(
        tag: &str,
        primaries: usize,
        replicas: usize,
        node_timeout: Duration,
    ) -> RedisCluster {
        let timeout = node_timeout.as_millis().to_string();
        let nodes: Vec<RedisServer> = (0..primaries * (1 + replicas))
            .map(|n| {
                // The cluster bus port is set, not port + 10000, which may be
                // taken or past 65535.
                let bus = free_tcp_port().to_string();
                RedisServer::start_with(
                    &format!("{tag}-node{n}"),
                    free_tcp_port(),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-port",
                        &bus,
                        "--cluster-node-timeout",
                        &timeout,
                    ],
                )
            })
            .collect();
        let cluster = RedisCluster { nodes };
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in cluster.ports() {
            create.arg(format!("127.0.0.1:{port}"));
        }
        create
            .args(["--cluster-replicas", &replicas.to_string()])
            .arg("--cluster-yes");
        let out = create
            .output()
            .unwrap_or_else(|e| panic!("redis-cli (scripts/test installs it): {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_until(FORM_LIMIT, "the cluster to form", |c| c.formed());
        cluster
    }

    /// Whether every live node says the cluster is ok, knows every node and,
    /// for a replica, is in sync with its primary.
    fn formed(&self) -> bool {
        let total = self.nodes.len();
        self.live_ports().iter().all(|&port| {
            let info = self.cli(port, &["CLUSTER", "INFO"]);
            let replication = self.cli(port, &["INFO", "replication"]);
            info.contains("cluster_state:ok")
                && info.contains(&format!("cluster_known_nodes:{total}"))
                && (replication.contains("role:master")
                    || replication.contains("master_link_status:up"))
        })
    }

    /// Every node's port, killed ones included, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(RedisServer::port)
            .collect()
    }

    /// karuta's `redis_broker` for this cluster: every node a seed.
    pub fn broker(&self) -> String {
        let seeds: Vec<String> = self
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// `redis-cli -p PORT ARGS...` (no redirects followed): its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("redis-cli: {e}"));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `CLUSTER NODES` as a live node sees it.
    fn view(&self) -> Vec<NodeLine> {
        let port = *self.live_ports().first().expect("a live node");
        self.cli(port, &["CLUSTER", "NODES"])
            .lines()
            .filter_map(NodeLine::parse)
            .collect()
    }

    /// The slot of `key` (its hash tag's, when it has one).
    pub fn slot_of(&self, key: &str) -> u16 {
        let port = *self.live_ports().first().expect("a live node");
        let slot = self.cli(port, &["CLUSTER", "KEYSLOT", key]);
        slot.parse()
            .unwrap_or_else(|_| panic!("CLUSTER KEYSLOT {key}: {slot:?}"))
    }

    /// The port of the live primary serving `key`'s slot, as a live node sees
    /// it; `None` while no live primary does.
    pub fn primary_of(&self, key: &str) -> Option<u16> {
        let slot = self.slot_of(key);
        self.view()
            .into_iter()
            .find(|n| {
                n.primary && !n.failed && n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
            })
            .map(|n| n.port)
    }

    /// The ports of the primaries, as a live node sees them.
    pub fn primaries(&self) -> Vec<u16> {
        self.view()
            .into_iter()
            .filter(|n| n.primary && !n.failed)
            .map(|n| n.port)
            .collect()
    }

    /// The ports of `primary`'s replicas.
    pub fn replicas_of(&self, primary: u16) -> Vec<u16> {
        let view = self.view();
        let Some(id) = view
            .iter()
            .find(|n| n.port == primary)
            .map(|n| n.id.clone())
        else {
            return Vec::new();
        };
        view.into_iter()
            .filter(|n| n.replicates.as_deref() == Some(id.as_str()))
            .map(|n| n.port)
            .collect()
    }

    /// Kills the node on `port` (SIGKILL: no goodbye to clients or peers).
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node on port {port}"));
        node.kill();
    }

    /// Waits until `key`'s slot is served by a live primary other than
    /// `lost` and every live node says the cluster is ok again; that
    /// primary's port.
    pub fn wait_for_failover(&self, key: &str, lost: u16, limit: Duration) -> u16 {
        self.wait_until(limit, "a replica to take over", |c| {
            c.primary_of(key).is_some_and(|p| p != lost)
                && c.live_ports()
                    .iter()
                    .all(|&p| c.cli(p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        });
        self.primary_of(key).expect("a primary after the failover")
    }

    fn wait_until(&self, limit: Duration, what: &str, ready: impl Fn(&RedisCluster) -> bool) {
        let deadline = Instant::now() + limit;
        while !ready(self) {
            if Instant::now() > deadline {
                let port = *self.live_ports().first().expect("a live node");
                panic!(
                    "waited {limit:?} for {what}; CLUSTER NODES:\n{}\nCLUSTER INFO:\n{}",
                    self.cli(port, &["CLUSTER", "NODES"]),
                    self.cli(port, &["CLUSTER", "INFO"])
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
