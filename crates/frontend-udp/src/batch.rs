//! Batched datagram I/O: up to [`BATCH`] packets per `recvmmsg(2)` and per
//! `sendmmsg(2)`, into buffers allocated once per worker.
//!
//! This is the only `unsafe` code of the frontend. The message headers point
//! into the batch's own buffers; they are rebuilt right before every system
//! call, so nothing points into memory that may have moved.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Packets per system call.
pub const BATCH: usize = 32;
/// Receive buffer per packet: more than any valid request (a scrape of 74
/// info hashes is 1496 bytes); a longer datagram is answered with an error
/// when its header carries a valid connection id, else dropped.
pub const PACKET_SIZE: usize = 2048;

/// Received packets.
pub struct RecvBatch {
    bufs: Box<[[u8; PACKET_SIZE]; BATCH]>,
    addrs: Box<[libc::sockaddr_storage; BATCH]>,
    iovecs: Box<[libc::iovec; BATCH]>,
    headers: Box<[libc::mmsghdr; BATCH]>,
}

impl RecvBatch {
    pub fn new() -> Self {
        // SAFETY: all-zero is a valid value of these plain C structs.
        unsafe {
            RecvBatch {
                bufs: Box::new([[0; PACKET_SIZE]; BATCH]),
                addrs: Box::new(zeroed()),
                iovecs: Box::new(zeroed()),
                headers: Box::new(zeroed()),
            }
        }
    }

    /// Receives up to [`BATCH`] packets without blocking; returns how many.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..BATCH {
            let storage_len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            point_header(
                &mut self.headers[i],
                &mut self.iovecs[i],
                self.bufs[i].as_mut_ptr(),
                PACKET_SIZE,
                &mut self.addrs[i],
                storage_len,
            );
        }
        // SAFETY: the headers point into buffers owned by `self` that outlive
        // the call, with their true lengths.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Packet `i` of the last batch, its source, and whether the datagram
    /// was longer than the buffer (then the packet is its first
    /// [`PACKET_SIZE`] bytes); `None` if its address is of no known family.
    pub fn packet(&self, i: usize) -> Option<(&[u8], SocketAddr, bool)> {
        let h = &self.headers[i];
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let addr = from_storage(&self.addrs[i])?;
        let len = (h.msg_len as usize).min(PACKET_SIZE);
        Some((&self.bufs[i][..len], addr, truncated))
    }
}

/// Replies waiting to be sent.
pub struct SendBatch {
    bufs: Vec<Vec<u8>>,
    addrs: Box<[libc::sockaddr_storage; BATCH]>,
    addr_lens: [libc::socklen_t; BATCH],
    iovecs: Box<[libc::iovec; BATCH]>,
    headers: Box<[libc::mmsghdr; BATCH]>,
    len: usize,
    /// Replies before this index were sent.
    sent: usize,
}

impl SendBatch {
    pub fn new() -> Self {
        // SAFETY: all-zero is a valid value of these plain C structs.
        unsafe {
            SendBatch {
                bufs: (0..BATCH)
                    .map(|_| Vec::with_capacity(PACKET_SIZE))
                    .collect(),
                addrs: Box::new(zeroed()),
                addr_lens: [0; BATCH],
                iovecs: Box::new(zeroed()),
                headers: Box::new(zeroed()),
                len: 0,
                sent: 0,
            }
        }
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.sent = 0;
    }

    /// The buffer for the next reply, empty. Call [`commit`](Self::commit) to
    /// queue it, or do nothing to discard it.
    pub fn next_buf(&mut self) -> &mut Vec<u8> {
        let buf = &mut self.bufs[self.len];
        buf.clear();
        buf
    }

    /// Queues the buffer [`next_buf`](Self::next_buf) returned, for `to`.
    pub fn commit(&mut self, to: SocketAddr) {
        self.addr_lens[self.len] = to_storage(to, &mut self.addrs[self.len]);
        self.len += 1;
    }

    /// Whether every buffer holds a queued reply (send before adding more).
    pub fn is_full(&self) -> bool {
        self.len == BATCH
    }

    /// Replies not sent yet.
    pub fn pending(&self) -> usize {
        self.len - self.sent
    }

