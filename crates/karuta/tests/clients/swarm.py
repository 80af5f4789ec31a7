#!/usr/bin/python3
"""Drives real BitTorrent clients against a UDP or HTTP tracker, all on 127.0.0.1.

Run by crates/karuta/tests/real_clients_udp.rs and real_clients_http.rs with
Debian's /usr/bin/python3 (the only interpreter that sees python3-libtorrent;
scripts/test installs it and aria2). --tracker is the announce URL put in the
torrent: udp://127.0.0.1:PORT/announce, http://127.0.0.1:PORT/announce or
http://127.0.0.1:PORT/PASSKEY/announce.

  --mode swarm       a libtorrent seeder, two libtorrent leechers, then an
                     aria2c leecher; every payload checked by SHA-256. Prints
                     `ready-for-scrape infohash=HEX`, waits for a line on stdin
                     (the caller scrapes the tracker meanwhile), then stops
                     every client so they announce `stopped`.
  --mode reload      a libtorrent seeder and leecher 1 complete; prints
                     `ready-for-reload infohash=HEX` and waits for a line on
                     stdin (the caller reloads the tracker meanwhile); only
                     then leecher 2 starts, and must get the seeder and
                     leecher 1 from the tracker, which they last announced to
                     before the reload, and complete. Then as in swarm mode:
                     `ready-for-scrape`, a line on stdin, every client stops.
  --mode private     a private torrent (BEP 27): --tracker is a comma-separated
                     list of three announce URLs, each with its own passkey
                     (the seeder's, leecher 1's, leecher 2's), as a private
                     tracker hands every user a torrent of their own. The
                     seeder and both leechers complete; each prints
                     `totals NAME uploaded=N downloaded=N` (libtorrent's
                     payload counters), then, after a line on stdin, every
                     client stops (its `stopped` announce carries its final
                     counters) and the script prints `clients-stopped`.
  --mode no-tracker  the negative control: a seeder and a leecher whose
                     tracker does not answer; the leecher must find no peer
                     and download nothing within --window seconds.

The tracker is the only source of peers: DHT, LSD, PEX, UPnP and NAT-PMP are
off in libtorrent, and aria2c runs without LPD and PEX, and without DHT for an
HTTP tracker or with an empty DHT routing table for a UDP one (aria2 needs its
DHT socket to speak to UDP trackers).

Every line on stdout starts with the elapsed time. On failure the script
prints `FAIL: reason` and exits 1; every phase has a timeout.
"""

import argparse
import hashlib
import os
import select
import signal
import socket
import subprocess
import sys
import time

import libtorrent as lt

START = time.monotonic()
PAYLOAD_NAME = "payload.bin"


def log(msg):
    print(f"[{time.monotonic() - START:6.2f}s] {msg}", flush=True)


class Failure(Exception):
    pass


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def free_port(kind):
    """A free 127.0.0.1 port for aria2c (it cannot be told to pick one)."""
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_torrent(workdir, tracker, size, piece_size, private=False):
    seed_dir = os.path.join(workdir, "seed")
    os.makedirs(seed_dir)
    payload = os.path.join(seed_dir, PAYLOAD_NAME)
    with open(payload, "wb") as f:
        f.write(os.urandom(size))
    fs = lt.file_storage()
    lt.add_files(fs, payload)
    # v1 only: aria2 does not know v2, and a hybrid torrent would announce
    # two info hashes.
    ct = lt.create_torrent(fs, piece_size, lt.create_torrent.v1_only)
    ct.add_tracker(tracker)
    ct.set_creator("karuta real-client tests")
    if private:
        ct.set_priv(True)
    lt.set_piece_hashes(ct, seed_dir)
    torrent_path = os.path.join(workdir, "payload.torrent")
    with open(torrent_path, "wb") as f:
        f.write(lt.bencode(ct.generate()))
    info = lt.torrent_info(torrent_path)
    info_hash = str(info.info_hashes().v1)
    return seed_dir, payload, torrent_path, info_hash, sha256_file(payload)


