//! The tracker under test, seen from outside: its resident memory
//! (`/proc/PID/status`) and CPU time (`/proc/PID/stat`, read the same way
//! for the driver's own), the peers its store holds (`/metrics`), its
//! configuration reloads (SIGUSR1 through kill(1), and the log lines that
//! confirm them); and what the kernel dropped for full queues, which tells a
//! tracker that could not keep up (or did not get its core) from one that
//! lost requests.

use std::path::PathBuf;
use std::process::Command;

use http_client::{Client, Url};

pub struct Karuta {
    pub pid: u32,
    metrics: Url,
    log: PathBuf,
    client: Client,
}

/// What karuta's log says about reloads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reloads {
    pub done: u64,
    pub failed: u64,
}

impl Karuta {
    pub fn new(pid: u32, metrics_addr: &str, log: PathBuf) -> anyhow::Result<Karuta> {
        let metrics = Url::parse(&format!("http://{metrics_addr}/metrics"))?;
        let client = Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .max_body(4 << 20)
            .build()?;
        Ok(Karuta {
            pid,
            metrics,
            log,
            client,
        })
    }

    /// VmRSS in KiB; `None` once the process is gone.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// User plus system CPU time of all its threads, in clock ticks
    /// (`USER_HZ`, 100 a second on Linux); `None` once the process is gone.
    pub fn cpu_ticks(&self) -> Option<u64> {
        cpu_ticks(&self.pid.to_string())
    }

    /// Sends SIGUSR1: karuta re-reads its configuration file.
    pub fn reload(&self) -> anyhow::Result<()> {
        reload(self.pid)
    }

    /// Seeders plus leechers in karuta's store, as its metrics say
    /// (recomputed every `prometheus_reporting_interval`).
    pub async fn peers(&self) -> Result<u64, String> {
        let reply = self
            .client
            .get(&self.metrics)
            .await
            .and_then(http_client::Response::require_ok)
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&reply.body);
        let gauge = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .ok_or_else(|| format!("no {name} in {}", self.metrics))
        };
        Ok(
            (gauge("chihaya_storage_seeders_count")? + gauge("chihaya_storage_leechers_count")?)
                as u64,
        )
    }

    /// Reloads karuta's log reports, done and failed.
    pub fn reloads(&self) -> Reloads {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        Reloads {
            done: log.matches("configuration reloaded").count() as u64,
            failed: log.matches("configuration reload failed").count() as u64,
        }
    }
}

/// User plus system CPU time of all the threads of process `pid` (a number,
/// or `self`), in clock ticks; `None` when there is no such process.
pub fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command's closing parenthesis: field 3 (state) onwards;
    // utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second in `/proc/PID/stat` (Linux's fixed `USER_HZ`).
pub const TICKS_PER_SECOND: u64 = 100;

/// What the kernel dropped, system-wide, when a queue was full: the
/// reason for timeouts and for latency tails that are a whole TCP SYN
/// retransmission (1 s, 3 s) long.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelDrops {
    /// UDP datagrams, a socket's receive buffer being full (`Udp:
    /// RcvbufErrors` in `/proc/net/snmp`).
    pub udp_receive_buffer: u64,
    /// TCP connections, a listener's accept queue being full (`TcpExt:
    /// ListenOverflows` in `/proc/net/netstat`).
    pub tcp_accept_queue: u64,
}

impl KernelDrops {
    pub fn read() -> Option<KernelDrops> {
        Some(KernelDrops {
            udp_receive_buffer: counter("/proc/net/snmp", "Udp:", "RcvbufErrors")?,
            tcp_accept_queue: counter("/proc/net/netstat", "TcpExt:", "ListenOverflows")?,
        })
    }

    /// What was dropped since `earlier`.
    pub fn since(self, earlier: KernelDrops) -> KernelDrops {
        KernelDrops {
            udp_receive_buffer: self
                .udp_receive_buffer
                .saturating_sub(earlier.udp_receive_buffer),
            tcp_accept_queue: self
                .tcp_accept_queue
                .saturating_sub(earlier.tcp_accept_queue),
        }
    }
}

/// One counter of a `/proc/net` table: a line of names after `prefix`,
/// then a line of values after it.
fn counter(path: &str, prefix: &str, name: &str) -> Option<u64> {
    let table = std::fs::read_to_string(path).ok()?;
    let mut rows = table
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(str::split_whitespace);
    let (names, mut values) = (rows.next()?, rows.next()?);
    let at = names.into_iter().position(|n| n == name)?;
    values.nth(at)?.parse().ok()
}

/// Sends SIGUSR1 to karuta's process `pid`: it re-reads its configuration.
pub fn reload(pid: u32) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -USR1 {pid} failed: {status}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_counters_are_read_and_subtracted() {
        let now = KernelDrops::read().expect("/proc/net/snmp and /proc/net/netstat");
        let earlier = KernelDrops {
            udp_receive_buffer: now.udp_receive_buffer.saturating_sub(3),
            tcp_accept_queue: now.tcp_accept_queue + 1,
        };
        let d = now.since(earlier);
        assert!(d.udp_receive_buffer <= 3);
        assert_eq!(d.tcp_accept_queue, 0);
    }
}