    /// Sends as many pending replies as the socket takes without blocking;
    /// returns how many were sent.
    pub fn send(&mut self, fd: RawFd) -> io::Result<usize> {
        let start = self.sent;
        for i in start..self.len {
            let len = self.bufs[i].len();
            point_header(
                &mut self.headers[i],
                &mut self.iovecs[i],
                self.bufs[i].as_mut_ptr(),
                len,
                &mut self.addrs[i],
                self.addr_lens[i],
            );
        }
        // SAFETY: headers start..len point into buffers owned by `self` that
        // outlive the call, with their true lengths.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                self.headers[start..].as_mut_ptr(),
                (self.len - start) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.sent += n as usize;
        Ok(n as usize)
    }

    /// Gives up on the next pending reply (after a send error that names it).
    pub fn skip_one(&mut self) {
        if self.sent < self.len {
            self.sent += 1;
        }
    }

    /// The destination of the next pending reply.
    pub fn next_destination(&self) -> Option<SocketAddr> {
        (self.sent < self.len)
            .then(|| from_storage(&self.addrs[self.sent]))
            .flatten()
    }
}

/// Points one message header at one buffer and one address (rebuilt before
/// every system call: nothing keeps a pointer between calls).
fn point_header(
    header: &mut libc::mmsghdr,
    iovec: &mut libc::iovec,
    buf: *mut u8,
    len: usize,
    addr: &mut libc::sockaddr_storage,
    addr_len: libc::socklen_t,
) {
    *iovec = libc::iovec {
        iov_base: buf.cast(),
        iov_len: len,
    };
    let h = &mut header.msg_hdr;
    h.msg_name = (addr as *mut libc::sockaddr_storage).cast();
    h.msg_namelen = addr_len;
    h.msg_iov = iovec;
    h.msg_iovlen = 1;
    h.msg_control = std::ptr::null_mut();
    h.msg_controllen = 0;
    h.msg_flags = 0;
    header.msg_len = 0;
}

fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for AF_INET.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for AF_INET6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn to_storage(addr: SocketAddr, s: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let out =
                unsafe { &mut *(s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            out.sin_family = libc::AF_INET as libc::sa_family_t;
            out.sin_port = a.port().to_be();
            out.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            out.sin_zero = [0; 8];
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let out =
                unsafe { &mut *(s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            out.sin6_port = a.port().to_be();
            out.sin6_flowinfo = a.flowinfo();
            out.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            out.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn address_round_trip() {
        for a in ["1.2.3.4:5", "[2001:db8::1]:6881", "[::ffff:10.0.0.1]:80"] {
            let addr: SocketAddr = a.parse().unwrap();
            // SAFETY: all-zero is a valid sockaddr_storage.
            let mut s = unsafe { zeroed() };
            to_storage(addr, &mut s);
            assert_eq!(from_storage(&s), Some(addr));
        }
    }

    #[test]
    fn batches_over_loopback() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..5u8 {
            client
                .send_to(&[i; 3], server.local_addr().unwrap())
                .unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut rb = RecvBatch::new();
        let n = rb.recv(server.as_raw_fd()).unwrap();
        assert_eq!(n, 5);
        let mut sb = SendBatch::new();
        for i in 0..n {
            let (p, from, _) = rb.packet(i).unwrap();
            assert_eq!(from, client.local_addr().unwrap());
            let reply = sb.next_buf();
            reply.extend_from_slice(p);
            reply.push(0xff);
            sb.commit(from);
        }
        assert_eq!(sb.send(server.as_raw_fd()).unwrap(), 5);
        assert_eq!(sb.pending(), 0);
        let mut buf = [0u8; 16];
        for i in 0..5u8 {
            let (len, _) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..len], &[i, i, i, 0xff]);
        }
        // Nothing waiting: a would-block error, not a hang.
        assert_eq!(
            rb.recv(server.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn a_failing_reply_can_be_skipped_and_the_rest_sent() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let to = client.local_addr().unwrap();
        let mut sb = SendBatch::new();
        for (dest, byte) in [(to, 1u8), ("127.0.0.1:0".parse().unwrap(), 2), (to, 3)] {
            sb.next_buf().push(byte);
            sb.commit(dest);
        }
        // The flush loop of a worker: send, and on an error skip the reply it names.
        let mut errors = 0;
        while sb.pending() > 0 {
            match sb.send(server.as_raw_fd()) {
                Ok(_) => {}
                Err(e) => {
                    assert_ne!(e.kind(), io::ErrorKind::WouldBlock);
                    errors += 1;
                    sb.skip_one();
                }
            }
        }
        assert_eq!(errors, 1, "port 0 cannot be sent to");
        let mut buf = [0u8; 4];
        assert_eq!(client.recv(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], 1);
        assert_eq!(client.recv(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], 3);
    }
}
