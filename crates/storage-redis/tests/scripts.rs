//! The write script's round trip against a real `redis-server`: a Redis
//! that lost its scripts (a restart, a promoted replica, `SCRIPT FLUSH`) is
//! answered by one `EVAL`, which caches the script again; and the reply's
//! members, sent back to back, come out as the peers that were put in, for
//! both address families, from a single-threaded runtime (a UDP worker's
//! own connection) and a multi-threaded one (the shared connection).

use std::net::IpAddr;
use std::process::Command;

use storage_redis::{RedisConfig, RedisStore};
use test_support::redis::RedisServer;
use tracker::PeerStore;
use tracker::bittorrent::{AnnounceRequest, AnnounceResponse, Event, InfoHash, Peer, PeerId};

fn cli(redis: &RedisServer, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port().to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// `calls=` of one command in `INFO commandstats`.
fn calls(redis: &RedisServer, command: &str) -> u64 {
    cli(redis, &["info", "commandstats"])
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

fn announce(ih: InfoHash, id: u8, ip: &str, left: u64) -> AnnounceRequest {
    AnnounceRequest {
        info_hash: ih,
        peer: Peer::new(
            PeerId([id; 20]),
            ip.parse::<IpAddr>().unwrap(),
            6000 + u16::from(id),
        ),
        event: Event::None,
        uploaded: 0,
        downloaded: 0,
        left,
        num_want: 50,
        ..AnnounceRequest::default()
    }
}

/// Seeders (even ids) and leechers (odd ids) of both families announce; each
/// gets every peer of its family before it exactly once (a seeder only the
/// leechers), never itself.
async fn peers_come_back_whole(store: &RedisStore, salt: u8) {
    let ih = InfoHash([salt; 20]);
    for (family, ip) in [("v4", "10.9.8."), ("v6", "2001:db8::")] {
        for id in 1..=9u8 {
            let req = announce(ih, id, &format!("{ip}{id}"), u64::from(id % 2));
            let mut resp = AnnounceResponse::default();
            store.announce(&req, &mut resp).await.unwrap();
            let mut seen: Vec<String> = resp
                .ipv4_peers
                .iter()
                .map(|a| a.to_string())
                .chain(resp.ipv6_peers.iter().map(|a| a.to_string()))
                .collect();
            seen.sort();
            let mut want: Vec<String> = (1..id)
                .filter(|other| id % 2 == 1 || other % 2 == 1)
                .map(|other| {
                    let addr: IpAddr = format!("{ip}{other}").parse().unwrap();
                    std::net::SocketAddr::new(addr, 6000 + u16::from(other)).to_string()
                })
                .collect();
            want.sort();
            assert_eq!(seen, want, "{family}, peer {id}");
            assert_eq!(
                resp.complete + resp.incomplete,
                u32::from(id),
                "{family}, peer {id}"
            );
        }
    }
}

#[test]
fn a_redis_without_the_script_is_answered_by_one_eval_and_members_come_back_whole() {
    let redis = RedisServer::start("redis-scripts");
    let config = || RedisConfig {
        redis_broker: redis.url(),
        ..RedisConfig::default()
    };
    for (salt, runtime) in [
        (
            1u8,
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        ),
        (
            2,
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        ),
    ] {
        runtime.block_on(async {
            let store = RedisStore::new(config()).unwrap();
            peers_come_back_whole(&store, salt).await;
            // The scripts go (as at a restart or a failover); the next call
            // still succeeds, through one EVAL, and then EVALSHA works again.
            cli(&redis, &["script", "flush"]);
            let evals = calls(&redis, "eval");
            let shas = calls(&redis, "evalsha");
            let mut resp = AnnounceResponse::default();
            let req = announce(InfoHash([salt; 20]), 1, "10.9.8.1", 0);
            store.announce(&req, &mut resp).await.unwrap();
            assert_eq!(calls(&redis, "eval"), evals + 1, "one EVAL after the flush");
            store.announce(&req, &mut resp).await.unwrap();
            assert_eq!(
                calls(&redis, "eval"),
                evals + 1,
                "the EVAL cached the script"
            );
            // The failed EVALSHA, and the one after the EVAL.
            assert_eq!(calls(&redis, "evalsha"), shas + 2);
            store.stop().await.unwrap();
        });
    }
}
