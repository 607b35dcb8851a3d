//! Awareness taken with care: which connection may speak for which client,
//! and which states are relayed at all. The rules only; the actor holds the
//! states themselves (yrs's `Awareness`) and applies what the rules admit.
//!
//! - A connection speaks for the clients it introduced: the first connection
//!   to send a state for a client id owns it (the reference server's rule).
//!   Entries for clients another connection owns are dropped silently:
//!   y-websocket clients send back every awareness change they receive, so
//!   such echoes are normal, not hostile. Removals of clients nobody owns are
//!   echoes of removals too.
//! - A connection introduces at most `max_clients` clients (a browser tab
//!   has one), so one connection cannot fill every newcomer's first frame.
//! - A client whose connection went (or whose state expired, or which said
//!   goodbye) is *gone*, removed at a clock above every state peers were
//!   sent. It may come back through the connection that owned it; through
//!   one that joined after it left (a reconnect, which resends the clock it
//!   had); or with a clock at or above the removal's (the client itself,
//!   through a connection that was already open). Anything else is an echo
//!   of a state peers were sent before the removal.
//! - A state must be JSON (y-websocket clients `JSON.parse` it and throw),
//!   at most `max_state_bytes` long, with a clock yrs can increment.

use std::collections::HashMap;

use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::ClientID;

use super::PeerId;

/// What to do with one awareness entry from a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// One of the connection's own clients: yrs's clock rules decide.
    Own,
    /// A client seen for the first time; the connection now owns it.
    New,
    /// A gone client back through a connection allowed to bring it back,
    /// which now owns it. Its clock must be lifted above the removal's,
    /// which every peer holds.
    Revive,
    /// Another connection's client, or a removal of a client nobody owns:
    /// an echo, dropped silently.
    Echo,
    /// A new client beyond the connection's limit: dropped.
    TooMany,
}

/// A gone client: who owned it, and how many connections had joined the
/// document when it went.
#[derive(Debug, Clone, Copy)]
struct Gone {
    owner: PeerId,
    joins: u64,
}

/// Ownership of a document's awareness clients.
#[derive(Debug)]
pub(super) struct Presence {
    max_clients: usize,
    /// Which connection speaks for each client that has a state.
    owners: HashMap<ClientID, PeerId>,
    /// How many clients each connected peer has introduced.
    introduced: HashMap<PeerId, usize>,
    gone: HashMap<ClientID, Gone>,
    /// Connections that joined the document so far; each peer keeps the
    /// number it joined with.
    joins: u64,
}

impl Presence {
    /// `max_clients`: clients one connection may introduce; 0 = no limit.
    pub fn new(max_clients: usize) -> Self {
        Self {
            max_clients,
            owners: HashMap::new(),
            introduced: HashMap::new(),
            gone: HashMap::new(),
            joins: 0,
        }
    }

    /// A connection joins; returns its join number.
    pub fn join(&mut self) -> u64 {
        self.joins += 1;
        self.joins
    }

    /// Keeps the entries of `update` that `peer` (which joined as `joined`)
    /// may send, and lifts the clock of each client it brings back above
    /// the removal's. `known`: the clock the document holds for a client
    /// (for a gone one, its removal's). Returns how many entries were
    /// dropped for being past the connection's limit of clients.
    ///
    /// A client whose connection dropped was marked gone at clock + 1. When
    /// it reconnects, y-websocket resends its state with the clock it had,
    /// which every peer would ignore as old until its second renewal (up to
    /// 30 s of invisibility). Its clock is lifted above the removal; the
    /// echo carries the new clock to the client too, which adopts it.
    pub fn admit(
        &mut self,
        peer: PeerId,
        joined: u64,
        update: &mut AwarenessUpdate,
        known: impl Fn(ClientID) -> Option<u32>,
    ) -> usize {
        let mut too_many = 0;
        update.clients.retain(|client, entry| {
            let known = known(*client);
            let fresh = match known {
                Some(clock) => entry.clock >= clock,
                None => true,
            };
            match self.judge(peer, joined, *client, &*entry.json == "null", fresh) {
                Verdict::Own | Verdict::New => true,
                Verdict::Revive => {
                    if let Some(clock) = known {
                        entry.clock = entry.clock.max(clock.saturating_add(1));
                    }
                    true
                }
                Verdict::Echo => false,
                Verdict::TooMany => {
                    too_many += 1;
                    false
                }
            }
        });
        too_many
    }