def torrent_for(torrent_path, tracker, name):
    """A copy of the torrent announcing to `tracker` (this user's passkey):
    the info dict, and so the info hash, is everyone's."""
    with open(torrent_path, "rb") as f:
        meta = lt.bdecode(f.read())
    meta[b"announce"] = tracker.encode()
    meta.pop(b"announce-list", None)
    path = f"{torrent_path}.{name}"
    with open(path, "wb") as f:
        f.write(lt.bencode(meta))
    return path


ALERT_MASK = (
    lt.alert.category_t.error_notification
    | lt.alert.category_t.status_notification
    | lt.alert.category_t.tracker_notification
    | lt.alert.category_t.connect_notification
)

# Peer sources (peer_info.source) other than the tracker and incoming
# connections: if any shows up, the tracker was not the only peer source.
FOREIGN_SOURCES = {
    lt.peer_info.dht: "dht",
    lt.peer_info.pex: "pex",
    lt.peer_info.lsd: "lsd",
    lt.peer_info.resume_data: "resume_data",
}


EVENT_NAMES = {
    lt.event_t.none: "none",
    lt.event_t.completed: "completed",
    lt.event_t.started: "started",
    lt.event_t.stopped: "stopped",
}


class Client:
    """One libtorrent session with one torrent."""

    def __init__(self, name, torrent_path, save_path, tracker=None):
        self.name = name
        settings = {
            "listen_interfaces": "127.0.0.1:0",
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "dht_bootstrap_nodes": "",
            # Every peer is 127.0.0.1: without this libtorrent keeps one
            # peer per IP and leechers never finish.
            "allow_multiple_connections_per_ip": True,
            # With it on, libtorrent refuses some 127.0.0.1 tracker URLs.
            "ssrf_mitigation": False,
            "alert_mask": ALERT_MASK,
            "stop_tracker_timeout": 2,
        }
        # Flags 0: no default plugins, so no ut_pex; add back the harmless ones.
        self.ses = lt.session(settings, 0)
        self.ses.add_extension("ut_metadata")
        self.ses.add_extension("smart_ban")
        atp = lt.add_torrent_params()
        if tracker is not None:
            torrent_path = torrent_for(torrent_path, tracker, name)
        atp.ti = lt.torrent_info(torrent_path)
        atp.save_path = save_path
        atp.flags |= (
            lt.torrent_flags.disable_dht
            | lt.torrent_flags.disable_lsd
            | lt.torrent_flags.disable_pex
        )
        self.handle = self.ses.add_torrent(atp)
        self.port = self.ses.listen_port()
        self.tracker_replies = 0
        self.tracker_errors = 0
        # Announces sent, and the peer count of every tracker reply.
        self.announces = 0
        self.reply_peers = []
        self.finished = False
        self.stop_sent = False
        self.replies_before_stop = 0
        self.errors_before_stop = 0
        self.foreign = set()
        self.peers_seen = set()
        log(f"{self.name}: listening on 127.0.0.1:{self.port}")

    def poll(self):
        for a in self.ses.pop_alerts():
            if isinstance(a, lt.tracker_reply_alert):
                self.tracker_replies += 1
                self.reply_peers.append(a.num_peers)
                log(f"{self.name}: tracker reply, {a.num_peers} peers")
            elif isinstance(a, (lt.tracker_error_alert, lt.tracker_warning_alert)):
                self.tracker_errors += 1
                log(f"{self.name}: {a.what()}: {a.message()}")
            elif isinstance(a, lt.tracker_announce_alert):
                self.announces += 1
                log(f"{self.name}: announcing, event {EVENT_NAMES.get(a.event, a.event)}")
                if a.event == lt.event_t.stopped:
                    self.stop_sent = True
                    self.replies_before_stop = self.tracker_replies
            elif isinstance(a, lt.torrent_finished_alert):
                self.finished = True
                log(f"{self.name}: torrent finished")
            elif isinstance(a, lt.peer_connect_alert):
                # Outgoing and incoming alike in libtorrent 2.0. Kept as a
                # peer seen too: a small download can start and finish (and
                # its connections to seeders close) between two polls of
                # get_peer_info below, most often on a loaded machine.
                log(f"{self.name}: peer connection with {a.endpoint[0]}:{a.endpoint[1]}")
                self.peers_seen.add((a.endpoint[0], a.endpoint[1]))
            elif isinstance(a, lt.incoming_connection_alert):
                log(f"{self.name}: incoming connection from {a.endpoint[0]}:{a.endpoint[1]}")
            elif a.category() & lt.alert.category_t.error_notification:
                log(f"{self.name}: error alert {a.what()}: {a.message()}")
        for p in self.handle.get_peer_info():
            self.peers_seen.add(p.ip)
            for bit, what in FOREIGN_SOURCES.items():
                if p.source & bit:
                    self.foreign.add(f"{p.ip[0]}:{p.ip[1]} via {what}")

    def status(self):
        return self.handle.status()

    def pause(self):
        """Pauses the torrent for good, which announces `stopped`."""
        self.errors_before_stop = self.tracker_errors
        self.handle.unset_flags(lt.torrent_flags.auto_managed)
        self.handle.pause()

    def stop_answered(self):
        if self.tracker_errors != self.errors_before_stop:
            raise Failure(f"{self.name}: the tracker failed its stopped announce")
        return self.stop_sent and self.tracker_replies != self.replies_before_stop

    def close(self):
        # libtorrent drops a `stopped` announce still in flight when its
        # session ends: pause and wait for the reply (stop_all) first.
        del self.handle
        del self.ses


