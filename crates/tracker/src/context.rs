//! Per-request state that travels with a request through the hook chain.

use std::any::{Any, TypeId};

/// Flags and typed facts for one request.
///
/// Frontends keep one per worker and [`clear`](Self::clear) it between
/// requests; an empty context holds no heap memory.
#[derive(Default)]
pub struct RequestContext {
    /// A pre-hook filled the response itself: the built-in response hook does
    /// not read the store.
    pub skip_response: bool,
    /// Do not write this announce to the store (set by a pre-hook).
    pub skip_swarm_interaction: bool,
    /// The store already applied this announce while answering it (the
    /// one-step read-and-write), so the post-phase write is not repeated.
    pub(crate) swarm_written: bool,
    /// Facts hooks attach for later hooks (the user id of a private tracker).
    pub extensions: Extensions,
}

impl RequestContext {
    pub fn new() -> Self {
        Self::default()
    }

    /// Resets for the next request, keeping allocations.
    pub fn clear(&mut self) {
        self.skip_response = false;
        self.skip_swarm_interaction = false;
        self.swarm_written = false;
        self.extensions.clear();
    }

    /// Whether the store has already applied this announce.
    pub fn swarm_written(&self) -> bool {
        self.swarm_written
    }
}

/// A small type map: at most one value per type.
///
/// A linear scan over a `Vec` beats hashing for the handful of entries a
/// request carries, and an empty `Vec` does not allocate.
#[derive(Default)]
pub struct Extensions {
    entries: Vec<(TypeId, Box<dyn Any + Send + Sync>)>,
}

impl Extensions {
    /// Stores `value`, returning the previous value of that type.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) -> Option<T> {
        let id = TypeId::of::<T>();
        let previous = self.remove::<T>();
        self.entries.push((id, Box::new(value)));
        previous
    }

    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        let id = TypeId::of::<T>();
        self.entries
            .iter()
            .find(|(k, _)| *k == id)
            .and_then(|(_, v)| v.downcast_ref())
    }

    pub fn get_mut<T: Any + Send + Sync>(&mut self) -> Option<&mut T> {
        let id = TypeId::of::<T>();
        self.entries
            .iter_mut()
            .find(|(k, _)| *k == id)
            .and_then(|(_, v)| v.downcast_mut())
    }

    pub fn remove<T: Any + Send + Sync>(&mut self) -> Option<T> {
        let id = TypeId::of::<T>();
        let index = self.entries.iter().position(|(k, _)| *k == id)?;
        let (_, value) = self.entries.swap_remove(index);
        value.downcast().ok().map(|b| *b)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct UserId([u8; 16]);

    #[test]
    fn typed_facts() {
        let mut ctx = RequestContext::new();
        assert!(ctx.extensions.get::<UserId>().is_none());
        assert!(ctx.extensions.insert(UserId([1; 16])).is_none());
        assert_eq!(
            ctx.extensions.insert(UserId([2; 16])),
            Some(UserId([1; 16]))
        );
        ctx.extensions.insert(7u32);
        assert_eq!(ctx.extensions.get::<UserId>(), Some(&UserId([2; 16])));
        *ctx.extensions.get_mut::<u32>().unwrap() += 1;
        assert_eq!(ctx.extensions.get::<u32>(), Some(&8));
        ctx.clear();
        assert!(ctx.extensions.is_empty());
    }
}