    /// Decides about one entry from `peer` (which joined as `joined`) for
    /// `client`; `removal`: its state is null; `fresh`: its clock is at
    /// least the one known for the client (for a gone client, its
    /// removal's). New and revived clients are owned by `peer` from now on.
    fn judge(&mut self, peer: PeerId, joined: u64, client: ClientID, removal: bool, fresh: bool) -> Verdict {
        match self.owners.get(&client) {
            Some(owner) if *owner == peer => return Verdict::Own,
            Some(_) => return Verdict::Echo,
            None if removal => return Verdict::Echo,
            None => {}
        }
        let gone = self.gone.get(&client).copied();
        let former_owner = gone.is_some_and(|g| g.owner == peer);
        if let Some(g) = gone {
            if !former_owner && joined <= g.joins && !fresh {
                return Verdict::Echo;
            }
        }
        if !former_owner {
            let count = self.introduced.entry(peer).or_default();
            if self.max_clients > 0 && *count >= self.max_clients {
                return Verdict::TooMany;
            }
            *count += 1;
        }
        self.owners.insert(client, peer);
        match self.gone.remove(&client) {
            Some(_) => Verdict::Revive,
            None => Verdict::New,
        }
    }

    /// The client's state was removed (goodbye, expiry): it is gone.
    pub fn gone(&mut self, client: ClientID) {
        if let Some(owner) = self.owners.remove(&client) {
            self.gone.insert(
                client,
                Gone {
                    owner,
                    joins: self.joins,
                },
            );
        }
    }

    /// The connection left: the clients it owned, now gone, whose states
    /// the caller removes.
    pub fn leave(&mut self, peer: PeerId) -> Vec<ClientID> {
        self.introduced.remove(&peer);
        let mine: Vec<ClientID> = self
            .owners
            .iter()
            .filter(|(_, owner)| **owner == peer)
            .map(|(client, _)| *client)
            .collect();
        for client in &mine {
            self.gone(*client);
        }
        mine
    }
}

/// The clients whose state was not renewed within `timeout` at `now`, as
/// the reference server expires them (yrs leaves this to its user).
/// `states`: each client, whether it has a state (not removed), and when it
/// was last updated; times in milliseconds of one clock.
pub(super) fn stale(states: impl IntoIterator<Item = (ClientID, bool, u64)>, now: u64, timeout: u64) -> Vec<ClientID> {
    states
        .into_iter()
        .filter(|(_, present, updated)| *present && now.saturating_sub(*updated) >= timeout)
        .map(|(client, _, _)| client)
        .collect()
}

/// What is wrong with an awareness state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadState {
    #[error("awareness state of {len} bytes is larger than {limit} (--max-awareness-state)")]
    TooLarge { len: usize, limit: usize },
    #[error("awareness state is not valid JSON: {0}")]
    NotJson(String),
    #[error("awareness clock {0} is too high")]
    Clock(u32),
}

/// Highest awareness clock accepted: clients count one per change, and yrs
/// adds one when it removes a state (it would overflow at `u32::MAX`).
const MAX_AWARENESS_CLOCK: u32 = u32::MAX / 2;