def stop_all(clients, timeout):
    for c in clients:
        c.pause()
    wait_until(
        "every client's stopped announce answered",
        timeout,
        clients,
        lambda: all(c.stop_answered() for c in clients),
    )
    for c in clients:
        c.close()
        log(f"{c.name}: stopped")


def wait_until(what, timeout, clients, done):
    deadline = time.monotonic() + timeout
    while True:
        for c in clients:
            c.poll()
        if done():
            return
        if time.monotonic() > deadline:
            raise Failure(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def check_sources(clients):
    for c in clients:
        if c.foreign:
            raise Failure(f"{c.name} got peers from outside the tracker: {sorted(c.foreign)}")


def is_udp(tracker):
    return tracker.startswith("udp://")


def run_aria2(workdir, torrent_path, tracker, timeout):
    out_dir = os.path.join(workdir, "aria2")
    os.makedirs(out_dir)
    log_path = os.path.join(workdir, "aria2.log")
    bt_port = free_port(socket.SOCK_STREAM)
    cmd = [
        "aria2c",
        "--no-conf=true",
        f"--dir={out_dir}",
        "--seed-time=0",
        "--enable-dht6=false",
    ]
    if is_udp(tracker):
        # aria2 speaks to UDP trackers only through its DHT socket: DHT on,
        # with an empty routing table and no entry point, so it finds no
        # peers there.
        dht_port = free_port(socket.SOCK_DGRAM)
        cmd += [
            "--enable-dht=true",
            f"--dht-listen-port={dht_port}",
            f"--dht-file-path={os.path.join(workdir, 'aria2-dht.dat')}",
        ]
        ports = f"bt port {bt_port}, dht port {dht_port}"
    else:
        cmd += ["--enable-dht=false"]
        ports = f"bt port {bt_port}, no dht"
    cmd += [
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        f"--listen-port={bt_port}",
        "--interface=127.0.0.1",
        "--disable-ipv6=true",
        "--file-allocation=none",
        "--summary-interval=0",
        "--console-log-level=warn",
        f"--log={log_path}",
        "--log-level=debug",
        # Ends aria2 if this script dies before it.
        f"--stop-with-process={os.getpid()}",
        f"--stop={timeout + 5}",
        torrent_path,
    ]
    log(f"aria2c: starting, {ports}")
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        dump_aria2(out, log_path)
        raise Failure(f"aria2c did not finish within {timeout} s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        dump_aria2(out, log_path)
        raise Failure(f"aria2c exited with {proc.returncode}")
    log("aria2c: exited 0")
    return os.path.join(out_dir, PAYLOAD_NAME), log_path


def dump_aria2(out, log_path):
    for line in (out or "").splitlines():
        log(f"aria2c> {line}")
    try:
        with open(log_path) as f:
            lines = f.read().splitlines()
    except OSError:
        return
    for line in lines[-80:]:
        log(f"aria2.log> {line}")


def check_aria2_tracker(log_path, tracker, lt_clients):
    """aria2c got the libtorrent clients from the tracker, as its log shows."""
    with open(log_path, errors="replace") as f:
        lines = f.read().splitlines()
    if is_udp(tracker):
        tracker_lines = [line for line in lines if "UDPT" in line or "racker" in line]
        for line in tracker_lines[-12:]:
            log(f"aria2.log> {line}")
        if not any(
            "UDPT received ANNOUNCE reply" in line and "num_peers=0" not in line
            for line in tracker_lines
        ):
            raise Failure("aria2c's log shows no UDP announce reply with peers")
        return
    # aria2 logs each HTTP request line after a `Requesting:` line, and at
    # debug level each peer it takes from a tracker reply (it has no other
    # peer source here) as `Adding peer IP:PORT`, or, when it knew the peer
    # already, `Adding IP:PORT is rejected because it has been already added`.
    requests = [line for line in lines if line.startswith("GET ")]
    for line in requests:
        log(f"aria2c> {line}")
    if not requests:
        raise Failure("aria2c's log shows no HTTP tracker request")
    events = []
    for line in requests:
        query = line.split(" ")[1].split("?", 1)[-1]
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        events.append(params.get("event", ""))
    log(f"aria2c: announce events {events}")
    if events[0] != "started" or events[-1] != "stopped":
        raise Failure(f"aria2c announced events {events}: want started first, stopped last")
    if "completed" in events:
        # The caller counts snatches on the assumption that aria2c never
        # sends it with --seed-time=0.
        raise Failure(f"aria2c announced events {events}, with completed")
    processed = sum("Now processing tracker response." in line for line in lines)
    added = set()
    for line in lines:
        if "DefaultPeerStorage" not in line:
            continue
        rest = line.split("] ", 2)[-1]
        if rest.startswith("Adding peer "):
            added.add(rest.split()[2])
        elif rest.startswith("Adding ") and "already added" in rest:
            added.add(rest.split()[1])
    log(f"aria2c: processed {processed} tracker replies; peers from them {sorted(added)}")
    want = {f"127.0.0.1:{c.port}" for c in lt_clients}
    if processed == 0 or added != want:
        raise Failure(f"aria2c got peers {sorted(added)} from the tracker, want {sorted(want)}")


def wait_for_go(timeout):
    log("waiting for the caller's go (one line on stdin)")
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    if not ready:
        raise Failure(f"no go on stdin within {timeout} s")
    sys.stdin.readline()


def start_seeder(args):
    seed_dir, _, torrent_path, info_hash, digest = make_torrent(
        args.workdir, args.tracker, args.size, args.piece_size
    )
    log(f"torrent: {args.size} bytes in pieces of {args.piece_size}, sha256 {digest}")
    print(f"infohash {info_hash}", flush=True)
    seeder = Client("seeder", torrent_path, seed_dir)
    wait_until(
        "seeder checked its files and got a tracker reply",
        10,
        [seeder],
        lambda: seeder.status().is_seeding and seeder.tracker_replies > 0,
    )
    return seeder, torrent_path, info_hash, digest


def start_leecher(args, name, torrent_path):
    d = os.path.join(args.workdir, name)
    os.makedirs(d)
    return Client(name, torrent_path, d)


def check_leechers(args, leechers, digest):
    for c in leechers:
        got = sha256_file(os.path.join(args.workdir, c.name, PAYLOAD_NAME))
        if got != digest:
            raise Failure(f"{c.name}: payload sha256 {got}, want {digest}")
        s = c.status()
        log(
            f"{c.name}: sha256 matches; downloaded {s.total_payload_download} bytes, "
            f"peers seen {sorted(f'{ip}:{port}' for ip, port in c.peers_seen)}"
        )
        if len(c.peers_seen) == 0:
            raise Failure(f"{c.name} finished without a peer")


def report(clients):
    for c in clients:
        c.poll()
    check_sources(clients)
    for c in clients:
        s = c.status()
        log(
            f"{c.name}: uploaded {s.total_payload_upload}, downloaded {s.total_payload_download}, "
            f"announces {c.announces}, tracker replies {c.tracker_replies} "
            f"(peers {c.reply_peers}), tracker errors {c.tracker_errors}"
        )


def finish(clients, info_hash):
    """Lets the caller scrape, then stops every client."""
    print(f"ready-for-scrape infohash={info_hash}", flush=True)
    wait_for_go(30)
    stop_all(clients, 10)
    print("clients-stopped", flush=True)


def swarm(args):
    seeder, torrent_path, info_hash, digest = start_seeder(args)
    leechers = [start_leecher(args, f"leecher{i}", torrent_path) for i in (1, 2)]
    everyone = [seeder] + leechers
    wait_until(
        "both libtorrent leechers completed",
        15,
        everyone,
        lambda: all(c.finished and c.status().is_seeding for c in leechers),
    )
    check_sources(everyone)
    check_leechers(args, leechers, digest)
    log(f"seeder: uploaded {seeder.status().total_payload_upload} bytes")

    aria2_file, aria2_log = run_aria2(args.workdir, torrent_path, args.tracker, 20)
    got = sha256_file(aria2_file)
    if got != digest:
        raise Failure(f"aria2c: payload sha256 {got}, want {digest}")
    log("aria2c: sha256 matches")
    check_aria2_tracker(aria2_log, args.tracker, everyone)
    report(everyone)
    finish(everyone, info_hash)


def reload(args):
    seeder, torrent_path, info_hash, digest = start_seeder(args)
    leecher1 = start_leecher(args, "leecher1", torrent_path)
    before = [seeder, leecher1]
    wait_until(
        "leecher1 completed and its completed announce answered",
        15,
        before,
        lambda: leecher1.finished
        and leecher1.status().is_seeding
        and leecher1.tracker_replies >= 2,
    )
    check_sources(before)
    check_leechers(args, [leecher1], digest)
    report(before)
    announced = {c.name: c.announces for c in before}

    print(f"ready-for-reload infohash={info_hash}", flush=True)
    wait_for_go(30)
    log("the caller has reloaded the tracker; starting leecher2")
    leecher2 = start_leecher(args, "leecher2", torrent_path)
    everyone = before + [leecher2]
    wait_until(
        "leecher2 completed",
        15,
        everyone,
        lambda: leecher2.finished and leecher2.status().is_seeding,
    )
    check_sources(everyone)
    check_leechers(args, [leecher2], digest)
    # What leecher2 was told came from announces made before the reload: the
    # seeder and leecher1 have not announced since (the interval is long).
    for c in before:
        if c.announces != announced[c.name]:
            raise Failure(f"{c.name} announced again after the reload; the test proves less")
    if not leecher2.reply_peers or leecher2.reply_peers[0] != 2:
        raise Failure(f"leecher2's tracker replies had {leecher2.reply_peers} peers, want 2 first")
    want = {("127.0.0.1", c.port) for c in before}
    if not want <= leecher2.peers_seen:
        raise Failure(f"leecher2 saw peers {sorted(leecher2.peers_seen)}, want {sorted(want)} among them")
    report(everyone)
    finish(everyone, info_hash)


def private(args):
    urls = args.tracker.split(",")
    if len(urls) != 3:
        raise Failure(f"--tracker: three comma-separated URLs for --mode private, got {len(urls)}")
    seed_dir, _, torrent_path, info_hash, digest = make_torrent(
        args.workdir, urls[0], args.size, args.piece_size, private=True
    )
    if not lt.torrent_info(torrent_path).priv():
        raise Failure("the torrent is not private")
    print(f"infohash {info_hash}", flush=True)
    seeder = Client("seeder", torrent_path, seed_dir, urls[0])
    wait_until(
        "seeder checked its files and got a tracker reply",
        10,
        [seeder],
        lambda: seeder.status().is_seeding and seeder.tracker_replies > 0,
    )
    leechers = []
    for i, url in ((1, urls[1]), (2, urls[2])):
        d = os.path.join(args.workdir, f"leecher{i}")
        os.makedirs(d)
        leechers.append(Client(f"leecher{i}", torrent_path, d, url))
    everyone = [seeder] + leechers
    wait_until(
        "both leechers completed and announced it",
        20,
        everyone,
        lambda: all(c.finished and c.status().is_seeding and c.tracker_replies >= 2 for c in leechers),
    )
    check_sources(everyone)
    check_leechers(args, leechers, digest)
    report(everyone)
    for c in everyone:
        if c.tracker_errors:
            raise Failure(f"{c.name}: the tracker refused an announce")
    print(f"ready-to-stop infohash={info_hash}", flush=True)
    wait_for_go(30)
    for c in everyone:
        c.pause()
    wait_until(
        "every client's stopped announce answered",
        10,
        everyone,
        lambda: all(c.stop_answered() for c in everyone),
    )
    for c in everyone:
        s = c.status()
        print(f"totals {c.name} uploaded={s.total_payload_upload} downloaded={s.total_payload_download}", flush=True)
        c.close()
    print("clients-stopped", flush=True)


def no_tracker(args):
    seed_dir, _, torrent_path, info_hash, _ = make_torrent(
        args.workdir, args.tracker, args.size, args.piece_size
    )
    print(f"infohash {info_hash}", flush=True)
    seeder = Client("seeder", torrent_path, seed_dir)
    wait_until("seeder checked its files", 10, [seeder], lambda: seeder.status().is_seeding)
    d = os.path.join(args.workdir, "leecher")
    os.makedirs(d)
    leecher = Client("leecher", torrent_path, d)
    clients = [seeder, leecher]
    deadline = time.monotonic() + args.window
    while time.monotonic() < deadline:
        for c in clients:
            c.poll()
        s = leecher.status()
        if leecher.finished or s.total_wanted_done > 0 or leecher.peers_seen or seeder.peers_seen:
            raise Failure(
                "without a tracker, peers found each other: "
                f"leecher has {s.total_wanted_done} bytes, finished={leecher.finished}, "
                f"leecher peers {sorted(leecher.peers_seen)}, seeder peers {sorted(seeder.peers_seen)}"
            )
        time.sleep(0.1)
    s = leecher.status()
    log(
        f"leecher: after {args.window} s without a tracker: {s.total_wanted_done} bytes, "
        f"{s.num_peers} peers, tracker replies {leecher.tracker_replies}"
    )
    if leecher.tracker_replies or seeder.tracker_replies:
        raise Failure("a tracker replied, but none should be listening")
    print("no-peers-as-expected", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracker", required=True, help="udp:// or http://127.0.0.1:PORT/.../announce")
    p.add_argument("--workdir", required=True, help="an empty directory")
    p.add_argument("--mode", choices=["swarm", "reload", "private", "no-tracker"], default="swarm")
    p.add_argument("--size", type=int, default=4 << 20, help="payload bytes")
    p.add_argument("--piece-size", type=int, default=32 << 10)
    p.add_argument("--window", type=float, default=10, help="no-tracker: seconds to wait")
    args = p.parse_args()
    # SIGTERM from the caller ends the script through the finally blocks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log(f"libtorrent {lt.__version__}, mode {args.mode}, tracker {args.tracker}")
    try:
        if args.mode == "swarm":
            swarm(args)
        elif args.mode == "reload":
            reload(args)
        elif args.mode == "private":
            private(args)
        else:
            no_tracker(args)
    except Failure as e:
        log(f"FAIL: {e}")
        print(f"FAIL: {e}", flush=True)
        sys.exit(1)
    log("ok")


if __name__ == "__main__":
    main()
