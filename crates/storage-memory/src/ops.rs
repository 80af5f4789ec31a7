//! The operations an announce or a write runs on one swarm, under its shard's
//! lock. Each is generic over the address family's entry type, so the store
//! looks up the swarm once and the operation is compiled for each family.

use tracker::SwarmChange;
use tracker::bittorrent::AnnounceResponse;

use crate::entry::{Entry, FamilyKey};
use crate::swarm::{Delta, Role, Swarm};

thread_local! {
    static RNG: std::cell::RefCell<fastrand::Rng> = std::cell::RefCell::new(fastrand::Rng::new());
}

/// An operation on one swarm, generic over the address family's entry type.
pub(crate) trait SwarmOp {
    type Out;
    fn run<E: Entry>(self, swarm: &mut Swarm<E>, key: E::Key) -> (Self::Out, Delta);
}

/// Applies a [`SwarmChange`].
pub(crate) struct Change {
    pub(crate) change: SwarmChange,
    pub(crate) now: u16,
}

/// `false` only when `Remove` found no such peer.
impl SwarmOp for Change {
    type Out = bool;
    fn run<E: Entry>(self, s: &mut Swarm<E>, k: E::Key) -> (bool, Delta) {
        match self.change {
            SwarmChange::Remove => s
                .delete(k, None)
                .map_or((false, Delta::default()), |d| (true, d)),
            SwarmChange::Graduate => (true, s.graduate(k, self.now)),
            SwarmChange::PutSeeder => (true, s.put(k, Role::Seeder, self.now)),
            SwarmChange::PutLeecher => (true, s.put(k, Role::Leecher, self.now)),
        }
    }
}

/// Removes a peer of a given role; `true` if it was there.
pub(crate) struct Delete(pub(crate) Role);

impl SwarmOp for Delete {
    type Out = bool;
    fn run<E: Entry>(self, s: &mut Swarm<E>, k: E::Key) -> (bool, Delta) {
        s.delete(k, Some(self.0))
            .map_or((false, Delta::default()), |d| (true, d))
    }
}

/// Picks peers for an announcer without changing the swarm.
pub(crate) struct Select<'r> {
    pub(crate) role: Role,
    pub(crate) want: usize,
    /// Same-subnet preference: the IPv4 and IPv6 prefix lengths.
    pub(crate) subnet: Option<(u8, u8)>,
    pub(crate) out: &'r mut AnnounceResponse,
}

impl SwarmOp for Select<'_> {
    type Out = ();
    fn run<E: Entry>(self, s: &mut Swarm<E>, k: E::Key) -> ((), Delta) {
        if self.want > 0 {
            let subnet = self
                .subnet
                .map(|(v4, v6)| if E::Key::IPV6 { v6 } else { v4 });
            RNG.with(|rng| {
                s.select(
                    k,
                    self.role,
                    self.want,
                    subnet,
                    &mut rng.borrow_mut(),
                    self.out,
                )
            });
        }
        ((), Delta::default())
    }
}

/// The one-step announce: apply the change, then read counts and peers.
pub(crate) struct Announce<'r> {
    pub(crate) change: Change,
    pub(crate) want: usize,
    pub(crate) subnet: Option<(u8, u8)>,
    pub(crate) resp: &'r mut AnnounceResponse,
}

impl SwarmOp for Announce<'_> {
    type Out = ();
    fn run<E: Entry>(self, s: &mut Swarm<E>, k: E::Key) -> ((), Delta) {
        let role = if self.change.change.leaves_seeder() {
            Role::Seeder
        } else {
            Role::Leecher
        };
        let (_, delta) = self.change.run(s, k);
        self.resp.complete = s.seeders();
        self.resp.incomplete = s.leechers();
        self.resp.snatches = s.snatches;
        Select {
            role,
            want: self.want,
            subnet: self.subnet,
            out: self.resp,
        }
        .run(s, k);
        ((), delta)
    }
}