/// Checks one awareness entry before anyone sees it. `max_bytes`: 0 = no
/// size limit.
pub fn check_state(entry: &AwarenessUpdateEntry, max_bytes: usize) -> Result<(), BadState> {
    if entry.clock > MAX_AWARENESS_CLOCK {
        return Err(BadState::Clock(entry.clock));
    }
    let len = entry.json.len();
    if max_bytes > 0 && len > max_bytes {
        return Err(BadState::TooLarge { len, limit: max_bytes });
    }
    // Validated without building the value.
    serde_json::from_str::<serde::de::IgnoredAny>(&entry.json)
        .map(|_| ())
        .map_err(|e| BadState::NotJson(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: PeerId = PeerId(1);
    const B: PeerId = PeerId(2);
    const C: PeerId = PeerId(3);

    fn id(n: u64) -> ClientID {
        ClientID::new(n)
    }

    #[test]
    fn a_connection_speaks_only_for_the_clients_it_introduced() {
        let mut p = Presence::new(4);
        let (ja, jb) = (p.join(), p.join());
        assert_eq!(p.judge(A, ja, id(10), false, true), Verdict::New);
        assert_eq!(p.judge(A, ja, id(10), false, true), Verdict::Own);
        assert_eq!(p.judge(A, ja, id(10), true, true), Verdict::Own);
        // B echoes A's client, or tries to overwrite or remove it
        assert_eq!(p.judge(B, jb, id(10), false, true), Verdict::Echo);
        assert_eq!(p.judge(B, jb, id(10), true, true), Verdict::Echo);
        // a removal of a client nobody owns is an echo too
        assert_eq!(p.judge(B, jb, id(99), true, true), Verdict::Echo);
    }

    #[test]
    fn a_connection_introduces_a_few_clients_at_most() {
        let mut p = Presence::new(2);
        let j = p.join();
        assert_eq!(p.judge(A, j, id(1), false, true), Verdict::New);
        assert_eq!(p.judge(A, j, id(2), false, false), Verdict::New);
        assert_eq!(p.judge(A, j, id(3), false, true), Verdict::TooMany);
        // saying goodbye does not make room for another one
        p.gone(id(2));
        assert_eq!(p.judge(A, j, id(3), false, true), Verdict::TooMany);
        // but its own client may come back
        assert_eq!(p.judge(A, j, id(2), false, false), Verdict::Revive);
        let unlimited = &mut Presence::new(0);
        let j = unlimited.join();
        assert!((0..100).all(|n| unlimited.judge(A, j, id(n), false, true) == Verdict::New));
    }

    #[test]
    fn a_gone_client_comes_back_through_a_new_connection_not_an_old_echo() {
        let mut p = Presence::new(4);
        let (ja, jb) = (p.join(), p.join());
        p.judge(A, ja, id(7), false, true);
        assert_eq!(p.leave(A), vec![id(7)]);
        // B was there when 7 left: its copy of 7's old state is an echo
        assert_eq!(p.judge(B, jb, id(7), false, false), Verdict::Echo);
        // 7 reconnects through C, with the clock it had
        let jc = p.join();
        assert_eq!(p.judge(C, jc, id(7), false, false), Verdict::Revive);
        assert_eq!(p.judge(C, jc, id(7), false, false), Verdict::Own);
        assert_eq!(p.judge(B, jb, id(7), false, true), Verdict::Echo);
        assert_eq!(p.leave(B), Vec::<ClientID>::new());
    }

    #[test]
    fn an_expired_client_comes_back_through_its_own_connection() {
        let mut p = Presence::new(1);
        let (ja, jb) = (p.join(), p.join());
        p.judge(A, ja, id(5), false, true);
        p.gone(id(5));
        assert_eq!(p.judge(B, jb, id(5), false, false), Verdict::Echo);
        assert_eq!(p.judge(A, ja, id(5), false, false), Verdict::Revive);
    }

    #[test]
    fn a_gone_client_with_a_newer_clock_is_back_through_any_connection() {
        // 9 reconnected through B while its old connection A still looked
        // open; its renewals were A's echoes until A's state expired.
        let mut p = Presence::new(4);
        let (ja, jb) = (p.join(), p.join());
        p.judge(A, ja, id(9), false, true);
        assert_eq!(p.judge(B, jb, id(9), false, true), Verdict::Echo);
        p.gone(id(9));
        assert_eq!(p.judge(B, jb, id(9), false, false), Verdict::Echo);
        assert_eq!(p.judge(B, jb, id(9), false, true), Verdict::Revive);
    }

    fn update(entries: &[(u64, u32, &str)]) -> AwarenessUpdate {
        AwarenessUpdate {
            clients: entries
                .iter()
                .map(|(c, clock, json)| (id(*c), entry(*clock, json)))
                .collect(),
        }
    }

    #[test]
    fn admitting_keeps_what_a_connection_may_say_and_lifts_revived_clocks() {
        let mut p = Presence::new(2);
        let (ja, jb) = (p.join(), p.join());
        let mut first = update(&[(1, 5, "{}"), (2, 1, "{}")]);
        assert_eq!(p.admit(A, ja, &mut first, |_| None), 0);
        assert_eq!(first.clients.len(), 2);
        // (a separate update: which of three clients in one update is the
        // one too many depends on the map's order)
        let mut third = update(&[(3, 1, "{}")]);
        assert_eq!(
            p.admit(A, ja, &mut third, |_| None),
            1,
            "a third client is one too many"
        );
        assert!(third.clients.is_empty());
        // B echoes A's client 1; its own new client 4 is kept
        let mut echo = update(&[(1, 6, "{}"), (4, 1, "{}")]);
        assert_eq!(p.admit(B, jb, &mut echo, |_| None), 0);
        assert_eq!(echo.clients.keys().copied().collect::<Vec<_>>(), vec![id(4)]);
        // A leaves; client 1 was removed at clock 6 and comes back through C
        // with the clock it had: lifted above the removal
        p.leave(A);
        let jc = p.join();
        let mut back = update(&[(1, 5, r#"{"name":"Ada"}"#)]);
        assert_eq!(p.admit(C, jc, &mut back, |c| (c == id(1)).then_some(6)), 0);
        assert_eq!(back.clients[&id(1)].clock, 7);
        // a state with a clock above the removal keeps its clock
        let mut b_own = update(&[(4, 9, "{}")]);
        p.admit(B, jb, &mut b_own, |_| Some(2));
        assert_eq!(b_own.clients[&id(4)].clock, 9);
    }

    #[test]
    fn states_not_renewed_expire() {
        let states = [(id(1), true, 1_000), (id(2), true, 20_000), (id(3), false, 0)];
        assert_eq!(stale(states, 30_999, 30_000), Vec::<ClientID>::new());
        assert_eq!(stale(states, 31_000, 30_000), vec![id(1)]);
        assert_eq!(
            stale(states, 50_000, 30_000),
            vec![id(1), id(2)],
            "a removed state is not expired again"
        );
        assert_eq!(
            stale(states, 0, 30_000),
            Vec::<ClientID>::new(),
            "a clock behind a state"
        );
    }

    fn entry(clock: u32, json: &str) -> AwarenessUpdateEntry {
        AwarenessUpdateEntry {
            clock,
            json: json.into(),
        }
    }

    #[test]
    fn states_must_be_small_json_with_a_sane_clock() {
        assert_eq!(check_state(&entry(1, r#"{"user":{"name":"Ada"}}"#), 64), Ok(()));
        assert_eq!(check_state(&entry(1, "null"), 64), Ok(()));
        assert!(matches!(
            check_state(&entry(1, "{not json"), 64),
            Err(BadState::NotJson(_))
        ));
        assert!(matches!(
            check_state(&entry(1, r#"{"a":1} x"#), 64),
            Err(BadState::NotJson(_))
        ));
        assert_eq!(
            check_state(&entry(1, &format!("\"{}\"", "x".repeat(100))), 64),
            Err(BadState::TooLarge { len: 102, limit: 64 })
        );
        assert_eq!(check_state(&entry(1, &format!("\"{}\"", "x".repeat(100))), 0), Ok(()));
        assert_eq!(
            check_state(&entry(u32::MAX, "null"), 64),
            Err(BadState::Clock(u32::MAX))
        );
    }
}
